"""Every setting in one place, read from the environment (or a `.env` file)."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A list setting from the environment: a JSON array, or comma-separated values.
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./data/agent_mail.db"
    host: str = "127.0.0.1"
    port: int = 8765
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # FULL fsyncs the WAL on every commit, so an acknowledged write survives power loss;
    # NORMAL survives process crashes only, and is faster.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = 5000
    # Idle connections kept open per process (0: open and close one per invocation).
    sqlite_pool_size: int = 8
    # Turso replica mode (docs/turso.md): set, DATABASE_URL's file is a local replica of this
    # primary (https://<db>.turso.io), one per process; writes are pushed before they are answered.
    turso_sync_url: str = ""
    turso_auth_token: str = ""
    # Reads pull first when the last pull is older than this: another host's writes show within
    # about a second, and a busy process pulls (10-20 ms) at most once a second. 0: every read pulls.
    replica_max_staleness_ms: int = 1000
    # A failed pull or push is retried (50 ms, doubling to 1 s) this long before the call fails.
    replica_sync_timeout_ms: int = 10000
    # Host headers the MCP endpoint accepts (DNS-rebinding protection); add your API domain.
    mcp_allowed_hosts: list[str] = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    # Answer stateless JSON tools/call, tools/list, initialize and ping without the SDK's
    # transport (same results, ~10x the throughput). Off: every MCP request goes to the SDK.
    mcp_lean_path: bool = True
    mcp_allowed_origins: list[str] = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    # force_release_file_reservation may take over a reservation whose holder has been
    # inactive (agents.last_active_ts) this long, even before the reservation expires.
    stale_agent_seconds: int = 1800
    # The git archive (docs/archive.md). Off: no outbox rows and no worker (process-wide).
    archive_enabled: bool = True
    archive_dir: Path = Path("./data/archive")
    # A bare repository by default (read it with git log/show, or clone it); true also checks
    # the files out into ARCHIVE_DIR, at the cost of ~4 file creations per message.
    archive_worktree: bool = False
    archive_batch_size: int = 1000
    archive_poll_seconds: float = 0.2
    archive_retry_seconds: float = 5.0  # first wait after a failed entry; doubles, up to an hour
    # Archived outbox rows (each a copy of its message) are deleted this long after their commit;
    # the git archive keeps them. 0: never.
    archive_keep_done_days: float = 7.0
    # Cloud mode: the SQS FIFO queue the outbox drains to, and the remote the worker pushes to.
    archive_queue_url: str = ""
    archive_git_remote: str = ""
    archive_work_dir: Path = Path("/tmp/agent-mail-archive")  # the worker's clone (Lambda: /tmp)
    # Security (docs/security.md). AUTH_MODE unset: "none" on a loopback HOST, else refused.
    auth_mode: Literal["none", "bearer", "jwt"] | None = None
    allow_insecure: bool = False  # allow AUTH_MODE=none on a non-loopback host
    auth_bearer_tokens: CommaList = Field([], validation_alias=AliasChoices("auth_bearer_tokens", "auth_keys"))
    jwt_jwks_url: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_algorithms: CommaList = ["RS256", "ES256"]
    jwt_leeway_seconds: int = 30
    jwt_jwks_timeout_seconds: float = 3.0
    jwt_jwks_cache_seconds: int = 300
    # Unset: required whenever AUTH_MODE is not none.
    require_agent_tokens: bool | None = None
    # Per caller, per process (docs/security.md). Unset: 1200 / 300 with authentication, unlimited
    # without; 0: unlimited.
    rate_limit_reads_per_minute: int | None = None
    rate_limit_writes_per_minute: int | None = None
    max_body_bytes: int = 1024 * 1024  # request bodies, every transport
    # wait_for_mail (docs/mailbox.md): calls waiting at once per process; beyond, 503 with a retry hint.
    max_mail_waiters: int = 1000
    # How long a replica's waiter sleeps between checks (other hosts' mail shows after a pull).
    mail_wait_poll_seconds: float = 1.0
    # Idempotency keys (docs/mailbox.md) are remembered this long; a retry after that runs again.
    idempotency_key_ttl_seconds: int = 86400
    # Which tools MCP tools/list offers: full (all), core (the everyday ones) or minimal.
    # Every tool stays callable (and on REST); a smaller list costs agents fewer context tokens.
    tools_profile: Literal["full", "core", "minimal"] = "full"
    cors_allowed_origins: CommaList = []  # browsers' cross-origin requests: none allowed by default

    @field_validator("auth_bearer_tokens", "jwt_algorithms", "cors_allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("DATABASE_URL must look like sqlite:///path/to/file.db")
        return value

    @property
    def database_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
