"""Application-generated 63-bit ids, so rows made on different replicas never collide.

Natural keys (projects, agents, products) get a deterministic id: the same key always
maps to the same row, which makes concurrent creation harmless. Events (messages) get a
time-ordered random id: sorting by id sorts by creation time.
"""

import hashlib
import random
import threading
import time

_EPOCH_MS = 1_704_067_200_000  # 2024-01-01: 41 bits of milliseconds last until 2093
RANDOM_BITS = 22
_lock = threading.Lock()
_last = 0


def stable_id(*parts: object) -> int:
    """A deterministic positive 63-bit id for a natural key."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def new_id() -> int:
    """A time-ordered 63-bit id: milliseconds since 2024, then random bits.

    The bits only need to differ between processes, not to be secret: `random` (seeded
    from the OS, and again in a forked child) costs no system call, unlike `secrets`.

    Strictly increasing within a process, so ids made in one request stay in order.
    """
    global _last
    candidate = ((int(time.time() * 1000) - _EPOCH_MS) << RANDOM_BITS) | random.getrandbits(RANDOM_BITS)
    with _lock:
        _last = max(candidate, _last + 1)
        return _last


def new_ids(count: int) -> range:
    """`count` consecutive new ids, reserved at once: what `count` calls of new_id() would give,
    without the lock and the clock each time."""
    global _last
    if count <= 0:
        return range(0)
    candidate = ((int(time.time() * 1000) - _EPOCH_MS) << RANDOM_BITS) | random.getrandbits(RANDOM_BITS)
    with _lock:
        start = max(candidate, _last + 1)
        _last = start + count - 1
        return range(start, start + count)


def first_id_at(unix_ms: int) -> int:
    """The smallest new_id() made at this time (milliseconds since 1970): older events have smaller ids."""
    return max(unix_ms - _EPOCH_MS, 0) << RANDOM_BITS


def id_at(unix_seconds: float) -> int:
    """The smallest new_id() made at this time: ids below it were made earlier."""
    return max(int(unix_seconds * 1000) - _EPOCH_MS, 0) << RANDOM_BITS


def time_of(id_: int) -> float:
    """When new_id() made this id (unix seconds, to the millisecond)."""
    return ((id_ >> RANDOM_BITS) + _EPOCH_MS) / 1000
