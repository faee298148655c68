"""Message bodies as safe HTML: markdown-it-py (CommonMark + tables and strikethrough, raw HTML
shown as text), then the nh3 sanitiser (an allow-list; links get rel="noopener noreferrer").
Images are never loaded: an image becomes a link to it (the CSP would block remote ones anyway)."""

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}  # no style: the CSP allows no inline styles


def _image_as_link(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = "".join(child.content for child in token.children or []) or src
    return f'<a href="{escape(src)}">[image: {escape(alt)}]</a>'


_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(["table", "strikethrough"])
_md.add_render_rule("image", _image_as_link)


@lru_cache(maxsize=4096)  # bodies never change once sent: a thread re-rendered costs nothing
def render(body: str) -> Markup:
    html = _md.render(body)
    return Markup(nh3.clean(
        html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    ))
