from pathlib import Path

from chalicelib.transports.tooldocs import update_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tool_list_is_generated_from_the_registry():
    text = README.read_text()
    assert update_readme(text) == text, "run: python -m chalicelib.transports.tooldocs"
