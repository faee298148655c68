"""Every setting in one place, read from the environment (or a `.env` file)."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (AliasChoices, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator,
                      model_validator)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A list setting from the environment: a JSON array, or comma-separated values.
CommaList = Annotated[list[str], NoDecode]
LIST_FORMS = 'give a JSON array (["a", "b"]) or values separated by commas (a, b)'

Role = Literal["reader", "writer", "admin"]

# Every duration is at most a century (set_retention_policy's `days` too): a much longer one
# overflows a timestamp (datetime ends in year 9999) or a thread's wait (threading.TIMEOUT_MAX).
CENTURY_DAYS = 36500
CENTURY_SECONDS = CENTURY_DAYS * 86400
# SQLite's busy timeout is a C int of milliseconds (~24.8 days): Python's sqlite3 wraps a larger
# one to a negative number, which turns the wait off (a write met a lock and failed at once).
SQLITE_MAX_BUSY_TIMEOUT_MS = 2**31 - 1
# Rows a batch setting lets one statement name: each is a `?` of an IN (...) list (SQLite takes
# 32,766 by default) or a LIMIT (past 2^63 an OverflowError, every run).
SQL_BATCH_MAX_ROWS = 10_000
RETENTION_BATCH_MAX_ROWS = 1_000_000  # per kind per run, in transactions of RETENTION_CHUNK rows
# What JWT_ALGORITHMS may name: the asymmetric algorithms PyJWT verifies, as a JWT's header spells
# them (never none, never HS*: an HMAC "signed" with the public key, which anyone has, would pass).
JWT_SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA")


class ScopedToken(BaseModel):
    """An AUTH_BEARER_TOKENS entry with a scope (docs/security.md): the projects it reaches
    (slugs or human keys; "*" for all) and its role."""

    # hide_input_in_errors: a ValidationError's text (a traceback on Lambda) never shows the token.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    token: str = Field(min_length=1)
    projects: list[str] | Literal["*"] = "*"
    role: Role = "admin"

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, entry):
        unknown = [str(name) for name in entry if name not in cls.model_fields] if isinstance(entry, dict) else []
        if unknown:
            raise ValueError(f"unknown field {', '.join(map(repr, unknown))} (the fields: {', '.join(cls.model_fields)})")
        return entry

    @field_validator("projects", mode="before")
    @classmethod
    def _project_list(cls, projects):
        if projects != "*" and not (isinstance(projects, list) and all(isinstance(key, str) for key in projects)):
            raise ValueError('should be a list of project slugs or human keys, or "*" for all')
        return projects

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, role):
        if role not in get_args(Role):
            raise ValueError(f"unknown role {str(role)!r} (the roles: {', '.join(get_args(Role))})")
        return role


def _plain_or_scoped(entry) -> str | None:
    return "plain" if isinstance(entry, str) else "scoped" if isinstance(entry, dict | ScopedToken) else None


# A string validates as a plain token and an object as a ScopedToken, so that an object's error
# is its own, not "Input should be a valid string" (the plain token it is not).
BearerToken = Annotated[
    Annotated[str, Tag("plain")] | Annotated[ScopedToken, Tag("scoped")],
    Discriminator(_plain_or_scoped, custom_error_type="bearer_token",
                  custom_error_message="each entry is a token (a string) or an object with token, projects and role"),
]


RetentionMode = Literal["keep", "purge", "archive_only"]  # the server's default, and a project's own (tools/retention.py)


class Settings(BaseSettings):
    # hide_input_in_errors: no secret in a traceback; allow_inf_nan: "inf" and "nan" are not durations.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True, allow_inf_nan=False)

    database_url: str = "sqlite:///./data/agent_mail.db"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # auto: JSON lines when stderr is not a terminal (and always on Lambda), text on a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    log_requests: bool = True  # one log line per request: method, path, tool, status, duration, caller
    # FULL fsyncs the WAL on every commit, so an acknowledged write survives power loss;
    # NORMAL survives process crashes only, and is faster.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = Field(5000, ge=0, le=SQLITE_MAX_BUSY_TIMEOUT_MS)
    # Idle connections kept open per process (0: open and close one per invocation).
    sqlite_pool_size: int = Field(8, ge=0)
    # A search stops after this long (422: too broad; chalicelib/tools/search.py): a prefix or NEAR
    # query's cost grows with the mailbox, and slow searches share one thread (docs/limits.md).
    search_timeout_ms: int = Field(2000, ge=1, le=CENTURY_SECONDS * 1000)
    # Turso replica mode (docs/turso.md): set, DATABASE_URL's file is a local replica of this
    # primary (https://<db>.turso.io), one per process; writes are pushed before they are answered.
    turso_sync_url: str = ""
    turso_auth_token: str = ""
    # Reads pull first when the last pull is older than this: another host's writes show within
    # about a second, and a busy process pulls (10-20 ms) at most once a second. 0: every read pulls.
    replica_max_staleness_ms: int = Field(1000, ge=0, le=CENTURY_SECONDS * 1000)
    # A failed pull or push is retried (50 ms, doubling to 1 s) this long before the call fails.
    replica_sync_timeout_ms: int = Field(10000, ge=0, le=CENTURY_SECONDS * 1000)
    # Host headers every route but /health accepts (DNS-rebinding protection, chalicelib/security/
    # rebinding.py); add your API domain. MCP_ALLOWED_HOSTS is the old name.
    allowed_hosts: CommaList = Field(["127.0.0.1:*", "localhost:*", "[::1]:*"],
                                     validation_alias=AliasChoices("allowed_hosts", "mcp_allowed_hosts"))
    # Answer stateless JSON tools/call, tools/list, initialize and ping without the SDK's
    # transport (same results, ~10x the throughput). Off: every MCP request goes to the SDK.
    mcp_lean_path: bool = True
    # Origin headers every route but /health accepts (besides CORS_ALLOWED_ORIGINS); MCP_ALLOWED_ORIGINS is the old name.
    allowed_origins: CommaList = Field(["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
                                       validation_alias=AliasChoices("allowed_origins", "mcp_allowed_origins"))
    # force_release_file_reservation may take over a reservation whose holder has been
    # inactive (agents.last_active_ts) this long, even before the reservation expires.
    stale_agent_seconds: int = Field(1800, ge=0, le=CENTURY_SECONDS)
    # The git archive (docs/archive.md). Off: no outbox rows and no worker (process-wide).
    archive_enabled: bool = True
    archive_dir: Path = Path("./data/archive")
    # A bare repository by default (read it with git log/show, or clone it); true also checks
    # the files out into ARCHIVE_DIR, at the cost of ~4 file creations per message.
    archive_worktree: bool = False
    archive_batch_size: int = Field(1000, ge=1, le=SQL_BATCH_MAX_ROWS)
    archive_poll_seconds: float = Field(0.2, gt=0, le=CENTURY_SECONDS)
    archive_retry_seconds: float = Field(5.0, ge=0, le=3600)  # first wait after a failed entry; doubles, up to an hour
    # The worker writes a heartbeat this often (archive_status, doctor, /metrics); /ready fails
    # when the oldest pending entry is older than ARCHIVE_MAX_LAG_SECONDS (archive stuck).
    archive_heartbeat_seconds: float = Field(5.0, gt=0, le=CENTURY_SECONDS)
    archive_max_lag_seconds: float = Field(300.0, gt=0, le=CENTURY_SECONDS)
    # Archived outbox rows (each a copy of its message) are deleted this long after their commit;
    # the git archive keeps them. 0: never.
    archive_keep_done_days: float = Field(7.0, ge=0, le=CENTURY_DAYS)
    # Cloud mode: the SQS FIFO queue the outbox drains to, and the remote the worker pushes to.
    archive_queue_url: str = ""
    archive_git_remote: str = ""
    archive_work_dir: Path = Path("/tmp/agent-mail-archive")  # the worker's clone (Lambda: /tmp)
    # Retention (docs/retention.md): what happens to old mail of a project without a policy of
    # its own (set_retention_policy). keep: forever; purge: deleted after RETENTION_DAYS;
    # archive_only: bodies leave the database after RETENTION_DAYS (the git archive keeps them).
    retention_mode: RetentionMode = "keep"
    retention_days: int = Field(365, ge=1, le=CENTURY_DAYS)
    # Agents inactive this long are retired automatically (their reservations released). 0: never.
    retention_agent_idle_days: float = Field(0, ge=0, le=CENTURY_DAYS)
    # Released or expired file reservations and build slots are deleted this long after they ended.
    retention_lease_grace_days: float = Field(7, ge=0, le=CENTURY_DAYS)
    # At most this many rows per kind (messages, agents, reservations, slots) per run, in short
    # transactions of RETENTION_CHUNK rows; a later run takes the rest.
    retention_batch: int = Field(5000, ge=1, le=RETENTION_BATCH_MAX_ROWS)
    retention_chunk: int = Field(200, ge=1, le=SQL_BATCH_MAX_ROWS)
    # The local archive worker runs retention when idle, at most this often (0: never; then
    # `python -m chalicelib retention run` from cron). On AWS a scheduled function runs it hourly.
    retention_every_seconds: float = Field(3600, ge=0, le=CENTURY_SECONDS)
    # Security (docs/security.md). AUTH_MODE unset: "none" on a loopback HOST, else refused.
    auth_mode: Literal["none", "bearer", "jwt"] | None = None
    allow_insecure: bool = False  # allow AUTH_MODE=none on a non-loopback host
    # Each entry: a plain token (all projects, admin) or {"token", "projects", "role"} (JSON list).
    auth_bearer_tokens: Annotated[list[BearerToken], NoDecode] = Field(
        [], validation_alias=AliasChoices("auth_bearer_tokens", "auth_keys")
    )
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_algorithms: CommaList = ["RS256", "ES256"]
    jwt_leeway_seconds: int = Field(30, ge=0, le=3600)  # for clocks that differ, not a grace period for expired tokens
    jwt_jwks_timeout_seconds: float = Field(3.0, gt=0, le=60)  # a request waiting for the fetch waits this long
    jwt_jwks_cache_seconds: int = Field(300, ge=0, le=CENTURY_SECONDS)
    # The JWT claims carrying a token's scope: the projects (a list, or a comma/space-separated
    # string; "*" for all) and the role. A JWT without them reaches every project as admin.
    jwt_projects_claim: str = "agent_mail_projects"
    jwt_role_claim: str = "agent_mail_role"
    # Unset: required whenever AUTH_MODE is not none.
    require_agent_tokens: bool | None = None
    # Per caller, per process (docs/security.md). Unset: 1200 / 300 with authentication, unlimited
    # without; 0: unlimited.
    rate_limit_reads_per_minute: int | None = Field(None, ge=0)
    rate_limit_writes_per_minute: int | None = Field(None, ge=0)
    # Credentials refused (401) from one client address, a minute, per process; past it, the
    # address's requests are refused (429) before any credential is checked. 0: no limit.
    auth_failures_per_minute: int = Field(30, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)  # request bodies and stdio lines (smaller refuses ordinary calls)
    # install_precommit_guard: directories besides each project's own (its human_key) where the
    # server may install git hooks; and a file holding the bearer token the hook sends (its path
    # goes into the hook; the committer's AGENT_MAIL_TOKEN wins). chalicelib/tools/guard.py.
    guard_allowed_roots: CommaList = []
    guard_token_file: str = ""
    # A client that has not taken its answer for this long is dropped (chalicelib/transports/http_protocol.py);
    # so is one whose request line and headers have not all come this long after they began (408), or
    # whose body has sent nothing for this long; a body sent without a checked credential must be whole
    # this long after its headers, one with a credential keep 4 KiB/s on average after that (408).
    send_timeout_seconds: float = Field(30.0, gt=0, le=CENTURY_SECONDS)
    receive_timeout_seconds: float = Field(30.0, gt=0, le=CENTURY_SECONDS)
    # Contact requests an agent, and all agents of a project together, may file per hour, and one
    # agent may be sent (request_contact and macro_contact_handshake; 429 beyond). 0: unlimited.
    contact_requests_per_agent_per_hour: int = Field(30, ge=0)
    contact_requests_per_project_per_hour: int = Field(300, ge=0)
    contact_requests_per_target_per_hour: int = Field(100, ge=0)
    # Attachments (docs/attachments.md): stored once per SHA-256 in ATTACHMENTS_BUCKET (S3) if
    # set, else in ATTACHMENTS_DIR. Base64 content counts against MAX_BODY_BYTES; larger files
    # go through request_attachment_upload first.
    attachments_dir: Path = Path("./data/attachments")
    attachments_bucket: str = ""
    attachment_max_bytes: int = Field(25 * 1024 * 1024, ge=1)  # per file
    attachments_max_bytes_per_message: int = Field(50 * 1024 * 1024, ge=1)
    attachments_max_per_message: int = Field(20, ge=0)  # 0: no attachments
    # get_attachment returns content inline up to this size, a link above it (MCP answers and
    # API Gateway's 6 MB payload limit stay bounded).
    attachment_inline_max_bytes: int = Field(4 * 1024 * 1024, ge=0)
    # Attaching a file by path reads the server's disk (inside the project's directory only).
    # Unset: allowed when the server has no authentication (loopback only) and stores locally.
    attachment_paths: bool | None = None
    # Images (PNG, JPEG, BMP, TIFF) are stored as WebP, scaled to fit this many pixels on
    # the longer side, unless an attachment asks keep_original (0: never convert). WebP's own limit: 16383.
    attachment_image_max_side: int = Field(2048, ge=0, le=16383)
    # Content no message names (an upload never sent, what purged mail named) is deleted by the
    # retention run once it is this many days old (0: kept forever), ATTACHMENT_DELETE_DELAY_SECONDS
    # after it was found unnamed, unless a message names it again in the first half of that delay.
    attachment_unused_days: float = Field(7, ge=0, le=CENTURY_DAYS)
    attachment_delete_delay_seconds: float = Field(3600, ge=0, le=CENTURY_SECONDS)
    # wait_for_mail (docs/mailbox.md): calls waiting at once per process; beyond, 503 with a retry hint.
    max_mail_waiters: int = Field(1000, ge=1)
    # ... and of one authenticated caller (a credential), so that one cannot take every place: beyond, 429.
    max_mail_waiters_per_caller: int = Field(100, ge=1)
    # Calls of one credential queued or running in a slow lane (invoke.py: slow reads such as
    # searches; writes' preparation such as images to WebP), each lane apart: a client's few
    # parallel calls, twice. Beyond, 429 with nothing done (store/fair_lane.py).
    max_slow_calls_per_caller: int = Field(8, ge=1)
    # How long a replica's waiter sleeps between checks (other hosts' mail shows after a pull).
    mail_wait_poll_seconds: float = Field(1.0, gt=0, le=CENTURY_SECONDS)
    # Idempotency keys (docs/mailbox.md) are remembered this long; a retry after that runs again.
    idempotency_key_ttl_seconds: int = Field(86400, ge=0, le=CENTURY_SECONDS)
    # Which tools MCP tools/list offers: full (all), core (the everyday ones) or minimal.
    # Every tool stays callable (and on REST); a smaller list costs agents fewer context tokens.
    tools_profile: Literal["full", "core", "minimal"] = "full"
    cors_allowed_origins: CommaList = []  # browsers' cross-origin requests: none allowed by default
    # The web UI's session cookies (chalicelib/web/session.py): the HMAC key (unset: derived from
    # AUTH_BEARER_TOKENS, else random per process) and how long a login lasts.
    ui_session_secret: str = ""
    ui_session_hours: float = Field(12.0, gt=0, le=CENTURY_DAYS * 24)

    @field_validator("auth_bearer_tokens", "jwt_algorithms", "cors_allowed_origins", "guard_allowed_roots", "allowed_hosts",
                     "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value, info: ValidationInfo):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                try:
                    return json.loads(value)
                except ValueError as exc:  # json's message alone ("Expecting value: line 1 column 2") says not what was meant
                    raise ValueError(f"not a JSON list ({exc}): {LIST_FORMS}") from None
            if value.startswith("{"):  # split at its commas it would be taken for plain tokens (or names)
                if info.field_name == "auth_bearer_tokens":
                    raise ValueError('an object must be inside a JSON list: [{"token": ..., "projects": [...], "role": ...}]')
                raise ValueError(f"an object, not a list: {LIST_FORMS}")
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_bearer_tokens")
    @classmethod
    def _usable_tokens(cls, entries):
        """Refuse what would be taken silently: a token listed twice (the last entry won: a scoped
        reader's token was also an admin's), and one no client can send (spaces around it, which
        the server strips from the header; a non-ASCII character, which HTTP headers do not carry
        as the client wrote it). The message names the entry's position, never the token."""
        seen = set()
        for n, entry in enumerate(entries):
            token = getattr(entry, "token", entry)
            if not token:
                continue
            if not (token.isascii() and token.isprintable()) or token != token.strip():
                raise ValueError(f"entry {n}: a token must be printable ASCII without spaces around it")
            if token in seen:
                raise ValueError(f"entry {n}: the token of an earlier entry again (each token has one scope)")
            seen.add(token)
        return entries

    @field_validator("jwt_algorithms")
    @classmethod
    def _signing_algorithms(cls, algorithms: list[str]) -> list[str]:
        """Each as a token's header spells it (which is compared exactly), whatever the case it is
        given in, and spaces separate too (as in a JWT's projects claim): `rs256`, `RS256 ES256` or a
        typo started the server, and then every token was refused."""
        spelled = {name.upper(): name for name in JWT_SIGNING_ALGORITHMS}
        names: list[str] = []
        for entry in (part for value in algorithms for part in value.split()):
            name = spelled.get(entry.upper())
            if name is None:
                why = ("signs nothing" if entry.lower() == "none" else "is an HMAC algorithm (a token signed with the public key"
                       " would pass)" if entry.upper().startswith("HS") else "is not a JWT signing algorithm")
                raise ValueError(f"{entry!r} {why}; the algorithms it takes: {', '.join(JWT_SIGNING_ALGORITHMS)}")
            names += [name] if name not in names else []
        return names

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("DATABASE_URL must look like sqlite:///path/to/file.db")
        # Not :memory: (each pooled connection would open a new, empty database: every call a 500),
        # nor a file: URI (some SQLite builds read it as one, others as a file's name), nor no path.
        path = value.removeprefix("sqlite:///")
        if not path.strip() or path == ":memory:" or path.startswith("file:"):
            raise ValueError("DATABASE_URL must name a file, as sqlite:///path/to/file.db"
                             " (every connection and process shares it: not :memory:)")
        return value

    @property
    def database_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def no_database(self) -> bool:
        """No database file where DATABASE_URL says (a replica's file is a cache: it never counts as missing)."""
        return not self.turso_sync_url and not self.database_path.is_file()


@lru_cache
def get_settings() -> Settings:
    return Settings()


def invalid_setting(exc) -> tuple[str, str]:
    """(the environment variable, what is wrong with it) of a Settings ValidationError. Inside a
    list setting, where: "entry 2, token: Field required" (never the value: it may be a secret)."""
    error = exc.errors()[0]
    variable, *inside = error["loc"]
    where = ", ".join(f"entry {part + 1}" if isinstance(part, int) else part for part in inside if part not in ("plain", "scoped"))
    problem = error["msg"].removeprefix("Value error, ")
    if not inside and error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        problem += f" (allowed: {allowed_range(str(variable))})"  # pydantic names the one bound crossed
    return str(variable).upper(), f"{where}: {problem}" if where else problem


def allowed_range(setting: str) -> str:
    """A numeric setting's bounds, as "0 <= PORT <= 65535"."""
    bounds = {key: getattr(rule, key) for rule in Settings.model_fields[setting].metadata
              for key in ("ge", "gt", "le", "lt") if hasattr(rule, key)}
    lower = f"{bounds['ge']} <= " if "ge" in bounds else f"{bounds['gt']} < " if "gt" in bounds else ""
    upper = f" <= {bounds['le']}" if "le" in bounds else f" < {bounds['lt']}" if "lt" in bounds else ""
    return f"{lower}{setting.upper()}{upper}"
