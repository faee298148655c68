"""Field types shared by tool inputs and outputs."""

from typing import Annotated

from pydantic import AfterValidator, AliasChoices, Field, PlainSerializer, WithJsonSchema

from . import clock
from .names import NAME_RULES, check_name

ProjectKey = Annotated[
    str,
    Field(min_length=1, max_length=1024, description="The project's slug, or its human_key (absolute path)."),
]

AgentName = Annotated[str, AfterValidator(check_name), Field(description=NAME_RULES)]


def acting_agent(*old_names: str, default=..., description: str = "You: the agent acting."):
    """The field for the acting agent: `agent_name` in every tool; its names of before are
    still accepted (aliases), while the schemas show agent_name only."""
    return Field(
        default,
        validation_alias=AliasChoices("agent_name", *old_names),
        description=f"{description} (Also accepted as {' or '.join(old_names)}.)",
    )


def _address(value: str) -> str:
    name, at, project_key = value.partition("@")
    check_name(name)
    if at and not project_key.strip():
        raise ValueError(f"{value!r} names no project after '@'; write Name@project, e.g. GreenCastle@backend")
    return value


# An agent as a recipient: names contain no '@', so `Name@project` is unambiguous.
AgentAddress = Annotated[
    str,
    Field(min_length=2, max_length=1100),
    AfterValidator(_address),
    Field(
        description="An agent name (GreenCastle) for an agent of this project, or Name@project"
        " (project = slug or human_key) for an agent of another project."
    ),
]

# Ids are 63-bit integers. JSON carries them as decimal strings, because JavaScript
# numbers hold only 53 bits; inputs accept either form.
def _id_type(description: str):
    return Annotated[
        int,
        Field(gt=0, lt=2**63),
        PlainSerializer(str, return_type=str, when_used="json"),
        WithJsonSchema(
            {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]{1,19}$"}], "description": description},
            mode="validation",
        ),
        WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,19}$", "description": description}, mode="serialization"),
    ]


MessageId = _id_type("Message id.")
Id = _id_type("A 63-bit id, as a decimal string (a number is accepted too).")


def _timestamp(value: str) -> str:
    try:
        return clock.normalize(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp such as 2026-01-31T12:00:00Z") from None


Timestamp = Annotated[str, AfterValidator(_timestamp), Field(description="ISO 8601 timestamp; UTC if no offset.")]
