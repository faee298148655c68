"""What Markdown costs the thread page, on hostile bodies (chalicelib/web/markdown.py).

    .venv/bin/python bench/markdown.py [--sizes 4096,16384,65536]

1. Each shape at each size: markdown-it + nh3 time (uncached), per character and per unit of
   weight() (what the page's budget counts). A shape whose time per character grows with the
   size is superlinear.
2. One thread page per shape, before and after the caps: the page's Markdown time rendering every
   body (as before; 5 bodies of 256 KiB, the largest body_md, as in the audit) and as the page
   does now (plan(): Markdown within BODY_MAX and PAGE_MAX, the rest escaped as plain text), for
   a full page (one get_thread page: 500 messages, ~4 MiB of bodies) of distinct bodies of
   256 KiB, of BODY_MAX characters and of 2 KiB.
"""

import argparse
import sys
import time
from pathlib import Path

from markupsafe import escape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.tools.messages import PAGE_BODY_BYTES  # noqa: E402
from chalicelib.web import markdown  # noqa: E402
from chalicelib.web.pages import THREAD_SHOWN  # noqa: E402

SHAPES = {
    "prose (docs/*.md)": lambda n: (DOCS * (n // len(DOCS) + 1))[:n],
    "image ![": lambda n: "![" * (n // 2),
    "image ![a": lambda n: "![a" * (n // 3),
    "open brackets": lambda n: "[" * n,
    "link refs [a][": lambda n: "[a][\n" * (n // 5),
    'link title [a]("': lambda n: ('[a]("' + "a" * 300) * (n // 305),
    "link dest [a](": lambda n: ("[a](" + "a" * 300) * (n // 304),
    "emphasis": lambda n: "*a " * (n // 3),
    "star runs": lambda n: "**a" * (n // 3),
    "html entities": lambda n: "&#" * (n // 2),
    "ordered list": lambda n: "1. a\n" * (n // 5),
    "bullets": lambda n: "- a\n" * (n // 4),
    "table bomb": lambda n: "|a" * 500 + "\n" + "|-" * 500 + "\n" + "|\n" * 131 + "\n" + "word " * n,  # 65,536 cells
}
DOCS = "".join(path.read_text() for path in sorted((Path(__file__).resolve().parent.parent / "docs").glob("*.md")))


def body(shape: str, size: int, variant: int = 0) -> str:
    text = SHAPES[shape](size)[: size - 8]
    return text + f" v{variant}"  # distinct bodies (the page keeps each message's HTML)


def seconds(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def page_before(bodies) -> None:
    for text in bodies:
        markdown.render(text)


def page_now(bodies) -> None:
    for text, as_markdown in zip(bodies, markdown.plan(bodies)):
        markdown.render(text) if as_markdown else escape(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="4096,16384,65536")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"1. render time, ms (µs per character / per unit of weight) at {sizes} characters")
    for shape in SHAPES:
        cells = []
        for size in sizes:
            text = body(shape, size)
            took = seconds(markdown.render, text)
            units = markdown.weight(text, 10**12) if len(text) <= markdown.BODY_MAX else None
            per_unit = f"/{took * 1e6 / units:5.1f}" if units else "      "
            cells.append(f"{took * 1000:8.1f} ({took * 1e6 / len(text):5.2f}{per_unit})")
        print(f"  {shape:20s}" + "".join(cells), flush=True)
    print("\n2. a thread page's Markdown time, s: before (5 bodies of 256 KiB, all Markdown) | now, a full page of"
          " bodies of 256 KiB | of BODY_MAX | of 2 KiB")
    for shape in SHAPES:
        before = seconds(page_before, [body(shape, 256 * 1024, i) for i in range(5)])
        now = [seconds(page_now, [body(shape, size, i) for i in range(min(THREAD_SHOWN, PAGE_BODY_BYTES // size))])
               for size in (256 * 1024, markdown.BODY_MAX, 2048)]
        print(f"  {shape:20s} {before:7.2f} | " + " ".join(f"{took:6.2f}" for took in now), flush=True)


if __name__ == "__main__":
    main()
