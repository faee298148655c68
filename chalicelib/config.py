"""Every setting in one place, read from the environment (or a `.env` file)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # Host headers the MCP endpoint accepts (DNS-rebinding protection); add your API domain.
    mcp_allowed_hosts: list[str] = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    # Answer stateless JSON tools/call, tools/list, initialize and ping without the SDK's
    # transport (same results, ~10x the throughput). Off: every MCP request goes to the SDK.
    mcp_lean_path: bool = True
    mcp_allowed_origins: list[str] = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    # force_release_file_reservation may take over a reservation whose holder has been
    # inactive (agents.last_active_ts) this long, even before the reservation expires.
    stale_agent_seconds: int = 1800

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
