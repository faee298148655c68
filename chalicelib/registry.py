"""The tool registry: one declaration per tool drives MCP, REST, OpenAPI and the CLI.

A tool is a plain function `handler(db, args) -> result`, where `args` is a pydantic
model (the input) and `result` another (the output). Each group module lists its tools:

    TOOLS = [
        tool(ensure_project),
        tool(list_projects, read_only=True),
        tool(archive_project, destructive=True, repeat_safe=True),
    ]

read_only: changes nothing (GET over REST). destructive: deletes, takes away or revokes
something (MCP's destructiveHint); repeat_safe: a second call with the same arguments changes
nothing more (MCP's idempotentHint).

Name, input and output models and description are read from the function itself.
"""

import dataclasses
import functools
import inspect
import operator
import sqlite3
import types
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Union, get_args, get_origin, get_type_hints

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator


# An input has at most ~15 fields: an object with more is refused as one problem, before pydantic
# makes an error of each unknown one (60,000 keys: 60,000 errors, 0.1 s to list them).
MAX_FIELDS = 64


class Input(BaseModel):
    """Base of every tool input: unknown fields are an error, not silently dropped."""

    # By name or by alias: old field names stay accepted (fields.acting_agent).
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _not_too_many_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_FIELDS:
            raise ValueError(f"{len(data)} fields, more than any input takes ({MAX_FIELDS}); this one takes {len(cls.model_fields)}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _flags_are_not_numbers(cls, data: Any) -> Any:
        """JSON's true/false and numbers are different types (so says the schema), but pydantic's
        lax mode reads 0 as false and false as 0: refuse either in the other's place."""
        if isinstance(data, dict):
            kinds = _flag_and_number_fields(cls)
            if kinds.keys().isdisjoint(data):  # none given (most calls): no loop in Python
                return data
            for name, kind in kinds.items():
                value = data.get(name)
                if kind is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
                    raise ValueError(f"{name}: {value!r} is a number; pass true or false")
                if kind is not bool and isinstance(value, bool):
                    raise ValueError(f"{name}: {str(value).lower()} is not a number")  # (as JSON spells it)
        return data


@functools.cache
def _flag_and_number_fields(model: type[BaseModel]) -> dict[str, type]:
    """The names (and aliases) of a model's bool, int and float fields, with their type."""
    kinds = {}
    for name, field in model.model_fields.items():
        kind = field_type(field.annotation)
        if kind in (bool, int, float):
            kinds.update({name: kind, **({field.alias: kind} if isinstance(field.alias, str) else {})})
    return kinds


class Output(BaseModel):
    """Base of every tool output."""


def to_json(output: Any) -> bytes:
    """An output (or any value pydantic serialises) as JSON bytes; a json_handler's output
    already is."""
    return output if isinstance(output, bytes) else pydantic_core.to_json(output)


@dataclass(frozen=True)
class Replay:
    """What an idempotent tool stores for a retry instead of its whole result: keep(result) gives
    a short JSON list (ids), rebuild(db, args, kept) reads the first result back from it. For
    results that are large and can be read again as they were (a sent message never changes)."""

    keep: Callable[[BaseModel], list]
    rebuild: Callable[[sqlite3.Connection, Any, list], BaseModel]


@dataclass(frozen=True)
class Tool:
    name: str
    group: str
    handler: Callable[[sqlite3.Connection, Any], BaseModel]
    input: type[Input]
    output: type[Output]
    read_only: bool
    description: str
    # Input fields naming the agent(s) the call acts as or reads for; with REQUIRE_AGENT_TOKENS
    # invoke.py wants that agent's token in `token_field` (chalicelib/security/agent_tokens.py).
    acts_as: tuple[str, ...] = ()
    token_field: str = "registration_token"
    may_create: bool = False  # the agent may not exist yet (register_agent): then no token is asked
    handler_input: type[Input] | None = None  # the handler's own input model, without token_field
    # settle(db, args, result) -> result: runs after the write committed (and, on a Turso
    # replica, reached the primary), to re-check its outcome against writes other replicas
    # made meanwhile (build slots: exactly one winner). Such a tool runs on a freshly pulled replica.
    settle: Callable[[sqlite3.Connection, Any, BaseModel], BaseModel] | None = None
    # Decides on fresh data (a replica pulls first), though it needs no settle step: a write whose
    # miss is an answer, not a NotFound that invoke would retry after a pull (releasing a hold
    # another replica just granted: "released: false" on stale data).
    fresh: bool = False
    # The same result as handler, already as JSON bytes: what to_json(handler(...)) gives. For
    # outputs the database renders as JSON (a Python object per row costs more than the query);
    # transports that only send the JSON call it, through json_tool.
    json_handler: Callable[[sqlite3.Connection, Any], bytes] | None = None
    # off_loop(args) -> bool: this read may take more than a few milliseconds (big inputs, big
    # answers), so the ASGI app runs it, and the answer's encoding, in a thread (invoke.ajson).
    off_loop: Callable[[Any], bool] = lambda args: False
    # MCP content blocks for a successful result, from its JSON (instead of the JSON as text),
    # and the structured result to send with them: get_attachment gives an image a multimodal
    # agent can look at (its content then in the block only).
    mcp_content: Callable[[bytes], tuple[list[dict], bytes]] | None = None
    # Changes files on the server's machine, not the database (install_precommit_guard): runs in a
    # thread on a read transaction, never inside the writer's (git would hold every write up).
    writes_files: bool = False
    # prepare(args) -> work(db) or None: a write's slow work whose result the write only stores
    # (images converted to WebP, macro_prepare_thread's reads), done before it: on a worker thread, in a read transaction, after
    # the caller's checks, so the writer thread and the write lock never wait for it. The work
    # leaves its results on args. None (most calls: no image) costs nothing.
    prepare: Callable[[Any], Callable[[sqlite3.Connection], None] | None] | None = None
    # A waiting tool (wait_for_mail): its handler answers at once, and wait(args, result) gives,
    # while the result is "nothing yet", a wake-up key (a recipient's id) and the input of the
    # next check; None once it is final. invoke.py runs the handler again on that input when a
    # commit wakes the key, until args.timeout_seconds.
    wait: Callable[[BaseModel, BaseModel], tuple[Any, BaseModel] | None] | None = None
    # A waiting tool's off_loop(args): its answer may be big (bodies). The ASGI app then checks on
    # the loop with wait_probe(args), an input whose answer only says whether something is there,
    # and once something is, reads the answer with args in the slow-read lane, encoding included.
    wait_probe: Callable[[BaseModel], BaseModel] | None = None
    # Takes an optional idempotency_key: a retry with the same key returns the first result and
    # changes nothing (invoke.py stores key, payload hash and result with the write).
    idempotent: bool = False
    # With idempotent: store ids and read the result back on a retry, instead of storing it whole.
    replay: Replay | None = None
    # Deletes, takes away or revokes something (mail purged, another agent's reservation, an
    # agent's token or its right to send): MCP's destructiveHint, so a host asks a person first.
    # A write without it only adds or updates (destructiveHint false).
    destructive: bool = False
    # Called again with the same arguments it changes nothing more (MCP's idempotentHint): archive
    # an archived project, release what is released. Not `idempotent` (a retry's idempotency_key).
    repeat_safe: bool = False

    @functools.cached_property
    def json_tool(self) -> "Tool":
        """This tool, its handler returning JSON bytes (to_json passes them through)."""
        return dataclasses.replace(self, handler=self.json_handler) if self.json_handler else self

    @property
    def summary(self) -> str:
        """The description's first paragraph, on one line."""
        return " ".join(self.description.split("\n\n")[0].split())

    @property
    def rest_path(self) -> str:
        return f"/api/{self.name}"

    @property
    def rest_methods(self) -> tuple[str, ...]:
        return ("GET", "POST") if self.read_only else ("POST",)


def tool(
    handler: Callable,
    *,
    read_only: bool = False,
    acts_as: str | tuple[str, ...] = (),
    token_field: str = "registration_token",
    may_create: bool = False,
    settle: Callable | None = None,
    fresh: bool = False,
    json_handler: Callable | None = None,
    off_loop: bool | Callable[[Any], bool] = False,
    mcp_content: Callable | None = None,
    writes_files: bool = False,
    prepare: Callable | None = None,
    wait: Callable | None = None,
    wait_probe: Callable | None = None,
    idempotent: bool = False,
    replay: Replay | None = None,
    destructive: bool = False,
    repeat_safe: bool = False,
) -> Tool:
    hints = get_type_hints(handler)
    params = list(inspect.signature(handler).parameters)
    if len(params) != 2:
        raise TypeError(f"{handler.__name__} must take (db, args)")
    if bool(wait_probe) != bool(wait and off_loop):
        raise TypeError(f"{handler.__name__}: a waiting tool that may run off the loop needs a wait_probe, and only it")
    if read_only and destructive:
        raise TypeError(f"{handler.__name__}: a read_only tool cannot be destructive")
    acts_as = (acts_as,) if isinstance(acts_as, str) else tuple(acts_as)
    handler_input = own_input = hints[params[1]]
    if idempotent:
        handler_input = with_idempotency_key(handler_input)
    for field in acts_as:
        if field not in handler_input.model_fields:
            raise TypeError(f"{handler.__name__}: acts_as names {field!r}, which is not an input field")
    return Tool(
        name=handler.__name__,
        group=handler.__module__.rsplit(".", 1)[-1],
        handler=_without_token(handler, own_input) if acts_as or idempotent else handler,
        input=with_token_field(handler_input, token_field) if acts_as else handler_input,
        output=hints["return"],
        read_only=read_only,
        description=inspect.cleandoc(handler.__doc__ or ""),
        acts_as=acts_as,
        token_field=token_field,
        may_create=may_create,
        handler_input=own_input if acts_as or idempotent else None,
        settle=settle,
        fresh=fresh,
        json_handler=_without_token(json_handler, own_input) if json_handler and (acts_as or idempotent) else json_handler,
        off_loop=off_loop if callable(off_loop) else (lambda args: off_loop),
        mcp_content=mcp_content,
        writes_files=writes_files,
        prepare=prepare,
        wait=wait,
        wait_probe=wait_probe,
        idempotent=idempotent,
        replay=replay,
        destructive=destructive,
        repeat_safe=repeat_safe or read_only,
    )


_with_token: dict[tuple[type, str], type[Input]] = {}


def with_token_field(model: type[Input], token_field: str) -> type[Input]:
    """`model` plus an optional agent token field (one class per model and field name, so
    tools sharing an input model share its schema)."""
    key = (model, token_field)
    if key not in _with_token:
        _with_token[key] = create_model(
            model.__name__,
            __base__=model,
            __module__=model.__module__,
            **{token_field: (
                str | None,
                Field(None, max_length=256, description="The acting agent's secret token (from register_agent);"
                      " required when the server requires agent tokens."),
            )},
        )
    return _with_token[key]


IDEMPOTENCY_KEY_DESCRIPTION = (
    "Any string unique to this operation (e.g. a UUID). A retry with the same key returns the"
    " first result and changes nothing; the same key with other arguments is refused (409)."
    " Keys are remembered for IDEMPOTENCY_KEY_TTL_SECONDS (a day by default)."
)


@functools.cache
def with_idempotency_key(model: type[Input]) -> type[Input]:
    """`model` plus an optional idempotency_key field (invoke.py handles it; the handler never sees it)."""
    return create_model(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        idempotency_key=(str | None, Field(None, min_length=1, max_length=200, description=IDEMPOTENCY_KEY_DESCRIPTION)),
    )


def _without_token(handler: Callable, model: type[Input]) -> Callable:
    """The handler, given its own input model: the token field (checked before) is left out."""
    names = tuple(model.model_fields)
    own_names = frozenset(names)
    values = operator.itemgetter(*names) if len(names) > 1 else lambda fields: (fields[names[0]],)
    # What model_construct does for a validated model without defaults to fill in, private
    # attributes or post-init: set its slots. model_construct's loop over the fields in Python
    # cost ~5 µs of every fetch_inbox (of ~150); a model with any of those still takes it.
    plain = not model.__private_attributes__ and not model.__pydantic_post_init__

    @functools.wraps(handler)
    def call(db: sqlite3.Connection, args: Input):
        if type(args) is not model:
            fields_set = args.__pydantic_fields_set__ & own_names
            if plain:
                own = object.__new__(model)
                object.__setattr__(own, "__dict__", dict(zip(names, values(args.__dict__))))
                object.__setattr__(own, "__pydantic_fields_set__", fields_set)
                object.__setattr__(own, "__pydantic_extra__", None)
                object.__setattr__(own, "__pydantic_private__", None)
                args = own
            else:
                own = model.model_construct(fields_set, **{name: getattr(args, name) for name in names})
                if args.__pydantic_private__:  # what Tool.prepare left on the arguments
                    object.__setattr__(own, "__pydantic_private__", {**own.__pydantic_private__, **args.__pydantic_private__})
                args = own
        return handler(db, args)

    return call


def field_type(annotation: Any) -> Any:
    """The type under Annotated[...] and Optional[...]: what a field holds when given."""
    while True:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
            annotation = next(arg for arg in args if arg is not type(None))
        else:
            return annotation

