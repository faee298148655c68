"""`python -m chalicelib ...`: the command line (see cli.py)."""

from .transports.cli import cli

cli()
