"""The agent's trace writer: one JSON object a line in ``<data dir>/trace.jsonl``.

Events follow docs/trace.md. The writer is on the agent's hot path (a ``send``
and a ``recv`` per message), so message events are formatted from cached,
pre-encoded names instead of through ``json.dumps``, lines are buffered, and
the buffer is written once per event-loop iteration (no fsync: the trace is a
record of what happened, not state a node must keep). The file is opened for
append, so a restarted node continues it; :func:`last_lc` recovers the Lamport
clock from its tail so that ``lc`` keeps growing across restarts.
"""

from __future__ import annotations

import json
import os
from typing import Any

# all: everything. protocol: what the core traces (state, commit, apply...), drops and logs, but
# not the per-message and per-request lines (send, recv, timer, request, reply): for benchmarks.
LEVELS = ("all", "protocol", "none")
_PER_MESSAGE = frozenset({"send", "recv", "timer", "request", "reply"})
# One encoder for every line: json.dumps with arguments builds a new encoder per call (3x slower).
_encode = json.JSONEncoder(sort_keys=True, default=str).encode


TOP_LEVEL = frozenset({"mid", "type", "peer"})


def core_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A core's ``ctx.trace(ev, **fields)`` as event keys: ``mid``/``type``/``peer`` stay at
    the top, everything else goes under ``data`` (a core may also pass ``data={...}``).
    Shared by the agent and the simulator so both runtimes write the same events."""
    if "data" in fields:
        fields = {**fields.pop("data"), **fields}
    if TOP_LEVEL.isdisjoint(fields):
        return {"data": fields} if fields else {}
    out: dict[str, Any] = {}
    data = {}
    for key, value in fields.items():
        if key in TOP_LEVEL:
            out[key] = value
        else:
            data[key] = value
    if data:
        out["data"] = data
    return out


class TraceWriter:
    def __init__(self, path: str, node: str, *, level: str = "all") -> None:
        if level not in LEVELS:
            raise ValueError(f"trace level must be one of {', '.join(LEVELS)}")
        self.path = path
        self.node = node
        self.level = level
        self.messages = level == "all"       # trace send/recv
        self.enabled = level != "none"
        self._node_js = json.dumps(node)
        self._names: dict[Any, str] = {}     # peer / type / mid -> its JSON text
        self._buf: list[str] = []
        self._f = open(path, "a", encoding="utf-8") if self.enabled else None  # noqa: SIM115
        self.events = 0

    def _js(self, v: Any) -> str:
        s = self._names.get(v)
        if s is None:
            s = json.dumps(v)
            if len(self._names) < 4096:          # names and types repeat; ids mostly do not
                self._names[v] = s
        return s

    def message(self, ev: str, ts: float, lc: int, mid: Any, type: str, peer: str,
                data: dict[str, Any] | None = None) -> None:
        """A ``send``/``recv``/``drop`` of one message, formatted without json.dumps when it can be."""
        if not self.enabled or (not self.messages and data is None):
            return
        js = self._js
        head = f'{{"data":{_encode(data)},' if data is not None else "{"
        self._buf.append(
            f'{head}"ev":"{ev}","lc":{lc},"mid":{_encode(mid)},"node":{self._node_js},'
            f'"peer":{js(peer)},"ts":{ts:.6f},"type":{js(type)}}}\n')
        self.events += 1

    def event(self, ev: str, ts: float, lc: int, **fields: Any) -> None:
        """Any other event: ``timer``, ``state``, ``commit``, ``request``, ``reply``, ``log``..."""
        if not self.enabled or (not self.messages and ev in _PER_MESSAGE):
            return
        rec = {"ts": round(ts, 6), "node": self.node, "lc": lc, "ev": ev, **fields}
        self._buf.append(_encode(rec) + "\n")
        self.events += 1

    def flush(self) -> None:
        if self._buf and self._f is not None:
            self._f.write("".join(self._buf))
            self._f.flush()
            self._buf.clear()

    def close(self) -> None:
        self.flush()
        if self._f is not None:
            self._f.close()
            self._f = None


def last_lc(path: str, tail: int = 65536) -> int:
    """The highest ``lc`` among the last lines of a trace file (0 if none): a restart goes on from it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail))
            chunk = f.read()
    except OSError:
        return 0
    best = 0
    for line in chunk.splitlines()[-200:]:
        try:
            best = max(best, int(json.loads(line).get("lc", 0)))
        except (ValueError, TypeError, AttributeError):
            continue       # the first line of the chunk may be cut, a torn last line too
    return best
