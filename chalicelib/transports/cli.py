"""The command line: one subcommand per registry tool, plus serve, migrate and tools.

    python -m chalicelib ensure-project --human-key /home/me/repo
    python -m chalicelib send-message --project-key home-me-repo --sender-name BlueLake \\
        --to GreenCastle --to RedStone --subject hi --body-md "..."

Each tool command is generated from the tool's input model: a field `sender_name` becomes
`--sender-name`, a list field a repeatable option, a bool `--flag/--no-flag`, a Literal a
choice, an object (an attachment) one JSON object. `--json '{...}'` supplies any arguments as
one object; options given as well win. The arguments go through `invoke.call` like every other
transport, so the input model validates them. The output is the tool's JSON on stdout; a tool error is its
`{"error": {...}}` JSON on stderr with exit status 1.
"""

import json
import logging
import os
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Literal, get_args, get_origin

import click
from click.core import ParameterSource
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from pydantic.fields import FieldInfo

from .. import __version__
from ..ops import logs
from ..security import auth
from ..store import db
from ..config import RETENTION_BATCH_MAX_ROWS, Settings, get_settings, invalid_setting
from ..errors import ToolError
from ..fields import is_id
from ..registry import Tool, field_type

RESERVED = {"json", "json_input", "compact", "help", "all_pages"}  # names taken by the tool commands' own options


class OperatorCommands(click.Group):
    """The top-level group: a database error in any command (a locked or unreadable file) is one
    line on stderr and exit status 1, not a traceback. The tools' commands are added when first
    needed (a tool's command, --help, a name to correct): importing the tools (~150 ms of CPU)
    is not needed by the other commands, above all `archive work`, which every server and stdio
    session starts."""

    tools_added = False

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands:
            self.add_tool_commands()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_tool_commands()
        return super().list_commands(ctx)

    def add_tool_commands(self) -> None:
        if not self.tools_added:
            from ..tools import all_tools

            for tool in all_tools():
                self.commands.setdefault(command_name(tool), tool_command(tool))  # a service command keeps its name
            self.tools_added = True

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except db.NewerSchema as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.Error as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            raise click.ClickException(db.error_line(exc, settings)) from None


class SettingRefused(click.ClickException):
    """A setting from the environment (or .env) refused: one line, no usage (the command line is fine)."""

    exit_code = 2  # as click's own for a bad option


@click.group(cls=OperatorCommands)
@click.version_option(__version__, prog_name="agent-mail")
@click.option("--database-url", metavar="URL", help="sqlite:///path/to/file.db; overrides DATABASE_URL.")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """Agent Mail: mail, threads and coordination for coding agents."""
    try:
        ctx.obj = Settings(database_url=database_url) if database_url else get_settings()
    except ValidationError as exc:
        variable, problem = invalid_setting(exc)  # its environment variable, or --database-url
        if database_url and variable == "DATABASE_URL":
            raise click.BadParameter(problem, param_hint="--database-url")
        raise SettingRefused(f"Invalid value for {variable}: {problem}") from None
    except SettingsError as exc:  # a list setting that is not valid JSON
        raise SettingRefused(str(exc)) from None
    logs.configure(ctx.obj)  # to stderr: stdout is for the commands' answers


# Tool commands


class FieldOption(click.Option):
    """An option for one input field. A required field may come from --json instead, so
    click cannot insist on it; it is checked once both are merged, and still shown as
    required in --help."""

    def __init__(self, *args, field_required: bool, aliases=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.field_required = field_required
        self.aliases = aliases  # old names of the field, which --json may use too

    def get_help_extra(self, ctx: click.Context):
        extra = super().get_help_extra(ctx)
        if self.field_required:
            extra["required"] = "required"
        return extra


def tool_command(tool: Tool) -> click.Command:
    from .. import invoke  # with the tools (OperatorCommands.add_tool_commands)
    from ..tools import guard

    listed = paged_list(tool)

    @click.pass_context
    def run(ctx: click.Context, json_input: dict, compact: bool, all_pages: bool = False, **values: Any) -> None:
        arguments = overridden(ctx, json_input, given(ctx, values))
        check_required(ctx, arguments)
        if tool.read_only:  # a mistyped DATABASE_URL would make an empty database and answer from it
            existing_database(ctx.obj)
        try:
            with guard.without_http():  # a pre-commit guard installed here reads the database: no server to ask
                if all_pages:
                    output = every_page(tool, listed, arguments, ctx.obj)
                else:
                    output = invoke.call(tool, arguments, ctx.obj, auth.OPERATOR)  # the operator: every project, admin
        except ToolError as error:
            click.echo(dumps(error.to_dict(), compact), err=True)
            ctx.exit(1)
        click.echo(dumps(output.model_dump(mode="json"), compact))

    every_page_option = [
        click.Option(["--all", "all_pages"], is_flag=True, help=f"Follow next_cursor to the last page: all the {listed} at once.")
    ] if listed else []
    return click.Command(
        command_name(tool),
        callback=run,
        params=[
            *(field_option(name, field) for name, field in tool.input.model_fields.items()),
            click.Option(
                ["--json", "json_input"],
                metavar="JSON",
                callback=json_object,
                help="The arguments as one JSON object ('-' reads it from stdin); options given as well override it.",
            ),
            click.Option(["--compact"], is_flag=True, help="Print the result on one line."),
            *every_page_option,
        ],
        help=tool.description,
        short_help=tool.summary,
    )


def paged_list(tool: Tool) -> str | None:
    """The list field of a tool that answers a page at a time (cursor in, next_cursor out)."""
    if "cursor" not in tool.input.model_fields or "next_cursor" not in tool.output.model_fields:
        return None
    lists = [name for name, field in tool.output.model_fields.items() if get_origin(field.annotation) is list]
    return lists[0] if len(lists) == 1 else None


def every_page(tool: Tool, listed: str, arguments: dict[str, Any], settings: Settings):
    """The last page's output holding the items of every page (from `cursor`, if given)."""
    from .. import invoke  # with the tools (OperatorCommands.add_tool_commands)

    items, cursor = [], arguments.get("cursor")
    while True:
        output = invoke.call(tool, {**arguments, "cursor": cursor}, settings, auth.OPERATOR)
        items += getattr(output, listed)
        cursor = output.next_cursor
        if cursor is None:
            return output.model_copy(update={listed: items})


def command_name(tool: Tool) -> str:
    return tool.name.replace("_", "-")


def field_option(name: str, field: FieldInfo) -> click.Option:
    if name in RESERVED:
        raise ValueError(f"input field {name!r} clashes with an option of every tool command")
    kind = field_type(field.annotation)
    multiple = get_origin(kind) is list
    item = FieldInfo.from_annotation(get_args(kind)[0]) if multiple else field  # a list of ids: each as text too
    if multiple:
        kind = field_type(get_args(kind)[0])
    flag = "--" + name.replace("_", "-")
    shape = JsonObject(kind).shape(multiple) if is_object(kind) else "Repeat for several." if multiple else None
    # A field's old names (fields.acting_agent) stay accepted as options too: --sender-name.
    aliases = getattr(field.validation_alias, "choices", [])[1:]
    return FieldOption(
        [f"{flag}/--no-{flag[2:]}" if kind is bool else flag, *("--" + alias.replace("_", "-") for alias in aliases), name],
        type=option_type(field, kind, is_id(item)),
        metavar="JSON" if is_object(kind) else None,
        multiple=multiple,
        # Shown in --help only: values left at their default are not passed (see `given`),
        # so the input model applies its own.
        default=None if field.is_required() else field.get_default(call_default_factory=True),
        show_default=True,
        help=" ".join(filter(None, [field.description, shape])),
        field_required=field.is_required(),
        aliases=aliases,
    )


def option_type(field: FieldInfo, kind: Any, ids: bool) -> click.ParamType:
    if field.is_required() and type(None) in get_args(field.annotation):
        return OrNull(click_type(kind))
    # An id as text: click's INT refused one past 2**53-ish as "too large for a JSON number: send it as a string",
    # and one written 493.0, which the schema takes.
    return click.STRING if ids else click_type(kind)


class OrNull(click.ParamType):
    """A required field that takes null (set_retention_policy's mode: the server's default): the word
    `null` (an option could give it no other way than --json)."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner, self.name = inner, f"{inner.name} or null"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        shown = self.inner.get_metavar(param, ctx)
        return f"{shown[:-1]}|null]" if shown and shown.endswith("]") else shown

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return None if value == "null" else self.inner.convert(value, param, ctx)


def is_object(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def click_type(kind: Any) -> click.ParamType:
    if get_origin(kind) is Literal:
        return click.Choice([str(value) for value in get_args(kind)])
    if is_object(kind):
        return JsonObject(kind)
    # Anything else is passed as the string typed; the input model parses or refuses it.
    return {bool: click.BOOL, int: click.INT, float: click.FLOAT}.get(kind, click.STRING)


class JsonObject(click.ParamType):
    """An object field (or a list's item: an attachment) given as one JSON object. The input
    model validates its fields; a bare value gets a hint naming the field it would fit."""

    name = "json object"

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    @property
    def fields(self) -> str:
        return ", ".join(self.model.model_fields)

    def shape(self, multiple: bool) -> str:
        """What --help says the option takes."""
        return f"{'Repeat for several: one JSON object each' if multiple else 'One JSON object'}, with the fields {self.fields}."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict:
        if isinstance(value, dict):
            return value
        try:
            data = parse_json(value)
        except click.BadParameter:
            data = value
        if isinstance(data, dict):
            return data
        flag = param.opts[0] if param else "the option"
        each = "each " if getattr(param, "multiple", False) else ""
        fitting = self.fitting_field(data)
        example = f", e.g. {flag} '{json.dumps({fitting: data})}'" if fitting else ""
        self.fail(f"{value!r} is not a JSON object: give {each}{flag} as one JSON object{example} (fields: {self.fields}).",
                  param, ctx)

    def fitting_field(self, value: Any) -> str | None:
        """The first field that, holding this value alone, makes a valid object."""
        for name in self.model.model_fields:
            try:
                self.model.model_validate({name: value})
                return name
            except ValidationError:
                continue
        return None


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
    if value is None:
        return {}
    data = parse_json(sys.stdin.read() if value == "-" else value)
    if not isinstance(data, dict):
        raise click.BadParameter("""must be a JSON object, e.g. '{"project_key": "my-repo"}'""")
    return data


def parse_json(text: str) -> Any:
    """An option's JSON; click's usage error (exit status 2) for text that is not JSON, nested
    too deeply included (json's RecursionError was a traceback)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise click.BadParameter("not valid JSON: nested too deeply") from None


def given(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, as the input model expects them."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in values.items()
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


def overridden(ctx: click.Context, json_input: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """--json's arguments with the options given on top. An option replaces its field under any
    of its names: --json may use an old name (sender_name for agent_name), and the input model
    refuses a field given twice."""
    aliases = {param.name: param.aliases for param in ctx.command.params if isinstance(param, FieldOption)}
    replaced = {alias for name in options for alias in aliases.get(name, ())}
    return {**{name: value for name, value in json_input.items() if name not in replaced}, **options}


def check_required(ctx: click.Context, arguments: dict[str, Any]) -> None:
    for param in ctx.command.params:
        if isinstance(param, FieldOption) and param.field_required and not {param.name, *param.aliases} & arguments.keys():
            raise click.MissingParameter(ctx=ctx, param=param)


def dumps(data: Any, compact: bool) -> str:
    if compact:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(data, ensure_ascii=False, indent=2)


# Service commands


@cli.command(short_help="Run the local server (web UI, REST, MCP, /docs).")
@click.option("--host", help="Defaults to HOST.")
@click.option("--port", type=click.IntRange(0, 65535), help="Defaults to PORT; 0 picks a free port.")
@click.option("--reload", is_flag=True, help="Restart when the code changes (development).")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, reload: bool) -> None:
    """Run the local server (web UI, REST, MCP, /docs) with uvicorn."""
    import errno
    import socket

    import uvicorn

    host, port = host or settings.host, settings.port if port is None else port
    try:  # the app refuses these at start-up: say so in one line, before any banner
        auth.check_configuration(settings, host)
    except auth.InsecureConfiguration as exc:
        raise click.ClickException(str(exc)) from None
    if refused := foreign_archive(settings):  # its worker would die on it, again and again
        raise click.ClickException(refused)
    try:  # a clear word now rather than uvicorn's traceback once the app has loaded
        with socket.create_server((host, port)) as probe:
            port = probe.getsockname()[1]  # --port 0: the free port the system picked, for the banner
    except OSError as exc:
        advice = (f" Is another server running there? Choose another port: PORT={port + 1} ./scripts/serve (or --port"
                  f" {port + 1}).") if exc.errno == errno.EADDRINUSE else " Check the host: an address of this machine (HOST, --host)."
        raise click.ClickException(f"Cannot listen on {host}:{port} ({exc.strerror or exc}).{advice}") from None
    if not settings.turso_sync_url:  # (a replica is opened once per process: by the app, in a child with --reload)
        db.migrate(settings)  # a DATABASE_URL it cannot open is one line (OperatorCommands), not uvicorn's traceback
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    click.echo(
        f"Agent Mail {__version__} on {base}\n"
        f"  web UI  {base}/\n  MCP     {base}/mcp\n  REST    {base}/api/{{tool}}\n  docs    {base}/docs\n"
        f"  database {settings.database_path}", err=True,
    )
    # uvicorn imports the app itself (in a child process with --reload), and the app reads
    # its settings from the environment: hand --database-url over that way.
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ["HOST"] = host  # the app refuses AUTH_MODE=none beyond loopback
    os.environ["PORT"] = str(port)  # install_precommit_guard writes the server's URL into the hook
    get_settings.cache_clear()
    uvicorn.run(
        "chalicelib.transports.asgi:app",
        host=host,
        port=port,
        reload=reload,
        http="chalicelib.transports.http_protocol:HttpProtocol",  # one write per connection per loop turn
        proxy_headers=False,  # X-Forwarded-For is the client's to write (the protocol drops it too)
        access_log=False,
        log_level=settings.log_level.lower(),
    )


def foreign_archive(settings: Settings) -> str | None:
    """Why the archive worker could not write ARCHIVE_DIR (a code repository, someone's files), or None."""
    if not settings.archive_enabled:
        return None
    from ..archive.gitrepo import GitArchive

    return GitArchive.refusal(settings)


@cli.command(short_help="Serve MCP over stdin/stdout (for clients that start their server).")
@click.pass_obj
def stdio(settings: Settings) -> None:
    """Serve MCP over stdin and stdout: what an MCP client runs as its server's command
    (`agent-mail stdio`). The same tools as /mcp, on the same database (the HTTP server may
    run at once); logs go to stderr."""
    from .stdio import main

    main(settings.database_url)


@cli.command(short_help="Apply pending migrations.")
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Apply pending migrations and list every applied one."""
    db.migrate(settings)
    with db.connection(settings) as conn:
        for version, applied_ts in conn.execute("SELECT version, applied_ts FROM schema_migrations ORDER BY version"):
            click.echo(f"{version}  {applied_ts}")


@cli.command(name="tools", short_help="List the tools.")
@click.option("--json", "as_json", is_flag=True, help="Print the tools as JSON, with their input schemas.")
def list_tools(as_json: bool) -> None:
    """List the tools: command, read-only or write, summary."""
    from ..tools import all_tools

    tools = all_tools()
    if as_json:
        click.echo(dumps([describe(tool) for tool in tools], compact=False))
        return
    width = max(len(command_name(tool)) for tool in tools)
    for tool in tools:
        access = "read" if tool.read_only else "write"
        click.echo(f"{command_name(tool):<{width}}  {access:<5}  {tool.summary}")


def describe(tool: Tool) -> dict:
    return {
        "name": tool.name,
        "command": command_name(tool),
        "group": tool.group,
        "read_only": tool.read_only,
        "description": tool.description,
        "input_schema": tool.input.model_json_schema(),
    }


# The git archive (docs/archive.md)


@cli.group(short_help="The git archive: drain, rebuild, verify, migrate.")
def archive() -> None:
    """The git archive of messages, profiles and file reservations (ARCHIVE_DIR)."""


@contextmanager
def archive_to_myself(settings: Settings, create: bool = True):
    """The archive's repository, its lock held for the block as the archive worker holds it
    (worker.writing); refuse while a worker (a running server's) holds it, and, in a line, an
    ARCHIVE_DIR this user cannot write (before any work, as doctor's check; a folder inside it
    found unwritable midway is said the same way)."""
    from ..archive.gitrepo import NoArchive, NotAnArchive
    from ..archive.worker import writing
    from ..ops.doctor import cannot_write

    advice = "let this user write ARCHIVE_DIR, or run the command as its owner"
    if problem := cannot_write(settings.archive_dir, directory=True):
        raise click.ClickException(f"cannot write the archive: {problem}; {advice}")
    try:
        with writing(settings, create) as repo:
            if repo is None:
                raise click.ClickException(
                    f"an archive worker (a running server?) holds {settings.archive_dir}; stop it and try again"
                )
            yield repo
    except (NoArchive, NotAnArchive) as exc:  # a code repository, someone's files: refused before anything is written
        raise click.ClickException(str(exc)) from None
    except PermissionError as exc:
        raise click.ClickException(f"cannot write the archive {settings.archive_dir}: {exc}; {advice}") from None


def archive_to_read(settings: Settings):
    """ARCHIVE_DIR's repository for a command that only reads it: never created."""
    from ..archive.gitrepo import GitArchive, NoArchive, NotAnArchive

    try:
        return GitArchive.to_read(settings)
    except (NoArchive, NotAnArchive) as exc:
        raise click.ClickException(str(exc)) from None


def existing_database(settings: Settings) -> None:
    """Refuse to work on a database that does not exist: these commands read what is there (a
    mistyped DATABASE_URL made an empty database, and `retention run` reported nothing to do)."""
    if settings.no_database:
        raise click.ClickException(f"no database at {settings.database_path}: check DATABASE_URL (the server creates its"
                                   " database when it first starts; this command creates none)")


@archive.command(short_help="Archive the pending outbox entries, then exit.")
@click.pass_obj
def drain(settings: Settings) -> None:
    """Archive the pending outbox entries (what the server's worker does continuously), failed
    ones at once. Exit status 1 if entries still fail: their error is printed."""
    existing_database(settings)
    from ..archive import outbox
    from ..archive.migrate import migrate_layout
    from ..archive.worker import drain as drain_outbox

    with db.connection(settings) as conn:
        pending = conn.execute("SELECT count(*) FROM archive_outbox WHERE state = 'pending'").fetchone()[0]
    with archive_to_myself(settings) as repo, click.progressbar(length=pending, label="archiving", file=sys.stderr) as bar:
        with db.connection(settings) as conn, db.transaction(conn, write=True):
            outbox.requeue_failed(conn)  # not after their backoff: this drain is the retry
        migrate_layout(repo)
        done = drain_outbox(settings, repo, on_batch=bar.update)
    click.echo(f"{done} entries archived")
    with db.connection(settings) as conn:
        status = outbox.status(conn, None)
    if status["failed"]:
        raise click.ClickException(f"{status['failed']} entries failed and stay pending; the oldest's error:"
                                   f" {status['failed_error']}")


@archive.command(short_help="Keep archiving the outbox until stopped (the local server runs this).")
@click.pass_obj
def work(settings: Settings) -> None:
    """Archive pending outbox entries every ARCHIVE_POLL_SECONDS until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from ..archive.worker import work as keep_draining

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        keep_draining(settings, stopping, on_idle=retention_when_idle(settings))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one JSON log line, as the worker's other records (its supervisor restarts it)
        from ..archive.gitrepo import NotAnArchive  # (a stdio session's worker: its session does not check, serve does)

        log = logging.getLogger("agent_mail.archive")
        if isinstance(exc, NotAnArchive):  # a line that says what to do; a traceback would hide it
            log.error("the archive worker stopped: %s", exc)
        else:
            log.exception("the archive worker stopped")
        sys.exit(1)


def retention_when_idle(settings: Settings) -> Callable[[], None]:
    """retention's every(settings), imported on the worker's first idle turn: it imports every
    tool, which a worker waiting for another's lock never needs (every stdio session starts a
    worker; one of them writes)."""
    due = None

    def on_idle() -> None:
        nonlocal due
        if due is None:
            from ..tools.retention import every

            due = every(settings)
        due()

    return on_idle


@archive.command(short_help="Write every database entity into the archive.")
@click.pass_obj
def rebuild(settings: Settings) -> None:
    """Regenerate the archive from the database: whatever is missing or different is written
    (one commit per project per 1,000 entries); what is already right is left alone."""
    existing_database(settings)
    from ..archive import rebuild as rebuilding
    from ..archive.migrate import migrate_layout

    with archive_to_myself(settings) as repo, db.connection(settings) as conn, db.transaction(conn, write=False):
        migrate_layout(repo)
        with click.progressbar(length=rebuilding.count_entries(conn), label="rebuilding", file=sys.stderr) as bar:
            total = rebuilding.rebuild(conn, repo, on_batch=bar.update)
        repo.repack()
    click.echo(f"{total} entries written to {settings.archive_dir}")


@archive.command(name="migrate", short_help="Move an archive of the first layout to per-second folders, and repack.")
@click.pass_obj
def archive_migrate(settings: Settings) -> None:
    """Move every message file of a flat month folder (layout 1) to its per-second folder, in
    one commit (the workers also do this when they start), then merge small packs."""
    from ..archive.migrate import migrate_layout

    with archive_to_myself(settings, create=False) as repo:  # a mistyped ARCHIVE_DIR: "no archive at ...", none made
        moved = migrate_layout(repo)
        merged = repo.repack()
    click.echo(f"{moved} message files moved, {merged} packs merged")


@archive.command(short_help="Check that archive and database hold the same messages.")
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Every database message has its canonical file in the archive and its copies in its agents'
    inbox/ and outbox/, and every such file its message, with the same content. Exit status 1 on
    any mismatch; projects without their project.json (made before the archive wrote one) get a
    line on stderr: `archive rebuild`."""
    from ..archive import verify as verifying

    settings = ctx.obj
    existing_database(settings)
    with db.connection(settings) as conn, db.transaction(conn, write=False), archive_to_read(settings) as repo:
        problems = verifying.verify(conn, repo)
    click.echo(dumps(problems, compact=False))
    for line in verifying.missing_advice(problems):
        click.echo(line, err=True)
    if any(problems.values()):
        ctx.exit(1)


def progress_bar(label: str):
    """Wraps an iterable in a progress bar on stderr."""

    def wrap(items):
        with click.progressbar(items, label=label, file=sys.stderr) as bar:
            yield from bar

    return wrap


@cli.group(short_help="Retention of old mail, idle agents and ended leases.")
def retention() -> None:
    """Apply the retention policies (docs/retention.md)."""


@retention.command(name="run", short_help="One bounded retention run, then exit.")
@click.option("--budget", type=click.IntRange(1, RETENTION_BATCH_MAX_ROWS), default=None,
              help="Rows of each kind at most (default RETENTION_BATCH).")
@click.pass_obj
def retention_run(settings: Settings, budget: int | None) -> None:
    """Purge or archive old messages as the projects' policies say, retire idle agents (if
    RETENTION_AGENT_IDLE_DAYS is set), delete ended reservations and build slots; print the counts."""
    existing_database(settings)
    from ..tools.retention import run_retention

    click.echo(dumps(run_retention(settings, budget), compact=False))


@cli.group(name="db", short_help="Database maintenance: backup, restore-from-archive.")
def db_group() -> None:
    """Database maintenance."""


@db_group.command(name="backup", short_help="Copy the database to a file, while the server runs.")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.pass_obj
def backup(settings: Settings, path: Path, force: bool) -> None:
    """Copy the database (DATABASE_URL, or --database-url) to PATH with SQLite's online backup: a
    consistent copy of everything committed, taken while the server reads and writes. Restore it
    by stopping the server and putting it in the database's place (docs/operations.md, "Backups")."""
    refused = backup_refusal(settings, path, force)
    if refused:
        raise click.ClickException(refused)
    try:
        size = db.backup(settings, path)
    except OSError as exc:  # the target's (the database's own errors are sqlite3's: OperatorCommands names it)
        raise click.ClickException(f"cannot write the backup {path}: {exc}") from None
    click.echo(dumps({"backup": str(path), "bytes": size}, compact=False))


def backup_refusal(settings: Settings, path: Path, force: bool) -> str | None:
    """Why `db backup` does not write PATH (None: it does)."""
    if settings.turso_sync_url:
        return (f"replica mode: {settings.database_path} is this process's replica of TURSO_SYNC_URL, a cache; the primary is"
                " the source of truth: back it up where it runs (Turso Cloud: point-in-time restore; docs/operations.md, \"Backups\")")
    if settings.no_database:
        return f"no database at {settings.database_path}"
    if not path.parent.is_dir():
        return f"no directory {path.parent}"
    if not os.access(path.parent, os.W_OK | os.X_OK):  # not the database's fault: say whose it is
        return f"cannot write in {path.parent} (this user); choose another directory"
    if path.is_symlink() or (path.exists() and not path.is_file()):  # --force replaces a file, never /dev/null or a link
        return f"{path} is not a regular file; choose another path"
    if path.exists() and not force:
        return f"{path} exists; choose another path, or --force to replace it"
    if path.resolve() == settings.database_path.resolve():
        return f"{path} is the database itself; choose another path"
    if Path(f"{path}-wal").exists():  # replacing a database under its WAL would corrupt it
        return f"{path}-wal exists: {path} is in use (or was not closed); choose another path"
    return None


@db_group.command(name="restore-from-archive", short_help="Fill an empty database from the archive.")
@click.pass_context
def restore_from_archive(ctx: click.Context) -> None:
    """Disaster recovery: fill an empty database (--database-url) from the archive
    (ARCHIVE_DIR): projects, agents, messages with their recipients, file reservations."""
    from ..archive import restore as restoring

    settings = ctx.obj
    # The archive first: a mistyped ARCHIVE_DIR must not leave a new, empty database at DATABASE_URL.
    with archive_to_read(settings) as repo, db.connection(settings) as conn, db.transaction(conn, write=True):
        try:
            counts = restoring.restore(conn, repo, progress=progress_bar("restoring"))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(dumps(counts, compact=False))


@cli.command(short_help="Check the installation; --repair applies the safe fixes.")
@click.option("--repair", is_flag=True, help="Apply the fixes that lose nothing (index, archive, migrations, retries).")
@click.pass_context
def doctor(ctx: click.Context, repair: bool) -> None:
    """Check configuration, database integrity and migrations, the full-text index, the git
    archive against the database, the archive worker, disk space and Turso connectivity;
    print what is wrong and the command that fixes it. Exit status 1 while anything is wrong."""
    from ..ops import doctor as checks

    settings = ctx.obj
    findings = checks.examine(settings)
    show_findings(findings)
    fixable = [finding for finding in findings if not finding.ok and finding.repair]
    if repair and fixable:
        for finding in fixable:
            with ProgressBars(finding.check) as progress:
                done = finding.repair(progress)
            click.echo(f"repaired {finding.check}: {done}")
        click.echo("")
        findings = checks.examine(settings)
        show_findings(findings)
    if not all(finding.ok for finding in findings):
        ctx.exit(1)


def show_findings(findings) -> None:
    width = max(len(finding.check) for finding in findings)
    for finding in findings:
        click.echo(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.check:<{width}}  {finding.detail}")
        if not finding.ok and finding.fix:
            click.echo(f"      {'':<{width}}  fix: {finding.fix}")


class ProgressBars:
    """progress(total) -> an update(n) callback drawing a bar on stderr; closed at the end."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bars = []

    def __enter__(self):
        def progress(total: int):
            bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bars.append(bar.__enter__())
            return bar.update

        return progress

    def __exit__(self, *exc) -> None:
        for bar in self.bars:
            bar.__exit__(*exc)
