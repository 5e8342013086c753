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
from json.encoder import encode_basestring_ascii as _js_str
from typing import Any

# all: everything. protocol: what the core traces (state, commit, apply...), drops and logs, but
# not the per-message and per-request lines (send, recv, timer, request, reply): for benchmarks.
LEVELS = ("all", "protocol", "none")
_PER_MESSAGE = frozenset({"send", "recv", "timer", "request", "reply"})
# One encoder for every line: json.dumps with arguments builds a new encoder per call (3x slower).
_encode = json.JSONEncoder(sort_keys=True, default=str).encode


TOP_LEVEL = frozenset({"mid", "type", "peer"})
# JSON of the values a fast-path trace line may hold (exact types: a bool is not an int here).
# Bytes (a signed request's ``sig``) are written as the generic path's ``default=str`` writes
# them, so a PBFT request line is a template fill too, not a pass through the JSON encoder.
_SCALAR = {int: int.__repr__, str: _js_str, type(None): lambda v: "null",
           bytes: lambda v: _js_str(str(v))}


def core_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A core's ``ctx.trace(ev, **fields)`` as event keys: ``mid``/``type``/``peer`` stay at
    the top, everything else goes under ``data`` (a core may also pass ``data={...}``).
    Shared by the agent and the simulator so both runtimes write the same events."""
    data = fields.get("data")
    if len(fields) == 1 and type(data) is dict and TOP_LEVEL.isdisjoint(data):
        return {"data": {**data}} if data else {}      # the common ``data={...}``: one copy
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

_fillers: dict[int, Any] = {}


def _filler(n: int) -> Any:
    """``fill(data, keys, template, lc, ts)``: the template filled with the JSON of ``data[key]``
    for each of the ``n`` keys, then ``lc`` and ``ts``; KeyError for a value of another type.
    Written out per ``n`` (the code holds no key or value, only indexes into ``keys``): one
    expression, where a loop over the keys costs about a third more on every commit and apply."""
    fill = _fillers.get(n)
    if fill is None:
        values = "".join(f"C[type(v{i} := data[keys[{i}]])](v{i}), " for i in range(n))
        namespace: dict[str, Any] = {"C": _SCALAR}
        exec(f"def fill(data, keys, template, lc, ts):\n    return template % ({values}lc, ts)\n",  # noqa: S102
             namespace)
        fill = _fillers[n] = namespace["fill"]
    return fill


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
        # (event, a core's flat data keys in its order) -> (the keys sorted, the line's template),
        # or None when such data cannot take the fast path.
        self._plans: dict[tuple[Any, ...], tuple[tuple[str, ...], str, Any] | None] = {}
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
        data = fields.get("data") if len(fields) == 1 else None
        if type(data) is dict and len(data) == 2:
            line = self._client_line(ev, ts, lc, data)
            if line is not None:
                self._buf.append(line)
                self.events += 1
                return
        rec = {"ts": round(ts, 6), "node": self.node, "lc": lc, "ev": ev, **fields}
        self._buf.append(_encode(rec) + "\n")
        self.events += 1

    def core_event(self, ev: str, ts: float, lc: int, fields: dict[str, Any]) -> None:
        """A core's ``ctx.trace(ev, **fields)``. A core traces ``commit`` and ``apply`` for every
        log entry on every node, so the common shape (only ``data``, a flat map of ints, strings,
        bytes and nulls) is filled into a template made once per event and key set; the line is what
        :meth:`event` would write but for ``ts``, given to the microsecond as in :meth:`message`."""
        if not self.enabled or (not self.messages and ev in _PER_MESSAGE):
            return
        data = fields.get("data") if len(fields) == 1 else None
        if type(data) is dict:
            keys = tuple(data)
            plan = self._plans.get((ev, keys), False)
            if plan is False:
                plan = self._plan(ev, keys)
            if plan is not None:
                order, template, fill = plan
                try:
                    line = fill(data, order, template, lc, ts)
                except KeyError:        # a value that is not an int, a string, bytes or null
                    pass
                else:
                    self._buf.append(line)
                    self.events += 1
                    return
        self.event(ev, ts, lc, **core_fields(fields))

    def _client_line(self, ev: str, ts: float, lc: int, data: dict[str, Any]) -> str | None:
        """A ``request`` or ``reply`` line (data ``{client, op}`` or ``{client, result}``, the op or
        result a flat map) from a template as in :meth:`core_event`; None for any other shape.
        The agent writes one of each per client op: through the JSON encoder, the two cost
        about a quarter of a loaded leader's time."""
        client = data.get("client")
        if type(client) is not str:
            return None
        first, key = data          # two keys, "client" among them
        if key == "client":
            key = first
        inner = data[key]
        if type(inner) is not dict or type(key) is not str or key < "client":
            return None
        keys = tuple(inner)
        plan = self._plans.get((ev, key, keys), False)
        if plan is False:
            plan = self._plan(ev, keys, key)
        if plan is None:
            return None
        order, template, fill = plan
        try:
            rest = fill(inner, order, template, lc, ts)
        except KeyError:        # a value that is not an int, a string, bytes or null
            return None
        return f'{{"data": {{"client": {_js_str(client)}, {_js_str(key)}: {rest}'

    def _plan(self, ev: str, keys: tuple[Any, ...], outer: str | None = None
              ) -> tuple[tuple[str, ...], str, Any] | None:
        """The template of an event whose data is the flat map with ``keys``; with ``outer``,
        of the line's tail after ``{"data": {"client": ..., outer: `` (data holds that map)."""
        plan = None
        if keys and all(type(k) is str for k in keys) and (outer is not None or TOP_LEVEL.isdisjoint(keys)):
            order = tuple(sorted(keys))    # json's sort_keys order, as in every other line
            items = ", ".join(_js_str(k).replace("%", "%%") + ": %s" for k in order)
            head = f'{{"data": {{{items}}}, ' if outer is None else f"{{{items}}}}}, "
            head += f'"ev": {_js_str(ev).replace("%", "%%")}, '
            plan = order, head + f'"lc": %d, "node": {self._node_js.replace("%", "%%")}, "ts": %.6f}}\n', _filler(len(order))
        if len(self._plans) < 256:
            self._plans[(ev, keys) if outer is None else (ev, outer, keys)] = plan
        return plan

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
