"""Field types shared by tool inputs and outputs."""

from typing import Annotated, get_args

import re

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from . import clock
from .errors import PATTERNS_SAID
from .names import NAME_PATTERN, NAME_RULES, check_name, check_new_name

MAX_PROJECT_KEY = 1024  # characters of a slug or a human key; a stored (normalised) key fits (tools/projects.py HumanKey)

ProjectKey = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PROJECT_KEY, description="The project's slug, or its human_key (absolute path)."),
]

# The rules the validators enforce, also in the JSON schema (OpenAPI, MCP tools/list), so that
# schema-driven clients and fuzzers agree with the server; the validators keep their own messages.
NAME_REGEX = f"^{NAME_PATTERN.pattern}$"


def matching(pattern: str, said: str, **constraints):
    """Field(pattern=...) (checked by pydantic, fast) whose refusal says in words what the value must
    be, "'ABC' is not <said>", not the regular expression an agent would have to read."""
    PATTERNS_SAID[pattern] = said
    return Field(pattern=pattern, **constraints)


AgentName = Annotated[str, AfterValidator(check_name), Field(description=NAME_RULES, json_schema_extra={"pattern": NAME_REGEX})]
# A name that, omitted, is generated (register_agent, the macros' agent_name, name_hint): its refusal says so.
NewAgentName = Annotated[str, AfterValidator(check_new_name), Field(description=NAME_RULES, json_schema_extra={"pattern": NAME_REGEX})]


def _storable(value: str) -> str:
    """Text SQLite stores and reads whole: its text functions (substr, length: what search reads
    of a body) stop at a NUL, and UTF-8 has no lone half of a surrogate pair (a 500 from the database)."""
    if "\x00" in value:
        raise ValueError("holds a NUL character (U+0000): leave it out")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds half of a UTF-16 surrogate pair (U+D800-U+DFFF), which is no character") from None
    return value


# A message's text (subject, body): whole, as stored. The schema says "no NUL" (it cannot say the rest:
# JSON itself has no lone surrogate half, and REST and MCP refuse one as they parse).
Storable = Annotated[str, AfterValidator(_storable), Field(json_schema_extra={"pattern": r"^[^\x00]*$"})]


# Blank: JSON Schema's (ECMAScript's) white space, written out, so that the server and the schema's
# pattern agree on every character (Python's strip() and \s differ from it: \x1c-\x1f, \x85, \ufeff).
_SPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_SAYS_SOMETHING = re.compile(rf"[^{_SPACE}]")


def _not_blank(value: str) -> str:
    if not _SAYS_SOMETHING.search(value):
        raise ValueError(f"is {'only spaces' if value else 'empty'}: write some text")
    return value


# A text that says something: a subject or a thread id of spaces passed where "" was refused.
NotBlank = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank),
                     Field(json_schema_extra={"pattern": rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"})]


def acting_agent(*old_names: str, default=..., description: str = "You: the agent acting."):
    """The field for the acting agent: `agent_name` in every tool; its names of before are
    still accepted (aliases), while the schemas show agent_name only."""
    return Field(
        default,
        validation_alias=AliasChoices("agent_name", *old_names),
        description=f"{description} (Also accepted as {' or '.join(old_names)}.)",
    )


def with_bcc(what: str):
    """An overseer's view's include_bcc (false unless given), saying `what` it does: a person
    overseeing reads everything, but bcc is otherwise the sender's secret, so only an admin
    credential may ask (security/scopes.py refuses the others)."""
    return Field(False, description=f"{what} (admin only: bcc is otherwise the sender's secret).")


def empty_list(description: str | None = None):
    """A list field's default: empty. Given as a tuple and validated into a new list: pydantic
    deep-copies a `[]` default for every input (~2 µs a field, three on each send)."""
    return Field((), validate_default=True, **({"description": description} if description else {}))


def _address(value: str) -> str:
    name, at, project_key = value.partition("@")
    check_name(name)
    if at and not project_key.strip():
        raise ValueError(f"{value!r} names no project after '@'; write Name@project, e.g. GreenCastle@backend")
    return value


# An agent as a recipient: names contain no '@', so `Name@project` is unambiguous.
AgentAddress = Annotated[
    str,
    Field(min_length=2, max_length=1100, json_schema_extra={"pattern": f"^{NAME_PATTERN.pattern}(@.*\\S.*)?$"}),
    AfterValidator(_address),
    Field(
        description="An agent name (GreenCastle) for an agent of this project, or Name@project"
        " (project = slug or human_key) for an agent of another project."
    ),
]

def _at_most(limit: int) -> str:
    """A regular expression for the decimal numbers 1..limit, without leading zeros."""
    digits = str(limit)
    branches = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"]  # fewer digits
    for i, digit in enumerate(digits):  # as many digits: equal up to i, then smaller
        low = "1" if i == 0 else "0"
        if int(digit) > int(low):
            branches.append(f"{digits[:i]}[{low}-{int(digit) - 1}][0-9]{{{len(digits) - i - 1}}}")
    branches.append(digits)
    return "^(" + "|".join(branches) + ")$"


# An id as text: its digits, perhaps with a fraction of zeros (493.0: a float's text, as a client's
# JSON writer or a query may put it), as the schema says.
ID_PATTERN = _at_most(2**63 - 1).removesuffix("$") + r"(\.0{1,20})?$"
_ID_STRING = re.compile(ID_PATTERN)
# The largest id a JSON number may carry. FastAPI writes OpenAPI bounds as floats, and schema
# readers take a float by its shortest decimal (9.223372036854775e+18 for 2**63 - 1) or by its
# binary value: this one is both exactly, and below 2**63. Readers that parse numbers into floats
# could not tell ids this large apart anyway: larger ids go as strings (as every answer gives them).
MAX_ID_NUMBER = 9_223_372_036_854_656_000


def _id_value(value):
    """An id must be what the schema says: a string 1..2**63-1 without leading zeros or signs (a
    fraction of zeros allowed), or a number 1..MAX_ID_NUMBER (true and false are not numbers). A
    query's text is either."""
    if isinstance(value, str) and _ID_STRING.match(value):
        return int(value.partition(".")[0])  # any id, up to 2**63 - 1: text is not bounded as a JSON number
    if isinstance(value, str) or value is None or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an id: a decimal number from 1 to {2**63 - 1}")
    if isinstance(value, (int, float)) and value > 2**63 - 1:  # (the lean MCP path reads a number past 64 bits as a float)
        raise ValueError(f"{value} is not an id: ids go up to {2**63 - 1}")
    if isinstance(value, float) and value > 2**53:  # a float holds 53 bits: 386771164157945751.0 read as ...728
        raise ValueError(f"{value!r} is not exact past 2**53 as a number with a fraction; send the id as a string")
    if isinstance(value, int) and value > MAX_ID_NUMBER:
        raise ValueError(f"{value} is too large for a JSON number; send it as a string, \"{value}\"")
    return value


# Ids are 63-bit integers. JSON carries them as decimal strings, because JavaScript
# numbers hold only 53 bits; inputs accept either form.
def _id_type(description: str):
    return Annotated[
        int,
        Field(gt=0, lt=2**63),  # before the validator: checked by pydantic's own int, not by Python functions after it
        BeforeValidator(_id_value),
        PlainSerializer(str, return_type=str, when_used="json"),
        WithJsonSchema(
            {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_ID_NUMBER}, {"type": "string", "pattern": ID_PATTERN}],
             "description": description},
            mode="validation",
        ),
        WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,19}$", "description": description}, mode="serialization"),
    ]


def is_id(field) -> bool:
    """Whether a model field (pydantic's FieldInfo) is one of these ids."""
    return any(getattr(item, "func", None) is _id_value for item in field.metadata)


MessageId = _id_type("Message id.")
Id = _id_type("A 63-bit id, as a decimal string (a number is accepted too).")


def _timestamp(value: str) -> str:
    try:
        return clock.normalize(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp such as 2026-01-31T12:00:00Z") from None


Timestamp = Annotated[
    str, AfterValidator(_timestamp), Field(description="ISO 8601 timestamp; UTC if no offset.", json_schema_extra={"format": "date-time"})
]


def given(field: str) -> dict:
    """JSON schema: `field` is present and not null (what a model validator checks as "given"), for
    a model's anyOf/oneOf rules across fields (json_schema_extra)."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


def names_agents(field) -> bool:
    """Whether a model field holds agent names (AgentName, AgentAddress, or a list of them): names
    are case-insensitive, so what compares calls (an idempotency key's) folds their case."""
    def checks_names(metadata) -> bool:
        return any(isinstance(meta, AfterValidator) and meta.func in (check_name, check_new_name, _address) for meta in metadata)

    def within(annotation) -> bool:  # Annotated[str, ...] (its metadata after the type), list[...], Optional[...]
        args = get_args(annotation)
        return checks_names(args[1:]) or any(within(arg) for arg in args)

    return checks_names(field.metadata) or within(field.annotation)


def folded_name(value: str) -> str:
    """An agent name or Name@project as one agent, however its name is cased (the project as given)."""
    name, at, project = value.partition("@")
    return name.lower() + at + project
