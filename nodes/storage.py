"""Storage backends for cores. MemoryStorage serves the simulator (it survives a simulated
crash because the simulator keeps the object); the agent's file-backed storage lives
beside it."""

from __future__ import annotations

from typing import Any

import msgpack

_pack = msgpack.Packer(use_bin_type=True).pack     # one packer: msgpack.packb makes one a call


def _copy(value: Any) -> Any:
    # A msgpack round trip is faster than deepcopy and also proves the value is storable.
    return msgpack.unpackb(_pack(value), raw=False, strict_map_key=False)


_ABSENT = object()


class MemoryStorage:
    """Durable-in-the-simulation storage. Values are copied so a core cannot
    mutate what it has 'written' without writing again (tuples come back as lists,
    as they would from disk).

    Writes are durable at once, unless the runtime calls :meth:`hold`: from then on the
    writes since the last :meth:`sync` are not yet on disk, and :meth:`lose_unsynced`
    (a crash) takes them back, as a SIGKILL before the fsync would."""

    def __init__(self) -> None:
        self._kv: dict[str, Any] = {}
        self._logs: dict[str, list[Any]] = {}
        self.writes = 0
        self._undo: list[tuple[Any, ...]] | None = None   # held: how to take back each unsynced write

    def get(self, key: str, default: Any = None) -> Any:
        return _copy(self._kv[key]) if key in self._kv else default

    def put(self, key: str, value: Any) -> None:
        if self._undo is not None:
            self._undo.append(("put", key, self._kv.get(key, _ABSENT)))
        self._kv[key] = _copy(value)
        self.writes += 1

    def log_append(self, name: str, entries: list[Any]) -> None:
        log = self._logs.setdefault(name, [])
        if self._undo is not None:
            self._undo.append(("append", name, len(log)))
        log.extend(_copy(entries))
        self.writes += 1

    def log_truncate(self, name: str, length: int) -> None:
        log = self._logs.setdefault(name, [])
        if self._undo is not None:
            self._undo.append(("trunc", name, log[length:]))
        del log[length:]
        self.writes += 1

    def log_read(self, name: str) -> list[Any]:
        return _copy(self._logs.get(name, []))

    # -- durability, for a runtime that models the time a write takes to reach the disk --------
    def hold(self, on: bool = True) -> None:
        """From now on, writes are durable only at the next :meth:`sync` (``on=False``: at once
        again, and so are those made so far)."""
        if not on:
            self._undo = None
        elif self._undo is None:
            self._undo = []

    @property
    def unsynced(self) -> bool:
        return bool(self._undo)

    def sync(self) -> None:
        """Every write so far is durable."""
        if self._undo:
            self._undo = []

    def lose_unsynced(self) -> None:
        """A crash before the sync: the writes since the last one never happened."""
        undo = self._undo
        while undo:
            op, name, arg = undo.pop()
            if op == "put":
                if arg is _ABSENT:
                    self._kv.pop(name, None)
                else:
                    self._kv[name] = arg
            elif op == "append":
                del self._logs[name][arg:]
            else:
                self._logs[name].extend(arg)
