"""`python -m chalicelib ...`: the command line (see cli.py)."""

from .cli import cli

cli()
