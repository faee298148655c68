"""What a tool's answer weighs in an AWS Lambda function's response.

A synchronous invocation returns at most 6 MB (errors.LAMBDA_RESPONSE_BYTES): the whole JSON the
runtime writes, the answer in it as a JSON string, escaped once more. invoke.bounded measures an
answer so, and a page of message bodies (tools/messages.py, within_page) counts its bodies so, on
Lambda only: a call's lambda_copies, set by app.py's REST routes, its web UI's pages and
transports/lambda_mcp.py.
"""

import json
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from .errors import LAMBDA_ANSWER_BYTES

# How a Lambda transport writes a tool's JSON in the function's response, which is itself JSON: for
# each copy, how many times it is escaped as a JSON string there. Set for the call (lambda_answers) by
# app.py's REST routes and web UI pages and lambda_mcp.py; () elsewhere, where only MAX_ANSWER_BYTES applies.
LAMBDA_REST = (1,)  # the body
LAMBDA_MCP = (1, 2)  # a tools/call result: structuredContent in the body, and a text block, a string in it
LAMBDA_MCP_ONCE = (2,)  # a resource's text; a tool's own content (mcp_content: get_attachment's travels once)
lambda_copies: ContextVar[tuple[int, ...]] = ContextVar("lambda_copies", default=())
# How the transport writes a message body of a page in its answer, if not as the tool's JSON string
# (orjson's): the web UI's pages write it as HTML, where a `&` is `&amp;` (web/pages.py as_written).
lambda_body: ContextVar[Callable[[str], bytes] | None] = ContextVar("lambda_body", default=None)
# A byte of a tool's JSON (or of any UTF-8, a page's HTML) takes at most this many in a copy there (DEL,
# \u007f; a `"` escaped twice, 4).
MOST_PER_BYTE = 6


@contextmanager
def lambda_answers(copies: tuple[int, ...], body: Callable[[str], bytes] | None = None):
    """Answers of the calls inside are measured as Lambda writes them (`copies`: lambda_copies;
    `body`: lambda_body, how a message body is written before that, if not as JSON)."""
    token, written = lambda_copies.set(copies), lambda_body.set(body)
    try:
        yield
    finally:
        lambda_body.reset(written)
        lambda_copies.reset(token)


def past_lambda(answer: bytes) -> bool:
    """Whether `answer`, written as the call's lambda_copies say, is past LAMBDA_ANSWER_BYTES (never
    off Lambda). Most answers are surely within from their length alone: not measured."""
    copies = lambda_copies.get()
    return bool(copies) and len(answer) * MOST_PER_BYTE * len(copies) > LAMBDA_ANSWER_BYTES \
        and lambda_weight(answer, copies) > LAMBDA_ANSWER_BYTES


# What json.dumps writes as it is; the rest of ASCII it escapes: `"`, `\\` and \n \r \t \b \f in
# 2 bytes, another control character or DEL in 6 (\u0001).
_AS_IS = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")
_SHORT_ESCAPES = b'"\\\n\r\t\b\f'


def lambda_weight(answer: bytes, copies: tuple[int, ...]) -> int:
    """The bytes `answer` (a tool's JSON, or a web page's HTML) takes in a Lambda function's
    response, its copies escaped as `copies` says. Written as the Python 3.11 runtime's json.dumps
    does (3.12's leaves non-ASCII as it is: less): a `"`, `\\` or newline takes 2 bytes, another
    control character or DEL 6, a non-ASCII character 6 (12 above U+FFFF). Escaped before that too
    (orjson: MCP's text), each `"` and `\\` gains a backslash, of 2 bytes."""
    marks = answer.count(b'"') + answer.count(b"\\")
    if answer.isascii():  # (the escaped ones are few: found in C, then counted)
        escaped = answer.translate(None, _AS_IS)
        short = sum(map(escaped.count, _SHORT_ESCAPES))
        once = len(answer) + short + 5 * (len(escaped) - short)
    else:
        once = len(json.dumps(answer.decode())) - 2  # 30-60 ms for 8 MB: answers over ~1 MB only
    return sum(once + 2 * marks * (times - 1) for times in copies)  # (times: 1 or 2)
