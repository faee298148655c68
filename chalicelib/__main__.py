"""`python -m chalicelib ...` and the `agent-mail` console script: the command line (cli.py).

`stdio` alone goes straight to the stdio server, without loading the command line (every
tool's command): a client starts it for every session, and waits for it."""

import sys


def main() -> None:
    if sys.argv[1:] == ["stdio"]:
        from .transports.stdio import main as stdio

        stdio()
        return
    from .transports.cli import cli

    cli()


if __name__ == "__main__":
    main()
