"""Storage backends for cores. MemoryStorage serves the simulator (it survives a simulated
crash because the simulator keeps the object); the agent's file-backed storage lives
beside it."""

from __future__ import annotations

import copy
from typing import Any


class MemoryStorage:
    """Durable-in-the-simulation storage. Values are deep-copied so a core cannot
    mutate what it has 'written' without writing again."""

    def __init__(self) -> None:
        self._kv: dict[str, Any] = {}
        self._logs: dict[str, list[Any]] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self._kv.get(key, default))

    def put(self, key: str, value: Any) -> None:
        self._kv[key] = copy.deepcopy(value)
        self.writes += 1

    def log_append(self, name: str, entries: list[Any]) -> None:
        self._logs.setdefault(name, []).extend(copy.deepcopy(entries))
        self.writes += 1

    def log_truncate(self, name: str, length: int) -> None:
        del self._logs.setdefault(name, [])[length:]
        self.writes += 1

    def log_read(self, name: str) -> list[Any]:
        return copy.deepcopy(self._logs.get(name, []))
