"""The errors a tool may raise on purpose. Each carries a code, a message and a hint.

Every transport renders them the same way: REST as `{"error": {...}}` with the status
below, MCP as a tool error whose text is that same JSON.
"""


# The code of a refusal by the HTTP layer (a path, method or media type no route takes), by status.
HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
                    415: "unsupported_media_type"}


class ToolError(Exception):
    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}  # extra response headers (WWW-Authenticate, Retry-After)

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


class NotFound(ToolError):
    status = 404
    code = "not_found"


class Conflict(ToolError):
    status = 409
    code = "conflict"
    # The recipients (addresses) a refusal to deliver names: reply_message, which picks its recipients
    # itself, says which call leaves them out.
    refused: tuple[str, ...] = ()


class NotAdmitted(Conflict):
    """A contact policy refuses the message. On a replica, maybe on data older than another
    replica's approval: invoke retries it after a pull, as a NotFound."""


class NotActive(Conflict):
    """The agent is retired, or the project archived. On a replica, maybe on data older than
    another replica's unretire or unarchive: invoke retries it after a pull, as a NotFound."""


class InvalidArgument(ToolError):
    status = 422
    code = "invalid_argument"


# A validation error names this many problems, then says how many more: 60,000 unknown keys made
# a 2.4 MB answer, and 0.7 s of guessing what each was meant to be, on the event loop.
MAX_PROBLEMS = 10
MAX_NAME_SHOWN = 100  # characters of a field's name in a problem (a name may be most of a 1 MiB body)


# Where a caller finds the tools and their inputs, on every deployment: the Chalice app (AWS,
# `chalice local`) serves no /openapi.json (FastAPI makes it, which Lambda never imports).
TOOLS_LISTED = "tools/list (MCP), `agent-mail tools` (CLI) or, on the local server, /openapi.json"
# What invalid arguments should check: a tool call its input schema; an MCP resource read, whose
# values come from its URI (transports/mcp_resources.py swaps the hint), that URI's template.
SCHEMA_HINT = f"Check the tool's input schema ({TOOLS_LISTED}) and send the fields it names."
URI_TEMPLATE_HINT = "Check the resource's URI template (resources/templates/list) and give the values it names."


def validation_error(errors: list[dict], fields=()) -> InvalidArgument:
    """Turn pydantic's error list (ValidationError.errors()) into an InvalidArgument that
    names the first MAX_PROBLEMS bad fields, and how many more there are; an unknown one gets
    the closest of `fields` (the input's names), or the name this tool gives what another tool
    calls so (SAME_THING)."""
    problems = [_problem(err, fields) for err in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return InvalidArgument(
        "Invalid arguments: " + "; ".join(problems),
        SCHEMA_HINT,
    )


# What a value checked against a pattern (fields.matching) must be, in words, by pattern: a refusal
# says "'ABC' is not <words>" where pydantic quotes the regular expression.
PATTERNS_SAID: dict[str, str] = {}

# A text's length, said as pydantic says it of a plain string (string_too_long).
TEXT_TOO_LONG = "String should have at most {max_length} characters, not {actual_length}"


def _problem(err: dict, fields) -> str:
    where = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "too_long" and isinstance(err.get("input"), str):
        # A text's bound checked after its own validators (fields.NotBlank, Storable): pydantic then
        # counts "items" of a "Value" ("subject: Value should have at most 512 items after validation").
        message = TEXT_TOO_LONG.format(**err["ctx"])
    elif err["type"] == "string_pattern_mismatch" and (said := PATTERNS_SAID.get(err["ctx"]["pattern"])):
        message = f"{_shortened(repr(err['input']))} is not {said}"
    problem = f"{_shortened(where)}: {message}" if where else message  # (the input's own checks name their fields)
    name = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 1 and len(name) <= MAX_NAME_SHOWN:
        # A sentence of its own, after pydantic's (which has no stop); a secret's field only for a word that says token.
        candidates = [field for field in fields if "token" in name or "token" not in field]
        guess = did_you_mean(name, candidates) or ending(name, candidates)
        problem += alias_given_twice(name, fields) or known_as(name, fields) or (f".{guess}" if guess else "")
    return problem


def alias_given_twice(word: str, fields) -> str:
    """" (another name of 'x', which was given too: send one)" when `word` is one of the names a
    field also takes (fields.acting_agent's): pydantic took the field's own and called the other
    unknown, and the closest name guessed for it was another field's (respond_contact: "Did you
    mean 'from_agent'?" of to_agent, agent_name's other name)."""
    for field, info in (fields.items() if isinstance(fields, dict) else ()):
        if word in getattr(info.validation_alias, "choices", ()):
            return f" ({word!r} is another name of {field!r}, which was given too: send one of them)"
    return ""


def _shortened(text: str) -> str:
    return text if len(text) <= MAX_NAME_SHOWN else text[:MAX_NAME_SHOWN] + "…"


# The most one answer may hold: every answer is built in memory and held until the client read it.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# On AWS Lambda it must also fit the function's response, at most 6 MB (6,291,456 bytes) for a
# synchronous invocation: the whole JSON Lambda returns (statusCode, headers, and the body as a JSON
# string, escaped once more). Past it the invocation fails (API Gateway: 502). An answer is measured
# there as the runtime will write it (lambda_response.py; an MCP tools/call result holds the tool's
# JSON twice, its text copy escaped twice), against this: 64 KiB are left for the rest (the headers,
# ~2 KB; a JSON-RPC answer's frame).
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024
LAMBDA_ANSWER_BYTES = LAMBDA_RESPONSE_BYTES - 64 * 1024


class AnswerTooLarge(InvalidArgument):
    code = "answer_too_large"


def answer_too_large(write: bool = False, on_lambda: bool = False) -> AnswerTooLarge:
    limit = "the 6 MB of an AWS Lambda response, as written there" if on_lambda else f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
    return AnswerTooLarge(
        f"The answer would exceed {limit}" + (": nothing was changed." if write else "."),
        "Ask for less, with what the tool takes: a smaller limit, no bodies, or the next page of its cursor.",
    )


class TooManyRequests(ToolError):
    """Past a limit the caller may wait out: 429 with the seconds until it may (Retry-After). Also a
    caller's calls past its share (wait_for_mail's places, a slow lane's queue): the caller's to fix,
    not 503 (the server is not full)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, hint: str, retry_after: int) -> None:
        super().__init__(message, hint)
        self.headers = {"Retry-After": str(retry_after)}


class ClientGone(ToolError):
    """The client went away before its call answered (a slow lane's queued job, dropped; a wait
    for mail, ended): no one gets the answer, but the request's log line and the tool's calls
    count it (499, as nginx says)."""

    status = 499
    code = "client_closed_request"


class Unavailable(ToolError):
    status = 503
    code = "unavailable"


class InternalError(ToolError):
    status = 500
    code = "internal_error"


def internal_error() -> InternalError:
    """What a client sees of an unexpected exception: no details (those go to the log)."""
    return InternalError(
        "The server failed while handling this request.",
        "Retry; if it keeps failing, report it with the time of the request.",
    )


JSON_WHITESPACE = b" \t\n\r"  # JSON's (RFC 8259); bytes.strip() would also take a vertical tab or a form feed for nothing


def malformed_json(reason: str, position: int) -> InvalidArgument:
    return InvalidArgument(
        f"The request body is not valid JSON: {reason} (at character {position}).",
        "Send the tool's input as one JSON object, with Content-Type: application/json.",
    )


class Unauthorized(ToolError):
    """No credentials, or credentials that do not verify (chalicelib/security/auth.py)."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, hint: str = "", challenge: str = 'Bearer realm="agent-mail"') -> None:
        super().__init__(message, hint)
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(ToolError):
    status = 403
    code = "forbidden"


class TokenRefused(Forbidden):
    """The call lacks the token of an agent it acts as. On a replica, maybe on data older than
    another replica's register_agent or rotate_agent_token: invoke retries it after a pull."""


def did_you_mean(word: str, choices) -> str:
    """" Did you mean 'x'?" for the closest of `choices`, or "" when none is close."""
    import difflib  # only on an error path, and for a new agent named by its caller (register_agent)

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(choice) for choice in close) + "?"


def ending(word: str, fields) -> str:
    """" Did you mean 'x'?" when `word` is the last part of the name of exactly one of `fields`
    (name, of overseer_name): too far from it for difflib."""
    ends = [field for field in fields if field.endswith("_" + word)]
    return f" Did you mean {ends[0]!r}?" if len(ends) == 1 else ""


# What tools name differently: an argument sent under another tool's name for it (or a resource
# URI's) gets this tool's name for it.
SAME_THING = (
    frozenset({"registration_token", "sender_token", "token"}),  # the agent's token (send/reply: sender_token)
    frozenset({"to_agent", "target"}),  # request_contact / macro_contact_handshake
    frozenset({"cursor", "before_id"}),  # paging: most tools / unified_inbox
    # The acting agent, under the names tools had for it or clients give it: difflib sent `sender`
    # to sender_token, a secret's field, for a name. The person's tools call the one acting overseer_name.
    frozenset({"agent_name", "sender", "sender_name", "sender_agent", "from_agent", "from_name", "requester", "acting_agent",
               "overseer_name"}),
)


def known_as(word: str, fields) -> str:
    """" (this tool calls it 'x')" when `fields` has one other name for what `word` names elsewhere
    (two, as search_messages' agent_name and sender, is no telling which was meant)."""
    names = {field for group in SAME_THING if word in group for field in fields if field in group and field != word}
    return f" (this tool calls it {names.pop()!r})" if len(names) == 1 else ""


def unknown_tool(name: str, known) -> NotFound:
    return NotFound(
        f"No tool named {name!r}.{did_you_mean(str(name), known)}",
        f"List the tools with {TOOLS_LISTED}.",
    )
