"""The relay port range: which ports are free to try (the socket bind is the edge's job)."""

from __future__ import annotations

import random


class PortPool:
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._free = set(range(low, high + 1))

    def __len__(self) -> int:
        return len(self._free)

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def candidates(self, limit: int = 32, even: bool = False) -> list[int]:
        """Up to ``limit`` free ports in random order (the caller takes the first that binds);
        only even ones when ``even``."""
        free = [p for p in self._free if not p & 1] if even else list(self._free)
        random.shuffle(free)
        return free[:limit]

    def take(self, port: int) -> None:
        self._free.discard(port)

    def release(self, port: int) -> None:
        if self.low <= port <= self.high:
            self._free.add(port)
