"""Message bodies as safe HTML: markdown-it-py (CommonMark + tables and strikethrough, raw HTML
shown as text), then the nh3 sanitiser (an allow-list; links get rel="noopener noreferrer").
Images are never loaded: an image becomes a link to it (the CSP would block remote ones anyway).

markdown-it-py costs ~0.3 µs a character of prose but up to ~30 µs of dense punctuation
("![![![…"), some shapes grow quadratically with a paragraph's length ('[a]("aaa…' repeated), and
a table pads every row to its header's width (a 2 KB table is 65,536 cells, ~0.8 s). So a page
renders as Markdown only bodies up to BODY_MAX characters, and only PAGE_MAX units of weight()
in all; the others are shown as plain text (bench/markdown.py has the numbers). So is a body
nested deeper than NESTING (lists in lists in quotes), whose rest markdown-it would drop unsaid.
"""

from typing import Iterable

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

TAGS = {
    "p", "br", "hr", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}  # no style: the CSP allows no inline styles
BODY_MAX = 16 * 1024  # characters of one body rendered as Markdown (bounds the quadratic shapes)
PAGE_MAX = 32 * 1024  # weight() rendered as Markdown on one page: ~1 s at the very worst, ~140 KB of prose
MARKUP = b"\n!#$%&*+-:<=>@[\\]^_`{}~|"  # the characters markdown-it's inline parser stops at (its terminators)
LINE_UNITS = 4  # a line costs the block parser about as much as 4 such characters
PLAIN_PER_UNIT = 8  # bytes of anything else that weigh one unit
TABLE_DELIMITER = frozenset(" \t|:-+*>")
# Levels of blocks markdown-it opens (a list item takes two: its list's and its own), as its
# default preset (commonmark's 20 cut a file tree ten folders deep); each level a few frames of
# recursion, so still far from Python's limit.
NESTING = 100  # a delimiter row (|---|:-:|), in a quote or a list item too


def _image_as_link(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = "".join(child.content for child in token.children or []) or src
    return f'<a href="{escape(src)}">[image: {escape(alt)}]</a>'


def _headings_below_the_page(state) -> None:
    """A body's headings rank below the thread page's own (its subject is the <h1>, "Messages" an
    <h2>) and skip no rank: the body's levels in use rank from <h3> (# and ### alone: <h3>, <h4>;
    ## alone: <h3>), and none is more than one below the heading before it, so that a screen
    reader's outline of the page has no gaps."""
    headings = [token for token in state.tokens if token.type in ("heading_open", "heading_close")]
    ranks = {level: 3 + n for n, level in enumerate(sorted({token.tag for token in headings}))}
    above = 2
    for token in headings:
        if token.type == "heading_open":
            above = min(ranks[token.tag], above + 1, 6)
        token.tag = f"h{above}"  # its close follows it: headings do not nest


def _noting_cuts(tokenize):
    """markdown-it's block parser, telling (env["cut"]) when it is about to drop the rest of a
    block nested deeper than NESTING: it does so silently (ParserBlock.tokenize, whose own test
    this repeats), and the person would read a message with its end missing."""

    def tokenize_noting_cuts(state, start: int, end: int) -> None:
        line = state.skipEmptyLines(start)
        if state.level >= NESTING and line < end and state.sCount[line] >= state.blkIndent:
            state.env["cut"] = True
        tokenize(state, start, end)

    return tokenize_noting_cuts


def _parser(breaks: bool) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": breaks,
                                   "maxNesting": NESTING})
    md.enable(["table", "strikethrough"]).add_render_rule("image", _image_as_link)
    md.core.ruler.push("headings_below_the_page", _headings_below_the_page)
    md.block.tokenize = _noting_cuts(md.block.tokenize)  # the container rules call it through md.block too
    return md


# Agents write Markdown (a line break within a paragraph joins the lines); a person types lines
# into a plain textarea and means them as lines: a human sender's body keeps each (breaks).
_md, _md_lines = _parser(breaks=False), _parser(breaks=True)


def render(body: str, typed_lines: bool = False) -> Markup:
    md, env = _md_lines if typed_lines else _md, {}
    html = md.renderer.render(md.parse(body, env), md.options, env)
    if env.get("cut"):
        return Markup(f'<p class="hint">Shown as plain text: nested deeper than the {NESTING} levels Markdown renders.</p>'
                      f'<pre class="plain">{escape(body)}</pre>')
    return Markup(nh3.clean(
        html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    ))


def weight(body: str, limit: int) -> int | None:
    """What rendering `body` as Markdown costs, in units of ~10-40 µs whatever its shape (each
    character markdown-it acts on, each line, every PLAIN_PER_UNIT other bytes, each cell of its
    tables), or None if it is longer than BODY_MAX or weighs more than `limit`."""
    if len(body) > BODY_MAX:
        return None
    data = body.encode()
    markup = len(data) - len(data.translate(None, MARKUP))
    cost = markup + (LINE_UNITS - 1) * data.count(b"\n") + (len(data) - markup) // PLAIN_PER_UNIT
    if cost <= limit and "|" in body:  # only then: the lines it reads are paid for
        cost += _table_cells(body)
    return cost if cost <= limit else None


def _table_cells(body: str) -> int:
    """At most how many cells the body's tables have: each delimiter row's width times the
    lines that follow it, up to a blank line (markdown-it pads each row to that width)."""
    cells = following = 0
    for line in reversed(body.splitlines()):
        if not line.strip():
            following = 0
            continue
        if "|" in line and "-" in line and TABLE_DELIMITER.issuperset(line):
            cells += (line.count("|") + 1) * following
        following += 1
    return cells


def plan(bodies: Iterable[str]) -> list[bool]:
    """Which of a page's bodies to render as Markdown, in order, while the page's weight stays
    within PAGE_MAX; the others are shown as plain text."""
    left, shown = PAGE_MAX, []
    for body in bodies:
        cost = weight(body, left)
        shown.append(cost is not None)
        left -= cost or 0
    return shown
