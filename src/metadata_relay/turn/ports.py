"""The relay port range: which ports are free to try (the socket bind is the edge's job).

Free ports live in a list with an index map, so taking, releasing and sampling candidates are
O(1)/O(limit) whatever the range size (an allocation flood must not cost O(range) each)."""

from __future__ import annotations

import random


class PortPool:
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._free = list(range(low, high + 1))
        random.shuffle(self._free)
        self._index = {p: i for i, p in enumerate(self._free)}

    def __len__(self) -> int:
        return len(self._free)

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def candidates(self, limit: int = 8, even: bool = False) -> list[int]:
        """Up to ``limit`` free ports in random order (the caller takes the first that binds);
        only even ones when ``even``."""
        free = self._free
        picks = [free[i] for i in random.sample(range(len(free)), min(limit, len(free)))]
        if even:
            picks = [p for p in picks if not p & 1]
            if not picks:
                picks = [p for p in free if not p & 1][:limit]
        return picks

    def take(self, port: int) -> None:
        i = self._index.pop(port, None)
        if i is None:
            return
        last = self._free.pop()
        if last != port:
            self._free[i] = last
            self._index[last] = i

    def release(self, port: int) -> None:
        if self.low <= port <= self.high and port not in self._index:
            self._index[port] = len(self._free)
            self._free.append(port)
