"""Timestamps: ISO 8601 in UTC with microseconds, so they sort as text."""

import math
from datetime import datetime, timedelta, timezone


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def from_epoch(seconds: float) -> str:
    """The stored form of a Unix time (a git commit's, an id's)."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")


def normalize(value: str) -> str:
    """Any ISO 8601 timestamp → the stored form (naive times are taken as UTC); ValueError if it is
    none. A time past the range once in UTC (0001-01-01T00:00:00+14:00, which JSON schema's
    date-time takes) is the range's end: as a filter's bound, the only use, it selects the same
    messages (none is stored that far out). It was a 422 for a request the schema allows."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except OverflowError:
        edge = datetime.min if parsed.year == 1 else datetime.max
        return edge.replace(tzinfo=timezone.utc).isoformat(timespec="microseconds")


def later(timestamp: str, seconds: float) -> str:
    """The stored timestamp `seconds` after `timestamp` (before it, if negative)."""
    return (datetime.fromisoformat(timestamp) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def age_seconds(timestamp: str) -> float:
    """How long ago the stored `timestamp` was."""
    return (datetime.now(timezone.utc) - datetime.fromisoformat(timestamp)).total_seconds()


def seconds_until(moment: str, now: str) -> int:
    """Whole seconds from `now` until `moment` (at least 1): a Retry-After."""
    return max(1, math.ceil((datetime.fromisoformat(moment) - datetime.fromisoformat(now)).total_seconds()))
