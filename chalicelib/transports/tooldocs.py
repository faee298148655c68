"""The tool list in README.md, generated from the registry (a test keeps it current)."""

from ..tools import all_tools

BEGIN, END = "<!-- tools:begin -->", "<!-- tools:end -->"


def tool_table() -> str:
    lines = ["| Tool | Kind | REST | What it does |", "|---|---|---|---|"]
    for tool in all_tools():
        kind = "read" if tool.read_only else "write, destructive" if tool.destructive else "write"
        methods = "/".join(tool.rest_methods)
        lines.append(f"| `{tool.name}` | {kind} | `{methods} {tool.rest_path}` | {tool.summary} |")
    return "\n".join(lines)


def update_readme(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tool_table()}\n{END}{tail}"


if __name__ == "__main__":
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "README.md"
    readme.write_text(update_readme(readme.read_text()))
