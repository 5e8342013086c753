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
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii as _js_str
from typing import Any

# all: everything. protocol: what the core traces (state, commit, apply...), drops and logs, but
# not the per-message and per-request lines (send, recv, timer, request, reply): for benchmarks.
LEVELS = ("all", "protocol", "none")
PER_MESSAGE = frozenset({"send", "recv", "timer", "request", "reply"})


def left_out(level: str, lines: Iterable[str]) -> list[str]:
    """Which of the trace lines ``lines`` (``ev`` names) a trace at ``level`` does not hold, sorted."""
    if level == "none":
        return sorted(lines)
    return sorted(PER_MESSAGE.intersection(lines)) if level == "protocol" else []

# One encoder for every line: json.dumps with arguments builds a new encoder per call (3x slower).
_encode = json.JSONEncoder(sort_keys=True, default=str).encode


TOP_LEVEL = frozenset({"mid", "type", "peer"})
# JSON of the values a fast-path trace line may hold (exact types: a bool is not an int here).
# Bytes (a signed request's ``sig``) are written as the generic path's ``default=str`` writes
# them, so a PBFT request line is a template fill too, not a pass through the JSON encoder.
_SCALAR = {int: int.__repr__, str: _js_str, type(None): lambda v: "null",
           bytes: lambda v: _js_str(str(v))}


def core_fields(fields: dict[str, Any], out: dict[str, Any] | None = None) -> dict[str, Any]:
    """A core's ``ctx.trace(ev, **fields)`` as event keys: ``mid``/``type``/``peer`` stay at
    the top, everything else goes under ``data`` (a core may also pass ``data={...}``).
    Shared by the agent and the simulator so both runtimes write the same events. The keys
    go into ``out`` when given (the event being built: no dict in between), else a new dict."""
    if out is None:
        out = {}
    data = fields.get("data")
    if len(fields) == 1 and type(data) is dict and TOP_LEVEL.isdisjoint(data):
        if data:
            out["data"] = {**data}      # the common ``data={...}``: one copy
        return out
    if "data" in fields:
        fields = {**fields.pop("data"), **fields}
    if TOP_LEVEL.isdisjoint(fields):
        if fields:
            out["data"] = fields
        return out
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
    for each of the ``n`` keys, then ``lc`` and ``ts`` (its text, from :meth:`TraceWriter.ts_text`);
    KeyError for a value of another type.
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


_typed_fillers: dict[str, Any] = {}
_SIGN = {int: "i", str: "s", type(None): "n"}      # a value's type in a signature
_SLOT = {"i": "%d", "s": "%s", "n": "null"}          # ... and what its template holds for it


def _typed_filler(sig: str) -> Any:
    """``fill(data, keys, template, lc, ts)`` for values of the types in ``sig`` (one letter a
    key, :data:`_SIGN`), with the template made for them (:data:`_SLOT`: an int goes in as
    ``%d``, a null is written in); None when a value is of another type. Cheaper than
    :func:`_filler` (no conversion call per int or null): an event's values mostly keep their
    types from one line to the next (a commit's index, term and hash always do)."""
    fill = _typed_fillers.get(sig)
    if fill is None:
        checks = " and ".join(
            f"type(v{i} := data[keys[{i}]]) is {'str' if c == 's' else 'int'}" if c != "n"
            else f"data[keys[{i}]] is None" for i, c in enumerate(sig)) or "True"
        values = "".join(f"J(v{i}), " if c == "s" else f"v{i}, " if c == "i" else ""
                         for i, c in enumerate(sig))
        namespace: dict[str, Any] = {"J": _js_str}
        exec(f"def fill(data, keys, template, lc, ts):\n    if {checks}:\n"  # noqa: S102
             f"        return template % ({values}lc, ts)\n    return None\n", namespace)
        fill = _typed_fillers[sig] = namespace["fill"]
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
        # event (or (event, "op"/"result") for client lines) -> the plan of the keys it had last
        self._by_ev: dict[Any, tuple[Any, ...]] = {}
        self._buf: list[str] = []
        self._f = open(path, "a", encoding="utf-8") if self.enabled else None  # noqa: SIM115
        self._written = 0                    # lines flushed; the buffer holds the rest
        # The last ts formatted, and its text: the agent stamps every line of a handler with
        # the time the handler began, so one formatting serves them all.
        self._ts: float | None = None
        self._ts_text = ""

    @property
    def events(self) -> int:
        """Lines traced so far (written or buffered)."""
        return self._written + len(self._buf)

    def ts_text(self, ts: float) -> str:
        """``ts`` to the microsecond, as every line gives it (formatted once for a run of equal ts)."""
        if ts != self._ts:
            self._ts, self._ts_text = ts, f"{ts:.6f}"
        return self._ts_text

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
            f'"peer":{js(peer)},"ts":{self._ts_text if ts == self._ts else self.ts_text(ts)},'
            f'"type":{js(type)}}}\n')

    def event(self, ev: str, ts: float, lc: int, **fields: Any) -> None:
        """Any other event: ``timer``, ``state``, ``commit``, ``request``, ``reply``, ``log``..."""
        if not self.enabled or (not self.messages and ev in PER_MESSAGE):
            return
        data = fields.get("data") if len(fields) == 1 else None
        if type(data) is dict and len(data) == 2 and "client" in data:
            first, second = data          # two keys, "client" among them
            key = second if first == "client" else first
            if self._client_line(ev, ts, lc, data["client"], key, data[key]):
                return
        self._generic(ev, ts, lc, fields)

    def _generic(self, ev: str, ts: float, lc: int, fields: dict[str, Any]) -> None:
        rec = {"ts": round(ts, 6), "node": self.node, "lc": lc, "ev": ev, **fields}
        self._buf.append(_encode(rec) + "\n")

    def client_event(self, ev: str, ts: float, lc: int, client: str, key: str, inner: Any) -> None:
        """The agent's ``request`` (``key`` "op") or ``reply`` (``key`` "result") line: what
        :meth:`event` writes for ``data={"client": client, key: inner}``, without the map."""
        if not self.messages:
            return
        if not self._client_line(ev, ts, lc, client, key, inner):
            self._generic(ev, ts, lc, {"data": {"client": client, key: inner}})

    def core_data(self, ev: str, ts: float, lc: int, data: dict[str, Any]) -> None:
        """A core's ``ctx.trace(ev, data=data)``, as :meth:`core_event` writes it. A core traces
        an event with the same keys line after line (``commit``: index, term, hash): the plan of
        the event's last keys serves when ``data`` has as many keys, all of them the plan's (so
        the same set), with no tuple of the keys made and looked up per line."""
        plan = self._by_ev.get(ev)
        if plan is not None and type(data) is dict and len(data) == len(plan[0]):
            line = self._fill(plan, data, lc, ts)
            if line is not None:
                self._buf.append(line)
                return
        self.core_event(ev, ts, lc, {"data": data})

    def core_event(self, ev: str, ts: float, lc: int, fields: dict[str, Any]) -> None:
        """A core's ``ctx.trace(ev, **fields)``. A core traces ``commit`` and ``apply`` for every
        log entry on every node, so the common shape (only ``data``, a flat map of ints, strings,
        bytes and nulls) is filled into a template made once per event and key set; the line is what
        :meth:`event` would write but for ``ts``, given to the microsecond as in :meth:`message`."""
        data = fields.get("data")
        if type(data) is dict and len(fields) == 1:
            keys = tuple(data)
            # Plans are made only for events the level keeps: a cached one needs no level check.
            plan = self._plans.get((ev, keys))
            if plan is None and (ev, keys) not in self._plans:
                if not self.enabled or (not self.messages and ev in PER_MESSAGE):
                    return
                plan = self._plan(ev, keys, data)
            if plan is not None:
                line = self._fill(plan, data, lc, ts)
                if line is not None:
                    if len(self._by_ev) < 256:
                        self._by_ev[ev] = plan
                    self._buf.append(line)
                    return
        if not self.enabled or (not self.messages and ev in PER_MESSAGE):
            return
        self._generic(ev, ts, lc, core_fields(fields))

    def _client_line(self, ev: str, ts: float, lc: int, client: Any, key: Any, inner: Any) -> bool:
        """Buffer a ``request`` or ``reply`` line (data ``{client, op}`` or ``{client, result}``,
        the op or result a flat map) from a template as in :meth:`core_event`; False (nothing
        written) for any other shape. The agent writes one of each per client op: through the
        JSON encoder, the two cost about a quarter of a loaded leader's time."""
        if type(client) is not str or type(inner) is not dict or type(key) is not str or key < "client":
            return False
        # As in core_data: the plan of the last op or result of this event, if ``inner`` has its keys.
        plan = self._by_ev.get((ev, key))
        rest = None
        if plan is not None and len(inner) == len(plan[0]):
            rest = self._fill(plan, inner, lc, ts)
        if rest is None:
            keys = tuple(inner)
            plan = self._plans.get((ev, key, keys), False)
            if plan is False:
                plan = self._plan(ev, keys, inner, key)
            rest = None if plan is None else self._fill(plan, inner, lc, ts)
            if rest is None:
                return False
            if len(self._by_ev) < 256:
                self._by_ev[(ev, key)] = plan
        self._buf.append(f'{{"data": {{"client": {_js_str(client)}, {_js_str(key)}: {rest}')
        return True

    def _fill(self, plan: tuple[Any, ...], data: dict[str, Any], lc: int, ts: float) -> str | None:
        """The line (or a client line's tail) of ``plan`` for ``data``; None when a value is not
        an int, a string or null, or one of the plan's keys is missing. The template typed for
        the values the plan was made with first, the one for any such values if they have
        changed type."""
        order, template, fill, typed_template, typed_fill = plan
        ts_text = self._ts_text if ts == self._ts else self.ts_text(ts)
        try:
            if typed_fill is not None:
                line = typed_fill(data, order, typed_template, lc, ts_text)
                if line is not None:
                    return line
            return fill(data, order, template, lc, ts_text)
        except KeyError:
            return None

    def _plan(self, ev: str, keys: tuple[Any, ...], data: dict[str, Any], outer: str | None = None
              ) -> tuple[Any, ...] | None:
        """The templates of an event whose data is the flat map with ``keys`` (``data``, one such
        map, gives the types of the typed template); with ``outer``, of the line's tail after
        ``{"data": {"client": ..., outer: `` (data holds that map)."""
        plan = None
        if keys and all(type(k) is str for k in keys) and (outer is not None or TOP_LEVEL.isdisjoint(keys)):
            order = tuple(sorted(keys))    # json's sort_keys order, as in every other line

            def template(slots: Any) -> str:
                items = ", ".join(_js_str(k).replace("%", "%%") + ": " + slot for k, slot in zip(order, slots, strict=True))
                head = f'{{"data": {{{items}}}, ' if outer is None else f"{{{items}}}}}, "
                head += f'"ev": {_js_str(ev).replace("%", "%%")}, '
                return head + f'"lc": %d, "node": {self._node_js.replace("%", "%%")}, "ts": %s}}\n'
            sig = "".join(_SIGN.get(type(data[k]), "?") for k in order)
            typed = (None, None) if "?" in sig else (template([_SLOT[c] for c in sig]), _typed_filler(sig))
            plan = order, template(["%s"] * len(order)), _filler(len(order)), *typed
        if len(self._plans) < 256:
            self._plans[(ev, keys) if outer is None else (ev, outer, keys)] = plan
        return plan

    def flush(self) -> None:
        if self._buf and self._f is not None:
            self._f.write("".join(self._buf))
            self._f.flush()
            self._written += len(self._buf)
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
