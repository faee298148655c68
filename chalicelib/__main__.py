"""`python -m chalicelib ...` and the `agent-mail` console script: the command line (cli.py).

`stdio` alone (or after --database-url) goes straight to the stdio server, without loading the
command line (every tool's command): a client starts it for every session, and waits for it; and
a setting it refuses is then answered as the session's JSON-RPC error, not as click's usage error."""

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[-1:] == ["stdio"] and (database_url := _database_url(args[:-1])) is not None:
        from .transports.stdio import main as stdio

        stdio(database_url or None)
        return
    from .transports.cli import cli

    cli()


def _database_url(options: list[str]) -> str | None:
    """The URL of `--database-url URL` (or `--database-url=URL`), '' for no option, None for any other."""
    if not options:
        return ""
    if len(options) == 2 and options[0] == "--database-url":
        return options[1]
    if len(options) == 1 and options[0].startswith("--database-url="):
        return options[0].removeprefix("--database-url=")
    return None


if __name__ == "__main__":
    main()
