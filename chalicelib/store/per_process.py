"""Objects kept for the life of a process (a server, a warm Lambda container): caches that are
safe to lose, the only global state the handlers' code has."""

import threading
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class OnePerKey(Generic[T]):
    """`get(key, *args)`: the object made by `make(*args)` the first time `key` was asked for."""

    def __init__(self, make: Callable[..., T]) -> None:
        self.make = make
        self.made: dict[Hashable, T] = {}
        self.lock = threading.Lock()

    def get(self, key: Hashable, *args) -> T:
        made = self.made.get(key)  # made once, then only read: no lock needed to find it
        if made is not None:
            return made
        with self.lock:
            if key not in self.made:
                self.made[key] = self.make(*args)
            return self.made[key]

    def forget(self, key: Hashable) -> T | None:
        """Let go of `key`'s object (the next `get` makes a new one); the object, None if there was none."""
        with self.lock:
            return self.made.pop(key, None)
