"""The tool registry: one declaration per tool drives MCP, REST, OpenAPI and the CLI.

A tool is a plain function `handler(db, args) -> result`, where `args` is a pydantic
model (the input) and `result` another (the output). Each group module lists its tools:

    TOOLS = [
        tool(ensure_project),
        tool(list_projects, read_only=True),
    ]

Name, input and output models and description are read from the function itself.
"""

import inspect
import sqlite3
import types
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict


class Input(BaseModel):
    """Base of every tool input: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    """Base of every tool output."""


@dataclass(frozen=True)
class Tool:
    name: str
    group: str
    handler: Callable[[sqlite3.Connection, Any], BaseModel]
    input: type[Input]
    output: type[Output]
    read_only: bool
    description: str

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


def tool(handler: Callable, *, read_only: bool = False) -> Tool:
    hints = get_type_hints(handler)
    params = list(inspect.signature(handler).parameters)
    if len(params) != 2:
        raise TypeError(f"{handler.__name__} must take (db, args)")
    return Tool(
        name=handler.__name__,
        group=handler.__module__.rsplit(".", 1)[-1],
        handler=handler,
        input=hints[params[1]],
        output=hints["return"],
        read_only=read_only,
        description=inspect.cleandoc(handler.__doc__ or ""),
    )


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


def all_tools() -> list[Tool]:
    from .tools import TOOLS

    return TOOLS


def tools_by_name() -> dict[str, Tool]:
    return {t.name: t for t in all_tools()}
