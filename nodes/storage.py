"""Storage backends for cores. MemoryStorage serves the simulator (it survives a simulated
crash because the simulator keeps the object); the agent's file-backed storage lives
beside it."""

from __future__ import annotations

from typing import Any

import msgpack


def _copy(value: Any) -> Any:
    # A msgpack round trip is faster than deepcopy and also proves the value is storable.
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)


class MemoryStorage:
    """Durable-in-the-simulation storage. Values are copied so a core cannot
    mutate what it has 'written' without writing again (tuples come back as lists,
    as they would from disk)."""

    def __init__(self) -> None:
        self._kv: dict[str, Any] = {}
        self._logs: dict[str, list[Any]] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return _copy(self._kv[key]) if key in self._kv else default

    def put(self, key: str, value: Any) -> None:
        self._kv[key] = _copy(value)
        self.writes += 1

    def log_append(self, name: str, entries: list[Any]) -> None:
        self._logs.setdefault(name, []).extend(_copy(entries))
        self.writes += 1

    def log_truncate(self, name: str, length: int) -> None:
        del self._logs.setdefault(name, [])[length:]
        self.writes += 1

    def log_read(self, name: str) -> list[Any]:
        return _copy(self._logs.get(name, []))
