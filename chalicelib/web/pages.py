"""The pages of the web UI: each reads and writes through the tool registry (invoke), never SQL.

`WebUI(settings).handle(request) -> Response` is framework-free; chalicelib/transports/asgi.py
and app.py adapt their requests to it. Every page but the login needs a signed-in session when
authentication is on (chalicelib/web/session.py); every POST needs the session's CSRF token.

The person using the UI acts with the credential they signed in with. An admin (the overseer
role) acts for an agent (reads its inbox, marks read, acknowledges, retires) without that agent's
token; a reader or writer credential, which agents are given, keeps the agent-token check and
gets the API's 403. What a person writes is signed as a human sender (send_overseer_message).
"""

import dataclasses
import hashlib
import logging
import re
import secrets
import threading
from datetime import date
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from .. import invoke
from ..lambda_response import past_lambda
from ..ops import logs
from ..security import auth, ratelimit, scopes
from ..config import Settings
from ..errors import Forbidden, InvalidArgument, NotFound, ToolError, Unauthorized, internal_error
from ..tools import tools_by_name
from ..tools.agents import NAMES_LOOKED_UP
from ..tools.overseer import OVERSEER, writes_as
from ..tools.search import one_budget
from ..tools.search_syntax import marked, snippet_terms
from ..transports.rest import http_error
from . import downloads, markdown
from .http import CSP, Request, Response, methods
from .session import Session, Sessions

log = logging.getLogger(__name__)
THREAD_SHOWN = 500  # messages of one thread on one page (get_thread's largest page)
CONTEXT_SHOWN = 100  # messages before the one a link leads to, on a page past a long thread's first
NOBODY = auth.Principal("anonymous", "anonymous", role="reader", projects=frozenset())  # not signed in: reaches nothing
try:  # Swagger UI's assets, pinned on PyPI (local runtime only: the Lambda package serves no /docs)
    import fastapi_offline

    SWAGGER: Path | None = Path(fastapi_offline.__file__).parent / "static"
except ImportError:
    SWAGGER = None
HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGE_SIZE = 50
# Characters of rendered thread messages kept; when full, the cache starts over. A bound on
# their size, not their number: one message of 256 KiB of "<" renders to 1 MiB of HTML.
ARTICLES_KEPT_CHARS = 16 * 1024 * 1024
LIST_SHOWN = 200  # projects, agents or file reservations on a page; the next page a link away
ACKS_SHOWN = 50  # open acks on a project page, oldest first (list_ack_required)
SEARCH_SHOWN = 100  # hits on a search page (one search_messages page in each project)
PRODUCT_MAIL_SHOWN = 20  # the newest messages of a product's projects, on its page
THREADS_SHOWN = 50  # on a project page (list_threads reads a few rows per thread: thread_summaries)
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# form action -> (tool, the fields it takes from the form, what the page says once done, arguments of its own)
ACTIONS = {
    "read": ("mark_message_read", ("project_key", "agent_name", "message_id"), "Marked read", {}),
    "ack": ("acknowledge_message", ("project_key", "agent_name", "message_id"), "Acknowledged", {}),
    "retire": ("retire_agent", ("project_key", "agent_name"), "Retired", {}),
    "unretire": ("unretire_agent", ("project_key", "agent_name"), "Unretired", {}),
    "unarchive": ("unarchive_project", ("project_key",), "Unarchived", {}),
    "force_release": ("force_release_file_reservation", ("project_key", "file_reservation_id", "note"), "Released", {}),
    "accept_contact": ("respond_contact", ("project_key", "agent_name", "from_agent"), "Contact request accepted", {"accept": True}),
    "deny_contact": ("respond_contact", ("project_key", "agent_name", "from_agent"), "Contact request denied", {"accept": False}),
}
DONE = {action: said for action, (_, _, said, _) in ACTIONS.items()}
# A message's fields in the compose form (compose.html, and thread.html's reply): what the sign-in
# page carries through when a message was sent after its sign-in had ended (sign_in_again).
DRAFT_FIELDS = ("project_key", "to", "cc", "subject", "thread_id", "reply_to", "body_md", "importance", "ack_required")
# The inbox's views (view=): unified_inbox's, each a tab; none is All.
INBOX_VIEWS = {"urgent": "Urgent", "ack_pending": "Waiting for acks", "to_overseer": "To the Overseer"}
# An agent's page's filters of its inbox (only=): fetch_inbox's flags.
AGENT_FILTERS = {"unread": ("Unread", "unread_only"), "urgent": ("Urgent", "urgent_only"), "acks": ("Ack pending", "ack_pending_only")}


@lru_cache(maxsize=4096)  # the same project slugs and thread ids, row after row
def _quote(value) -> str:
    return quote(str(value), safe="")


def _message_url(root: str, project: str, thread_id: str, message_id) -> str:
    """A link to one message: the page of its thread that holds it (m=), scrolled to it."""
    return f"{root}/ui/thread?p={_quote(project)}&t={_quote(thread_id)}&m={message_id}#m{message_id}"


def _agent_key(address: str, here: str) -> tuple[str, str]:
    """(its project, its name in lower case) of an agent's address as project `here` writes it:
    one agent however its name is cased (names are case-insensitive)."""
    return _home(address, here), address.partition("@")[0].lower()


def _home(address: str, here: str) -> str:
    """The project of an agent's address as the tools write it in project `here`: Name@slug is
    another project's agent, a bare name here's. A message is stored in its sender's project, so
    a received message's thread is in its sender's home (the unified inbox names it outright)."""
    return address.partition("@")[2] or here


# A path of this site, in printable ASCII without a backslash: browsers drop tabs and newlines
# from a Location and read a backslash as "/", so "/\t/evil.example" would lead to another host.
_SAME_SITE = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")

# Markdown's marks, not every character they are made of: emphasis (* and _) but inside a word
# (respond_contact, 2*3), heading and quote marks, code ticks and fences, table pipes,
# strikethrough, task boxes.
_MARKUP = re.compile(r"(?<!\w)[*_]+|[*_]+(?!\w)|^[ \t]*(?:#{1,6}|>+)(?=\s)|`+|\||~~|\[[ xX]\]", re.M)


# A link or image as its words ("[the runbook](https://…)" reads "the runbook"; an excerpt cut
# within its address too), and a list item's leading marker (- , * , 1. , 2) ).
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*(?:\)|$)")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+", re.M)


def _plain(text: str) -> str:
    """A Markdown excerpt as plain words: a line of the inbox, a key point of a digest. A mark
    goes without a trace (`src/cart`. reads src/cart.), but a table's pipe, which parts cells."""
    text = _LIST_MARKER.sub("", _LINK.sub(r"\1", text))
    return " ".join(_MARKUP.sub(lambda mark: " " if mark[0] == "|" else "", text).split())


def _draft(form: dict) -> dict[str, str]:
    """The message a form holds (DRAFT_FIELDS: a compose form's, or a sign-in carrying one), or {}."""
    return {name: form[name] for name in DRAFT_FIELDS if name in form} if "project_key" in form else {}


def _form_page(request: Request, project: str = "") -> str:
    """The page a message's form was on (its Referer: a page of this site, not the sign-in a form
    shown after signing in stands on), else the project's compose page."""
    if _SAME_SITE.fullmatch(request.referer) and not request.referer.startswith("/ui/login"):
        return request.referer
    return "/ui/compose" + (f"?p={_quote(project)}" if project else "")


# A day as <input type=date> gives it, and the browser's offset from UTC at its midnight (ui.js).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_OFFSET = re.compile(r"[+-](?:0[0-9]|1[0-4]):[0-5][0-9]")


def _since(day: str, offset: str) -> str | None:
    """The search's "since": a date from the midnight that begins it where the person is (the
    page shows local times; ui.js sends the offset, tz=+05:30), else UTC's, as the form says
    without scripts. Anything else (a hand-edited URL) is refused in the UI's words: search_messages'
    own error sends an API caller to the tool's input schema, which means nothing to a person."""
    if not day:
        return None
    try:
        date.fromisoformat(day if _DATE.fullmatch(day) else "")
    except ValueError:
        raise InvalidArgument(f"“Since” is not a day: {day!r}.", "Choose one in the form's date field, or clear it.") from None
    return f"{day}T00:00:00{offset if _OFFSET.fullmatch(offset) else '+00:00'}"


def _kept(query: dict, *names: str) -> str:
    """The page's cursors among `names` (inbox=, agents=…) as "&name=value": an action on a later
    page comes back to that page, where its row is, not to the first."""
    return "".join(f"&{name}={_quote(query[name])}" for name in names if query.get(name))


def _path(pattern: str) -> Markup:
    """A path or glob, escaped, that a narrow column wraps after a / rather than inside a name."""
    return Markup("/<wbr>").join(pattern.split("/"))


def _message_id(text: str) -> int | None:
    """A message id given in a link (m=), or None: one below the largest, so the id after it is one too."""
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 2**63 - 1 else None


def _reply_subject(subject: str) -> str:
    """A reply's subject: "Re: " once, as send_overseer_message makes it from reply_to's."""
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"[:512]


def _lines(text: str) -> str:
    """A textarea's text with the line breaks agents write (\n): browsers send CRLF (and a lone CR may come)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _short_time(ts: str | None) -> str:
    """2026-11-30T08:11:15.123Z -> 11-30 08:11 (the full time is in the element's title)."""
    return f"{ts[5:10]} {ts[11:16]}" if ts and len(ts) >= 16 else (ts or "")


def _when(ts: str | None) -> Markup:
    """A stored time (always UTC) as a <time> that says so: "11-30 08:11 UTC", to the second in
    its title. ui.js shows it in the viewer's own zone, named the same way; the title stays UTC.
    The zone is joined to the time (a no-break space): a narrow column breaks it after the day at most."""
    if not ts:
        return Markup("")
    return Markup('<time datetime="{0}" title="{1} UTC">{2}&nbsp;<small class="tz">UTC</small></time>').format(
        ts, ts[:19].replace("T", " "), _short_time(ts))


def _live_token(inbox, reads: bool = False) -> str:
    """What /ui/live answers for a scope (a unified_inbox page of it, newest first): its newest
    message's id, and when its newest acknowledgement was given, since an acknowledgement changes
    ack marks (and Waiting for acks, and open acks) with no new mail; for a page showing unread
    marks (reads), when its newest first read was made too. All are index look-ups. A page
    without unread marks (a project's, a thread's) leaves reads out: agents read all the time."""
    token = f"{inbox.messages[0].id if inbox.messages else ''}.{inbox.newest_ack_ts or ''}"
    return f"{token}.{inbox.newest_read_ts or ''}" if reads else token


def _listed(inbox) -> set[str]:
    """The ids of an inbox page's messages (m= as a link gives them): where the page says what an
    action on one did by its row (base.html); None, an inbox that failed, lists none."""
    return {str(message.id) for message in inbox.messages} if inbox else set()


# Characters that reorder the text around them, unseen: the embeddings and overrides, the
# isolates and the direction marks. In a file's name "invoice\u202efdp.exe" reads "invoiceexe.pdf".
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _controls_shown(text: str) -> str:
    """Text as a page shows it where it must read as it is (a file's name, an error): each bidi
    control written out (⟨U+202E⟩), so that what it reads is what the text holds (a download
    keeps the exact name)."""
    return _BIDI_CONTROLS.sub(lambda control: f"⟨U+{ord(control[0]):04X}⟩", text)


def _isolated(text: str) -> str:
    """Text between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE: a <bdi> where no element may
    stand (the page's <title>, an <option>'s label), so that its controls reorder nothing after it."""
    return f"\u2068{text}\u2069"


def as_written(body: str) -> bytes:
    """A message body as a thread page writes it, its text escaped (a `&` is `&amp;`, 5 bytes where
    the tool's JSON has 1; Markdown's own tags aside: markdown.PAGE_MAX bounds them). On AWS Lambda
    a page of bodies is weighed so (app.py), so that the page's HTML fits the function's response."""
    return escape(body).encode()


class PageTooLarge(ToolError):
    """A page past the 6 MB of an AWS Lambda response as written there (past_lambda). 500: the
    page is the UI's making, not the person's request (413 is a request's content too large; the
    API's 422 asks its caller for less), and it stays in the 5xx the operator watches, as the 502
    it replaces did."""
    status = 500
    code = "page_too_large"


def page_too_large() -> PageTooLarge:
    return PageTooLarge("This page is larger than an AWS Lambda response can carry (6 MB, as written there).",
                        "Open a smaller part of it: a thread's earlier or later pages (Earlier or Later messages, or a link"
                        " to one of its messages), an older page of a list; the local server (uvicorn) shows it whole.")


def _size(size: int) -> str:
    """1536 -> 1.5 KB."""
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


def _number(number: int) -> str:
    """A count as people read it: 1,000,000 (a project's mail reaches millions)."""
    return f"{number:,}"


def _snippet(text: str, query: str) -> Markup:
    """A search_messages snippet as plain words, its hits marked. Its **…** around a hit cannot
    be told from the body's own (**bold**, a glob's src/**): the plain words are marked again
    as the tool marks them (search_syntax), then escaped."""
    parts = marked(_plain(text), snippet_terms(query)).split("**")
    return Markup("".join(f"<mark>{escape(part)}</mark>" if i % 2 else str(escape(part)) for i, part in enumerate(parts)))


class WebUI:
    PAGES = {
        "/": "inbox", "/ui": "inbox", "/ui/": "inbox", "/ui/projects": "projects", "/ui/project": "project",
        "/ui/agent": "agent", "/ui/thread": "thread", "/ui/search": "search", "/ui/compose": "compose",
        "/ui/act": "act", "/ui/digest": "digest", "/ui/login": "login", "/ui/logout": "logout", "/ui/live": "live", "/docs": "docs",
        "/ui/attachment": "attachment", "/ui/products": "products", "/ui/product": "product",
    }

    def __init__(self, settings: Settings, limiter: ratelimit.RateLimiter | None = None,
                 authenticator: auth.Authenticator | None = None, serves_docs: bool = False) -> None:
        self.settings = settings
        # Whether the transport answers /docs (the local server, with Swagger UI's files): the
        # navigation links it only then (the Chalice app has no /docs: API Gateway's JSON 403).
        self.serves_docs = serves_docs
        self.sessions = Sessions(settings, authenticator)  # the transport's, as the limiter
        self.limiter = limiter or ratelimit.RateLimiter(settings)  # the transport's: one budget for the API and the pages
        self.tools = tools_by_name()
        # The same tools without their agent-token check, for an admin session (run()).
        self.overseer_tools = {name: dataclasses.replace(tool, acts_as=()) for name, tool in self.tools.items()}
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True, lstrip_blocks=True, auto_reload=False,
        )
        self.env.filters.update(when=_when, markdown=markdown.render, snippet=_snippet, q=_quote, plain=_plain,
                                size=_size, number=_number, controls_shown=_controls_shown, isolated=_isolated, reply_subject=_reply_subject, home=_home, path=_path, kept=_kept)
        self.env.globals.update(assets=self.assets, article=self.article, attachment_url=downloads.url, message_url=_message_url,
                                shows_inline=lambda attachment: downloads.shows_inline(attachment, settings),
                                # a form's idempotency key, new with each page: a double click on Send sends once
                                sending_key=lambda: secrets.token_urlsafe(18))
        # A thread's messages never change, and live refresh re-renders whole threads: each
        # message's HTML is kept (a cache, safe to lose).
        self._articles: dict[tuple, Markup] = {}
        self._articles_chars = 0
        self._articles_lock = threading.Lock()  # pages render in threads

    def principal(self, cookie_header: str | None):
        """The signed-in principal of a Cookie header, or None (for /openapi.json under /docs)."""
        from .http import cookies

        session = self.sessions.read(cookies(cookie_header))
        return session.principal() if session is not None and self.sessions.signed_in(session) else None

    @staticmethod
    def serves(path: str) -> bool:
        """Its pages, and any other address under /ui/: a mistyped one gets its 404 page."""
        return path in WebUI.PAGES or path.startswith("/ui/")

    @cached_property
    def assets(self) -> dict[str, str]:
        """name -> URL path with a content hash, so browsers may cache them for long."""
        found = {}
        for file in STATIC.iterdir():
            found[file.name] = f"/ui/static/{file.name}?v={hashlib.sha256(file.read_bytes()).hexdigest()[:10]}"
        return found

    def article(self, message, first_subject: str, root: str, as_markdown: bool, typed_lines: bool = False) -> Markup:
        """One message of a thread page; `typed_lines`: its sender is a person (markdown.render)."""
        # Its bcc recipients too: the admin's page names them, another session's must not get that HTML.
        key = (message.id, first_subject, root, as_markdown, typed_lines, tuple(message.bcc))
        html = self._articles.get(key)
        if html is None:
            html = Markup(self.env.get_template("message.html").render(
                m=message, first_subject=first_subject, root=root, as_markdown=as_markdown, typed_lines=typed_lines))
            with self._articles_lock:
                if self._articles_chars + len(html) > ARTICLES_KEPT_CHARS:
                    self._articles, self._articles_chars = {}, 0
                self._articles[key] = html
                self._articles_chars += len(html)
        return html

    # --- dispatch ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        page = self.PAGES.get(request.path)
        static = request.path.startswith("/ui/static/")
        allowed = methods(request.path)
        # Before the CSRF check, which would call it an expired form. (An address that is no page
        # gets its 404 page, a form sent to it too.)
        if (page or static) and request.method not in allowed:
            error = http_error(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})  # as the Chalice app's 405
            return Response(405, orjson.dumps(error.to_dict()), "application/json", dict(error.headers))
        if static:
            return self.static(request.path.removeprefix("/ui/static/"))
        session = self.sessions.read(request.cookies)
        fresh = None
        if session is None and self.sessions.open:
            session = fresh = self.sessions.new()  # a session only to tie CSRF tokens to this browser
        # The page's tool calls run as the signed-in person's credential (its role and projects);
        # without authentication, as the loopback caller (AUTH_MODE=none: everything).
        signed = session.principal() if session else None
        if signed is not None:  # the request's log line names who signed in, as an API call's names its credential
            logs.note(caller=signed.subject)
        as_principal = auth.current.set(signed or (auth.ANONYMOUS if self.sessions.open else NOBODY))
        try:
            if self.limiter.enabled:  # as the API's calls: per person signed in (else per address), a form from the write budget
                self.limiter.check(ratelimit.caller(signed or auth.ANONYMOUS, request.client), write=request.method == "POST")
            if page is None:  # a mistyped or shortened address under /ui/: this page, not the API's JSON 404
                response = self.error(request, session, NotFound(f"No such page: {request.path}.",
                                                                 "Check the address, or start from the inbox or the projects."))
            elif request.too_large:  # its form was not read (nor its CSRF token): nothing is done
                response = self.too_large(request, session)
            elif request.method not in ("GET", "HEAD") and not self.sessions.csrf_ok(session, request.form.get("csrf")):
                response = self.refuse_forgery(request, session)
            elif page == "login":
                response = self.login(request, session)
            elif not self.sessions.signed_in(session):
                response = self.sign_in_first(request)
            else:
                response = getattr(self, page)(request, session)
                if response.content_type.startswith("text/html") and past_lambda(response.body):
                    # On Lambda (app.py), a page its response cannot hold: this page, not API Gateway's bare 502.
                    log.warning("web page %s past a Lambda response: %d bytes of HTML", request.path, len(response.body))
                    response = self.error(request, session, page_too_large())
        except ToolError as exc:
            response = self.error(request, session, exc)
        except Exception:
            log.exception("web page %s failed", request.path)
            response = self.error(request, session, internal_error())
        finally:
            auth.current.reset(as_principal)
        if fresh is not None and "Set-Cookie" not in response.headers:
            response.headers["Set-Cookie"] = self.sessions.cookie(fresh, request.tls)
        response.headers.setdefault("Cache-Control", "no-store")
        if response.content_type.startswith("text/html"):
            response.headers["Content-Security-Policy"] = CSP
            # Not no-referrer: under it a browser sends its forms with "Origin: null", which the
            # DNS-rebinding check (security/rebinding.py) rightly refuses. Other sites still get none.
            response.headers["Referrer-Policy"] = "same-origin"
        return response

    def run(self, tool_name: str, /, **arguments):  # (a tool may take a `name`: get_attachment)
        """A tool's output, called as the signed-in person (handle() set the principal). An admin
        oversees agents and needs no agent's token; any other role is what agents are given, so
        it keeps the check the API makes. The credential's role and projects hold either way
        (security/scopes.py)."""
        tool = (self.overseer_tools if self.oversees() else self.tools)[tool_name]
        return invoke.call(tool, {k: v for k, v in arguments.items() if v is not None}, self.settings)

    @staticmethod
    def oversees() -> bool:
        """Whether the signed-in person is an admin: the overseer, who writes as a human, acts for
        agents without their tokens and counts bcc recipients as any others (include_bcc: the views
        of other sessions keep a bcc the sender's secret) (handle() set the principal)."""
        return invoke.caller(None).role == "admin"

    def sees_all(self) -> bool:
        """Whether the signed-in person reads every agent's mail and acts for agents: an admin, or
        anyone while agents need no tokens (other roles are what agents are given: security/scopes.py)."""
        return self.oversees() or not auth.agent_tokens_required(self.settings)

    def reads_inbox(self) -> bool:
        """Whether the signed-in person reads the inbox, every project's newest mail: one who sees
        all with a credential for every project (unified_inbox without a project refuses one scoped
        to some: docs/security.md). Others start from the projects."""
        return self.sees_all() and invoke.caller(None).projects is None

    def may(self, tool_name: str) -> bool:
        """Whether the signed-in credential's role takes this tool (security/scopes.py): a reader
        "sees all" without agent tokens, but is offered no button its role would have refused."""
        return scopes.has_role(invoke.caller(None), scopes.required_role(self.tools[tool_name]))

    def page(self, request: Request, session: Session | None, template: str, status: int = 200, **context) -> Response:
        body = self.env.get_template(template).render(
            root=request.root, csrf=self.sessions.csrf(session) if session else "", request=request,
            signed_in=self.sessions.signed_in(session) and not self.sessions.open,
            sees_all=self.sees_all(), reads_inbox=self.reads_inbox(),  # what the page offers
            speaks=self.oversees(),  # (send_overseer_message: admin; and the views count bcc recipients: include_bcc)
            may=self.may,  # and, of what it sees, what its role may do
            max_form_bytes=self.settings.max_body_bytes, form_limit=self.form_limit,  # a form past it is refused unread
            done=DONE.get(request.query.get("done", "")),  # what the action just taken did (act)
            serves_docs=self.serves_docs,  # the navigation's API link
            **context,
        )
        return Response(status, body.encode())

    def redirect(self, request: Request, to: str) -> Response:
        if not _SAME_SITE.fullmatch(to):  # `next` and `back` come from the request: our own pages only
            to = "/"
        return Response(303, b"", headers={"Location": request.root + to})

    def error(self, request: Request, session: Session | None, exc: ToolError) -> Response:
        back = request.form.get("back", "")  # an action refused: the page it was taken on
        response = self.page(request, session, "error.html", status=exc.status, error=exc, back=back if _SAME_SITE.fullmatch(back) else None)
        response.headers.update(exc.headers)  # a 429's Retry-After
        return response

    def too_large(self, request: Request, session: Session | None) -> Response:
        """A form past MAX_BODY_BYTES, refused unread: the UI's page saying the limit, not the API's
        JSON. The browser keeps the draft: its Back returns to the form as it was (the page's link
        does with scripts, ui.js; without, no link can, and it opens the page the form was on)."""
        exc = ToolError(f"This form is larger than the server takes: {self.form_limit()}.",
                        "Go back to the form with your browser's Back button (it keeps what you wrote), shorten it and send it again.")
        exc.status, exc.code = 413, "payload_too_large"
        return self.page(request, session, "error.html", status=413, error=exc, back=None, go_back=_form_page(request))

    def form_limit(self) -> str:
        """What a form may carry (MAX_BODY_BYTES), as the page says it: browsers send a form
        percent-encoded, so only ASCII letters and digits take a byte each."""
        limit = self.settings.max_body_bytes
        return (f"{_size(limit)} as the browser sends it, where a letter or digit takes a byte and another character"
                f" 3 to 12 (about {limit // 6:,} Arabic or {limit // 12:,} emoji characters)")

    def refuse_forgery(self, request: Request, session: Session | None) -> Response:
        """A form without this session's CSRF token: sent before the session changed (without
        authentication its key is random per process: a restart expires every open form; with it,
        the sign-in ended), or from another site. Nothing is done. Reloading would send the same
        stale token: a message the browser says this site's own page sent comes back as its form,
        with the draft and a fresh token, to be checked and sent again, or, signed out, as the
        sign-in page carrying it (sign_in_again). Another site's never comes back (it would be a
        click from being sent in the overseer's name); any other form's page links back to the page
        it came from."""
        form, draft = request.form, _draft(request.form)
        # This site's own page, sent once its sign-in had ended (UI_SESSION_HOURS, a JWT's exp, Sign out elsewhere).
        ended = request.same_origin and not self.sessions.signed_in(session) and request.path != "/ui/login"
        if request.path == "/ui/compose" and ended:
            return self.sign_in_again(request, session, draft)
        # (/ui/login: the sign-in page carrying a message, sent again once signed in: reloaded, or signed in elsewhere)
        if draft and request.path in ("/ui/compose", "/ui/login") and request.same_origin and self.sessions.signed_in(session) \
                and self.oversees():
            exc = ToolError("This form had expired or did not come from this site: nothing was sent.",
                            "Check what it says, then send it again.")
            exc.status, exc.code = 403, "csrf"
            return self.compose_form(request, session, draft["project_key"], draft, exc)
        if ended:
            exc = ToolError("Your sign-in has ended (it expired, or you signed out): nothing was done.",
                            "Open the page again (the link below): sign in, then do it again.")
        else:
            exc = ToolError("This form has expired or did not come from this site: nothing was done.",
                            "Open the page again (the link below) and submit the form from there.")
        exc.status, exc.code = 403, "csrf"
        back = form.get("back", "")
        if request.path == "/ui/login":  # the sign-in page again, for the page it was to lead to
            back = "/ui/login?" + urlencode({"next": form.get("next") or "/"})
        elif request.path == "/ui/compose":
            back = _form_page(request, form.get("project_key", ""))
        return self.page(request, session, "error.html", status=403, error=exc, back=back if _SAME_SITE.fullmatch(back) else None)

    def sign_in_again(self, request: Request, session: Session | None, draft: dict) -> Response:
        """A message this site's page sent once its sign-in had ended: nothing is sent. The sign-in
        page says so and carries the draft (shown, to copy; ui.js keeps it in the tab for a sign-in
        page the browser's Back leads to); signing in shows it as its form again (login), which
        sends nothing until Send is pressed. It leads back to the page the form was on."""
        return self.sign_in_page(request, session, _form_page(request, draft.get("project_key", "")), status=401,
                                 error="Your sign-in has ended (it expired, or you signed out), so nothing was sent.", draft=draft)

    def sign_in_first(self, request: Request) -> Response:
        if request.method == "GET" and request.path != "/ui/live":
            back = request.path + ("?" + urlencode(request.query) if request.query else "")
            return self.redirect(request, "/ui/login?" + urlencode({"next": back}))
        body = orjson.dumps(Unauthorized("Sign in first.", "Open /ui/login.").to_dict())
        return Response(401, body, "application/json")

    def static(self, name: str) -> Response:
        folder = STATIC
        if name.startswith("swagger/") and SWAGGER is not None:
            folder, name = SWAGGER, name.removeprefix("swagger/")
        file = folder / name
        if "/" in name or name.startswith(".") or file.suffix not in STATIC_TYPES or not file.is_file():
            return Response(404, b"not found", "text/plain")
        return Response(200, file.read_bytes(), STATIC_TYPES[file.suffix], {"Cache-Control": "public, max-age=86400"})

    # --- pages ------------------------------------------------------------------------------

    def login(self, request: Request, session: Session | None) -> Response:
        if self.sessions.open:
            return self.redirect(request, "/")
        target = request.query.get("next") or request.form.get("next") or "/"
        if request.method != "POST":
            return self.sign_in_page(request, session, target)
        # A message carried through the sign-in (sign_in_again): only from this site's own page,
        # never another site's fields made into a form with a valid token.
        draft = _draft(request.form) if request.same_origin else {}
        token = request.form.get("token", "")
        try:
            with self.limiter.guessing_bounded(request.client, presented=bool(token.strip())):  # as the API's 401s
                new = self.sessions.login(token)
        except Unauthorized as exc:
            return self.sign_in_page(request, session, target, status=401, error=exc.message, draft=draft)
        except ratelimit.CredentialsRefused as exc:
            response = self.sign_in_page(request, session, target, status=429, error=f"{exc.message} {exc.hint}", draft=draft)
            response.headers.update(exc.headers)
            return response
        response = (self.draft_again(request, new, draft) if draft else None) or self.redirect(request, target)
        response.headers["Set-Cookie"] = self.sessions.cookie(new, request.tls)
        return response

    def sign_in_page(self, request: Request, session: Session | None, target: str, status: int = 200,
                     error: str | None = None, draft: dict | None = None) -> Response:
        """The sign-in form, leading to `target` (and carrying a `draft`, sign_in_again). Without a
        session, a pre-login one is made, so that the form has a CSRF token."""
        fresh = self.sessions.new() if session is None else None
        response = self.page(request, session or fresh, "login.html", status=status, next=target, error=error,
                             draft=draft or {}, draft_fields=DRAFT_FIELDS,
                             form_page=target if _SAME_SITE.fullmatch(target) else None)  # `next` is the request's: linked only if ours
        if fresh is not None:
            response.headers["Set-Cookie"] = self.sessions.cookie(fresh, request.tls)
        return response

    def draft_again(self, request: Request, new: Session, draft: dict) -> Response | None:
        """Just signed in (`new`) with a message carried through: its compose form holding the draft
        and the new session's token, to check and send (nothing is sent before Send). None for a
        credential that may not write as the overseer: it goes on to the page asked for."""
        as_new = auth.current.set(new.principal())
        try:
            if not self.oversees():
                return None
            return self.compose_form(request, new, draft["project_key"], draft, None,
                                     notice="Signed in again. Nothing has been sent yet: check your message, then send it.")
        except ToolError as exc:  # (its project gone, or beyond this credential's): signed in all the same
            return self.error(request, new, exc)
        finally:
            auth.current.reset(as_new)

    def logout(self, request: Request, session: Session) -> Response:
        if request.method != "POST":
            return self.redirect(request, "/")
        response = self.redirect(request, "/ui/login" if not self.sessions.open else "/")
        response.headers["Set-Cookie"] = self.sessions.cookie(None, request.tls)
        return response

    def inbox(self, request: Request, session: Session) -> Response:
        if not self.reads_inbox():  # every project's and agent's mail: what this credential may not read
            return self.redirect(request, "/ui/projects")
        before, view = request.query.get("before") or None, request.query.get("view") or None
        inbox = self.run("unified_inbox", before_id=before, view=view, limit=PAGE_SIZE, include_bcc=self.oversees())
        latest = _live_token(inbox, reads=True)
        live = None if before else self.live_url(request, view=view, reads=True)  # an older page stays as it is
        return self.page(request, session, "inbox.html", inbox=inbox, live=live, latest=latest, nav="inbox",
                         view=view, views=INBOX_VIEWS)

    def projects(self, request: Request, session: Session) -> Response:
        listed = self.run("list_projects", include_archived=True, limit=LIST_SHOWN, cursor=request.query.get("after") or None)
        details = [self.run("get_project", project_key=p.slug) for p in listed.projects]
        return self.page(request, session, "projects.html", projects=details, next_cursor=listed.next_cursor, nav="projects")

    def products(self, request: Request, session: Session) -> Response:
        listed = self.run("list_products", limit=LIST_SHOWN, cursor=request.query.get("after") or None)
        return self.page(request, session, "products.html", products=listed.products, next_cursor=listed.next_cursor, nav="products")

    def product(self, request: Request, session: Session) -> Response:
        """A product's projects, the newest mail across them, one agent's inbox across them (as=,
        fetch_inbox_product) and a search of it (search_messages_product). Its projects are those
        the credential reaches (get_product narrows them: security/scopes.py)."""
        product = self.run("get_product", product_key=request.query.get("k", ""))
        query, cursor = request.query.get("q", "").strip(), request.query.get("cursor") or None
        reader = request.query.get("as", "").strip()
        reads_mail = self.sees_all()  # else no mail and no search form: search_messages_product would refuse it
        found, error, mail, live, latest, inbox = None, None, [], None, "", None
        if reader and reads_mail and not query:  # one agent's view: the product tool checks its name and scope
            latest = self.latest(product=product.product_key, reads=True)
            live = self.live_url(request, product=product.product_key, reads=True)
            try:
                inbox = self.run("fetch_inbox_product", product_key=product.product_key, agent_name=reader, limit=PAGE_SIZE,
                                 cursor=request.query.get("inbox") or None)
            except ToolError as exc:
                error = exc
        elif query and reads_mail:
            try:
                found = self.run("search_messages_product", product_key=product.product_key, query=query,
                                 limit=SEARCH_SHOWN, cursor=cursor)
            except ToolError as exc:
                error = exc
        elif reads_mail:  # the newest across its projects (those of the credential's scope), kept live
            newest = self.run("unified_inbox", product_key=product.product_key, limit=PRODUCT_MAIL_SHOWN, include_bcc=self.oversees())
            mail, latest = newest.messages, _live_token(newest, reads=True)
            live = self.live_url(request, product=product.product_key, reads=True)
        return self.page(
            request, session, "product.html", product=product, nav="products", reads_mail=reads_mail, mail=mail,
            live=live, latest=latest, reader=reader, inbox=inbox, listed=_listed(inbox),
            query=query, found=found, error=error, hits=[(hit.project, hit) for hit in found.results] if found else [],
            more_url=request.root + "/ui/product?" + urlencode({"k": product.product_key, "q": query, "cursor": found.next_cursor})
            if found and found.next_cursor else None,
        )

    def project(self, request: Request, session: Session) -> Response:
        project = self.run("get_project", project_key=request.query.get("p", ""))
        sees_all = self.sees_all()  # else the agents, reservations and slots only: the mail is the agents'
        latest = self.latest(project.slug) if sees_all else ""  # before the rest: a change while they are read is seen
        agents = self.run("list_agents", project_key=project.slug, include_retired=True, limit=LIST_SHOWN,
                          cursor=request.query.get("agents") or None)
        reservations = self.run("list_file_reservations", project_key=project.slug, limit=LIST_SHOWN,
                                cursor=request.query.get("reservations") or None)
        return self.page(
            request, session, "project.html", project=project, nav="projects", agents=agents, reservations=reservations,
            threads=self.run("list_threads", project_key=project.slug, limit=THREADS_SHOWN, cursor=request.query.get("threads") or None)
            if sees_all else None,
            slots=self.run("list_build_slots", project_key=project.slug, limit=LIST_SHOWN, cursor=request.query.get("slots") or None),
            acks=self.open_acks(project.slug) if sees_all else None,
            live=self.live_url(request, project.slug) if sees_all else None, latest=latest,
        )

    def archived(self, project: str) -> str | None:
        """Since when the project is archived (read-only: no mail is sent in it or to it), or None."""
        return self.run("get_project", project_key=project).archived_ts

    def open_acks(self, project: str) -> dict:
        """The project's oldest acknowledgements not given yet, one per recipient, each marked when
        list_ack_overdue counts it overdue; `more`: others wait beyond them."""
        everyone = {"project_key": project, "limit": ACKS_SHOWN + 1, "include_bcc": self.oversees()}
        waiting = self.run("list_ack_required", **everyone).messages
        overdue = self.run("list_ack_overdue", **everyone).messages
        return {"items": waiting[:ACKS_SHOWN], "more": len(waiting) > ACKS_SHOWN,
                "overdue": {(m.id, m.recipient) for m in overdue}}

    def agent(self, request: Request, session: Session) -> Response:
        query = request.query
        profile = self.run("whois", project_key=query.get("p", ""), agent_name=query.get("a", ""))
        mine = {"project_key": profile.project, "agent_name": profile.name}
        # Before its mail, so that a change while it is read is seen; only for a session that reads
        # every agent's (else /ui/live answers nothing, and fetch_inbox says why it refuses).
        live = self.sees_all()
        latest = self.latest(profile.project, reads=True) if live else ""
        only = query.get("only", "")
        if only and only not in AGENT_FILTERS:
            raise NotFound(f"No inbox filter {only!r}.", f"One of: {', '.join(AGENT_FILTERS)}; or none, for all.")
        flags = {AGENT_FILTERS[only][1]: True} if only else {}
        inbox = self.run("fetch_inbox", **mine, **flags, limit=PAGE_SIZE, cursor=query.get("inbox") or None)
        return self.page(
            request, session, "agent.html", agent=profile, nav="projects", only=only,
            archived=self.archived(profile.project) if self.oversees() else None,  # (then no Write or contact answer)
            filters={name: label for name, (label, _) in AGENT_FILTERS.items()}, inbox=inbox, listed=_listed(inbox),
            outbox=self.run("fetch_outbox", **mine, limit=20, cursor=query.get("outbox") or None),
            contacts=self.run("list_contacts", **mine, limit=LIST_SHOWN, cursor=query.get("contacts") or None),
            live=self.live_url(request, profile.project, reads=True) if live else None, latest=latest,
        )

    def thread(self, request: Request, session: Session) -> Response:
        key, thread_id = request.query.get("p", ""), request.query.get("t", "")
        thread, from_start = self.thread_page(key, thread_id, request.query)
        if not thread.messages:  # only `after` gets here (get_thread says when a thread is unknown): at or past its end
            raise NotFound(f"No messages after {request.query.get('after')} in thread {thread_id!r}.",
                           "Open the thread from its start (without after=), or from the inbox.")
        project = thread.messages[0].project
        # A thread on more than one page: its subject and count are the whole thread's
        # (summarize_thread reads its summary), not the page's.
        whole = from_start and thread.next_cursor is None
        summary = None if whole else self.run("summarize_thread", project_key=project, thread_id=thread_id)
        # Markdown costs up to ~100x more on hostile bodies than on prose: a page renders so much of
        # it, the rest is plain text (markdown.py).
        shown = markdown.plan(m.body_md or "" for m in thread.messages)
        # The digest, with who has yet to acknowledge which message, comes from /ui/digest once
        # the page is shown (summarize_thread reads the whole thread again: the page does not wait).
        return self.page(
            request, session, "thread.html", thread=thread, project=project, nav="inbox", from_start=from_start,
            subject=summary.subject if summary else thread.messages[0].subject,
            count=summary.message_count if summary else len(thread.messages),
            newest=None if thread.next_cursor is None else self.newest_ids(project, thread_id, limit=1).messages[0].id,
            # New messages go on the last page: an earlier one has nothing to refresh (its last
            # message is never the thread's newest, and it reloaded itself at every poll).
            live=self.live_url(request, project, thread_id) if thread.next_cursor is None else None,
            latest=self.latest(project, thread_id) if thread.next_cursor is None else "",
            digest_url=request.root + "/ui/digest?" + urlencode({"p": project, "t": thread_id}),
            people=self.participants(project, thread.messages) if self.oversees() else [],  # for the reply form
            archived=self.archived(project) if self.oversees() else None,  # (then it takes no reply)
            as_markdown={m.id for m, markdown_ok in zip(thread.messages, shown) if markdown_ok},
        )

    def thread_page(self, key: str, thread_id: str, query: dict) -> tuple:
        """The page of the thread a link asks for (one get_thread page: at most THREAD_SHOWN
        messages and ~4 MiB of bodies, so its HTML stays bounded), and whether it starts at the
        thread's first message: the next page (after=, get_thread's cursor), the previous one
        (before=, a message id: the messages just before it, fewer when the thread starts within
        them, so that none shows twice), the one holding a message (m=: a link to it), or the first."""
        def page(cursor, limit=THREAD_SHOWN):  # bcc recipients too for the overseer, as the digest's (include_bcc)
            return self.run("get_thread", project_key=key, thread_id=thread_id, limit=limit, cursor=cursor,
                            include_bcc=self.oversees())

        def holds(thread) -> bool:
            return any(m.id == wanted for m in thread.messages)

        if query.get("before"):
            cursor, count = self.cursor_before(key, thread_id, query["before"], THREAD_SHOWN)
            shown = page(cursor, count or THREAD_SHOWN)
            if len(shown.messages) < count:  # its bodies cut it: the page just before holds as many (on Lambda, a few)
                cursor, count = self.cursor_before(key, thread_id, query["before"], len(shown.messages))
                shown = page(cursor, count)
            return shown, cursor is None
        after, wanted = query.get("after") or None, _message_id(query.get("m", "")[:20])
        first = page(after)
        if after or first.next_cursor is None or wanted is None or holds(first):
            return first, after is None
        # Past the first page: a page opening a few messages before it, with room for the newer.
        cursor, _ = self.cursor_before(key, thread_id, wanted + 1, CONTEXT_SHOWN)
        shown = page(cursor)
        if holds(shown):
            return shown, cursor is None
        shown = page(wanted - 1 or None)  # the bodies before it filled a page: the page that starts with it
        return (shown, False) if holds(shown) else (first, True)

    def cursor_before(self, key: str, thread_id: str, before, count: int) -> tuple[int | None, int]:
        """get_thread's cursor for a page opening up to `count` messages before message `before`
        (unified_inbox walks the thread back), and how many there are: None when the thread
        starts within them. One more is looked for: exactly `count` may be all there is."""
        ids = []
        while len(ids) <= count:
            older = self.newest_ids(key, thread_id, before_id=before, limit=min(LIST_SHOWN, count + 1 - len(ids)))
            ids += [m.id for m in older.messages]
            if older.next_before_id is None:
                break
            before = older.next_before_id
        return (ids[count - 1] - 1 if len(ids) > count else None), min(len(ids), count)

    def participants(self, project: str, messages) -> list[str]:
        """The thread's active agents (not people), in order of appearance: whom a reply goes to.
        Each as the thread's project writes it (Name@slug: another project's), as a reply takes it."""
        seen = dict.fromkeys(address for message in messages for address in (message.sender, *message.to, *message.cc))
        active = self.active_agents(project, seen)
        return [address for address in seen if _agent_key(address, project) in active]

    def active_agents(self, project: str, addresses) -> set[tuple[str, str]]:
        """Which of these addresses as `project` writes them (Name, or Name@other-project) are active
        agents' (not people's), as _agent_key's: one list_agents of their names for each project they
        are in (NAMES_LOOKED_UP at a time), not a whois apiece (a thread of 300 agents made 300
        calls, on every refresh). A project beyond the credential's is left out."""
        homes: dict[str, list[str]] = {}
        for home, name in dict.fromkeys(_agent_key(address, project) for address in addresses):
            homes.setdefault(home, []).append(name)
        active = set()
        for home, names in homes.items():
            for start in range(0, len(names), NAMES_LOOKED_UP):
                named = names[start:start + NAMES_LOOKED_UP]
                try:
                    found = self.run("list_agents", project_key=home, names=named, limit=len(named)).agents
                except (NotFound, Forbidden):
                    break
                active.update((home, agent.name.lower()) for agent in found if agent.kind == "agent")
        return active

    def profile(self, project: str, name: str):
        """whois's profile of the one agent or person of the project by this name (what a page of
        list_agents may not reach); None if there is none, or it is beyond the credential's projects."""
        try:
            return self.run("whois", project_key=project, agent_name=name)
        except (NotFound, Forbidden):
            return None

    def digest(self, request: Request, session: Session) -> Response:
        """The thread's summary (summarize_thread) as a page: the thread page's ui.js loads its
        digest in place; without scripts, the thread page links to it."""
        key, thread_id = request.query.get("p", ""), request.query.get("t", "")
        digest = self.run("summarize_thread", project_key=key, thread_id=thread_id, include_bcc=self.oversees())
        return self.page(request, session, "digest.html", digest=digest, project=key, thread_id=thread_id, nav="inbox")

    def search(self, request: Request, session: Session) -> Response:
        if not self.sees_all():  # search_messages would refuse it on submit: no form to fill in vain
            raise Forbidden("Searching the agents' mail needs an admin credential while agent tokens are on.",
                            "An agent searches its own mail: search_messages with its agent_name and token (API or MCP).")
        query, key = request.query.get("q", "").strip(), request.query.get("p", "")
        sender, importance, since, tz = (request.query.get(name, "").strip() for name in ("sender", "importance", "since", "tz"))
        # Archived ones too: read-only, their mail is read (and searched) as before (docs/contacts.md).
        listed = self.run("list_projects", include_archived=True, limit=LIST_SHOWN)
        projects = [p.slug for p in listed.projects]
        hits, error, more, indexing = [], None, {}, None  # more: {project: search_messages' next_cursor}
        try:
            since_ts = _since(since, tz)
        except InvalidArgument as exc:
            since_ts, error = None, exc
        filters = {"sender": sender or None, "importance": [importance] if importance else [], "since_ts": since_ts}
        if query and not error:
            try:
                with one_budget():  # SEARCH_TIMEOUT_MS for the whole page, not for each of its projects
                    for slug in [key] if key else projects:
                        try:
                            found = self.run("search_messages", project_key=slug, query=query, limit=SEARCH_SHOWN,
                                             cursor=(request.query.get("cursor") or None) if key else None, **filters)
                        except NotFound:
                            if key or not sender:
                                raise
                            continue  # the sender is no agent of this project: nothing of its mail matches
                        hits += [(slug, hit) for hit in found.results]
                        indexing = found.indexing or indexing  # (one index for every project)
                        if found.next_cursor:
                            more[slug] = found.next_cursor
            except ToolError as exc:
                error = exc
            # One index for every project: comparable scores; ties newest first, as search_messages lists them.
            hits.sort(key=lambda pair: (pair[1].score, -pair[1].id))
        same = {"q": query, "sender": sender, "importance": importance, "since": since, "tz": tz}
        if key:  # its next page
            more_urls = {key: self.search_url(request, p=key, cursor=more[key], **same)} if key in more else {}
        else:  # each project with more hits than this page shows, searched on its own
            cut = {slug for slug, _ in hits[SEARCH_SHOWN:]}
            more_urls = {slug: self.search_url(request, p=slug, **same) for slug in sorted({*more, *cut})}
        archived = {p.slug for p in listed.projects if p.archived_ts}
        return self.page(request, session, "search.html", query=query, project=key, projects=projects, archived=archived,
                         hits=hits[:SEARCH_SHOWN],
                         error=error, sender=sender, importance=importance, since=since, nav="search", more_urls=more_urls,
                         indexing=indexing,
                         more_projects=not key and listed.next_cursor is not None)

    @staticmethod
    def search_url(request: Request, **params) -> str:
        return request.root + "/ui/search?" + urlencode({name: value for name, value in params.items() if value})

    def compose(self, request: Request, session: Session) -> Response:
        if not self.oversees():  # send_overseer_message is the admin's: no form to fill in vain
            raise Forbidden("Writing to agents as the overseer needs an admin credential.",
                            "Sign in with an admin token; agents write with send_message and their own token.")
        key = request.query.get("p") or request.form.get("project_key", "")
        draft, error = {"to": request.query.get("to", "")}, None
        if request.method == "POST":
            form = request.form
            to = [name.strip() for name in form.get("to", "").replace(";", ",").split(",") if name.strip()]
            cc = [name.strip() for name in form.get("cc", "").replace(";", ",").split(",") if name.strip()]
            try:
                sent = self.run(
                    "send_overseer_message", project_key=key, to=to, cc=cc, subject=form.get("subject") or None,
                    body_md=_lines(form.get("body_md", "")), importance=form.get("importance") or "normal",
                    ack_required=form.get("ack_required") == "on", reply_to=form.get("reply_to") or None,
                    thread_id=form.get("thread_id") or None, idempotency_key=form.get("idempotency_key") or None,
                ).message
            except ToolError as exc:  # the form again, with what was written and what was wrong with it
                draft, error = form, exc
            else:  # the page of its thread that holds it (a long thread's first page may not)
                return self.redirect(request, _message_url("", sent.project, sent.thread_id, sent.id))
        return self.compose_form(request, session, key, draft, error)

    def compose_form(self, request: Request, session: Session, key: str, draft: dict, error: ToolError | None,
                     notice: str | None = None) -> Response:
        """The compose form of project `key` (none: a project to choose first), holding `draft`;
        of an archived project, which takes no mail, the page says so instead (its draft kept to copy)."""
        # No project yet: a page of them to pick from (oldest first, "More projects" past it), or any typed.
        projects = None if key else self.run("list_projects", limit=LIST_SHOWN, cursor=request.query.get("after") or None)
        # Archived: send_overseer_message would refuse the form once written (409), however it came
        # (a link, a bookmark, a draft carried through the sign-in): no form, but why and where to unarchive.
        archived = self.archived(key) if key else None
        listed = self.run("list_agents", project_key=key, include_retired=True, limit=LIST_SHOWN).agents if key and not archived else []
        agents = [a.name for a in listed if a.kind == "agent" and a.retired_ts is None]
        named = self.profile(key, OVERSEER) if key else None
        taken = named is not None and named.kind == "agent"  # registered before the name was reserved
        return self.page(request, session, "compose.html", status=error.status if error else 200, projects=projects, project=key,
                         agents=agents, draft=draft, error=error, notice=notice, nav="compose", overseer=writes_as(OVERSEER, taken),
                         archived=archived,
                         overseer_taken=taken)

    def act(self, request: Request, session: Session) -> Response:
        form = request.form
        action = ACTIONS.get(form.get("action", ""))
        if action is None:
            raise NotFound("Unknown action.", f"One of: {', '.join(ACTIONS)}.")
        tool, fields, _, own = action
        arguments = {name: form.get(name) or None for name in fields} | own
        if tool == "force_release_file_reservation":  # it acts as someone: the person, as a human row
            arguments["agent_name"] = self.run("ensure_overseer", project_key=arguments["project_key"]).name
        self.run(tool, **arguments)
        # Back where it was done (`back` may end in the row's #anchor), saying so (done=).
        path, anchor, fragment = (form.get("back") or "/").partition("#")
        return self.redirect(request, f"{path}{'&' if '?' in path else '?'}done={form['action']}{anchor}{fragment}")

    def live(self, request: Request, session: Session) -> Response:
        """{"latest": token}: the newest message and acknowledgement of the page's scope, and
        its newest read if asked (read=1) (_live_token), polled by ui.js."""
        query = request.query
        scope = {"project": query.get("p") or None, "thread_id": query.get("t") or None, "view": query.get("view") or None,
                 "product": query.get("k") or None, "reads": query.get("read") == "1"}
        # The inbox's scope (no project, no product) is every project's: not a scoped credential's.
        reaches = self.sees_all() if scope["project"] or scope["product"] else self.reads_inbox()
        latest = self.latest(**scope) if reaches else ""
        body = orjson.dumps({"latest": latest})
        return Response(200, body, "application/json")

    def latest(self, project: str | None = None, thread_id: str | None = None, view: str | None = None,
               product: str | None = None, reads: bool = False) -> str:
        """The live token of a scope (_live_token)."""
        return _live_token(self.scope_inbox(project, thread_id, view, product, reads), reads)

    def scope_inbox(self, project: str | None = None, thread_id: str | None = None, view: str | None = None,
                    product: str | None = None, reads: bool = False):
        """unified_inbox of a scope, its newest message only; its newest read looked up only for
        a page showing unread marks (reads)."""
        return self.run("unified_inbox", project_key=project, thread_id=thread_id, view=view, product_key=product, limit=1,
                        include_newest_read=reads, include_bcc=self.oversees())

    def newest_ids(self, project: str, thread_id: str, **page):
        """unified_inbox of a thread for its messages' ids only: no newest acknowledgement or read
        looked up (each an index look-up more), which only a live token uses."""
        return self.run("unified_inbox", project_key=project, thread_id=thread_id, include_newest_ack=False,
                        include_newest_read=False, **page)

    def live_url(self, request: Request, project: str | None = None, thread_id: str | None = None, view: str | None = None,
                 product: str | None = None, reads: bool = False) -> str:
        scope = (("p", project), ("t", thread_id), ("view", view), ("k", product), ("read", "1" if reads else None))
        query = {k: v for k, v in scope if v}
        return request.root + "/ui/live" + ("?" + urlencode(query) if query else "")

    def attachment(self, request: Request, session: Session) -> Response:
        """An attachment's bytes (chalicelib/web/downloads.py), read through get_attachment as the
        signed-in person: a message outside their credential's projects is refused like any page."""
        query, download, head = request.query, request.query.get("download") == "1", request.method == "HEAD"
        which = {"project_key": query.get("p", ""), "agent_name": query.get("a", ""), "message_id": query.get("m", ""),
                 "sha256": query.get("s", ""), "name": query.get("n") or None}
        # A HEAD: GET's headers from the attachment's details (its size and type), its content not
        # read; but an image's, which is shown inline only if its content is one (downloads.respond).
        found = self.run("get_attachment", **which, include_content=not head)
        if head and not download and downloads.shows_inline(found, self.settings):
            found = self.run("get_attachment", **which)
        return downloads.respond(found, self.settings, download=download, head=head)

    def docs(self, request: Request, session: Session) -> Response:
        return self.page(request, session, "docs.html")
