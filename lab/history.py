"""Client operation histories (``history.jsonl``), in Jepsen's model.

A history is a list of events, one dict each: ``process`` (an integer or a
string), ``type`` (``invoke`` ``ok`` ``fail`` ``info``), ``f``, ``key``,
``value``, ``ts``, and on a ``fail`` an optional ``error``.
A process has at most one operation in flight: its ``invoke`` is followed by
exactly one completion. ``info`` means the outcome is not known, so the
operation may or may not have taken effect, at any time after its invocation;
the process that issued it is then retired (it may still be "in flight"
forever) and the client continues under a fresh process number.

The runner records with :class:`History`; checkers read with
:func:`load_history` and turn events into operations with :func:`pair_ops`.
Jepsen's ``history.edn`` is read by ``lab/jepsen_edn.py`` into the same events.
Events of the process ``nemesis`` (Jepsen's fault injector) are not client
operations: loading and pairing leave them out, as Jepsen's checkers do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import CheckError, ProtocolError
from lab.tracefile import read_jsonl

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
EVENT_TYPES = (INVOKE, OK, FAIL, INFO)
OUTCOMES = (OK, FAIL, INFO)
FIELDS = ("process", "type", "f", "key", "value", "ts")
NEMESIS = frozenset({"nemesis", ":nemesis"})   # Jepsen's fault injector: not a client
Process = int | str


def _round_ts(ts: float) -> float:
    # Same precision as trace.jsonl, so a sim history is byte-identical for a seed.
    return round(float(ts), 6)


class History:
    """Records a run's client operations as they happen.

    ``invoke`` then ``complete`` per operation; the pair shares the process
    number. After an ``info`` completion the client must go on under
    :meth:`fresh_process` (``complete`` returns that number for convenience).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._in_flight: dict[int, dict[str, Any]] = {}
        self._retired: set[int] = set()
        self._max_process = -1

    def invoke(self, process: int, f: str, key: Any, value: Any, ts: float) -> dict[str, Any]:
        """Record that ``process`` asked for ``f`` on ``key``; returns the event."""
        if process in self._in_flight:
            raise ProtocolError(f"history: process {process} invoked {f} with an operation in flight")
        if process in self._retired:
            raise ProtocolError(f"history: process {process} was retired by an info outcome; "
                                "use fresh_process()")
        ev = {"process": process, "type": INVOKE, "f": f, "key": key, "value": value,
              "ts": _round_ts(ts)}
        self._in_flight[process] = ev
        self._max_process = max(self._max_process, process)
        self.events.append(ev)
        return ev

    def complete(self, process: int, type: str, value: Any, ts: float,
                 error: Any = None) -> dict[str, Any]:
        """Record the outcome (``ok`` ``fail`` ``info``) of ``process``'s operation; a ``fail``
        keeps the ``error`` the system gave, if any (``cas_mismatch``, ``aborted``...)."""
        if type not in OUTCOMES:
            raise ProtocolError(f"history: outcome must be one of {', '.join(OUTCOMES)}, got {type!r}")
        inv = self._in_flight.pop(process, None)
        if inv is None:
            raise ProtocolError(f"history: process {process} completed with no operation in flight")
        ev = {"process": process, "type": type, "f": inv["f"], "key": inv["key"], "value": value,
              "ts": _round_ts(max(ts, inv["ts"]))}
        if type == FAIL and error is not None:
            ev["error"] = error
        if type == INFO:
            self._retired.add(process)
        self.events.append(ev)
        return ev

    def fresh_process(self) -> int:
        """A process number never used before (for a client whose last op ended in info)."""
        self._max_process += 1
        return self._max_process

    @property
    def in_flight(self) -> dict[int, dict[str, Any]]:
        """Invocations still waiting for an outcome, by process."""
        return dict(self._in_flight)

    def close(self, ts: float) -> None:
        """End of run: every operation still in flight gets an ``info`` outcome."""
        for process in sorted(self._in_flight):
            self.complete(process, INFO, None, ts)

    def write(self, path: str | Path) -> None:
        write_history(self.events, path)


def write_history(events: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write events as jsonl, keys sorted, one event a line (``error`` only where there is one)."""
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            line = {k: ev.get(k) for k in FIELDS}
            if ev.get("error") is not None:
                line["error"] = ev["error"]
            fh.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_process(x: Any) -> bool:
    """A process names a client: an integer (zlab's runner) or a string (``"c1"``, Jepsen's
    ``nemesis``)."""
    return _is_int(x) or (isinstance(x, str) and x != "")


def is_nemesis(ev: dict[str, Any]) -> bool:
    return ev.get("process") in NEMESIS


def client_name(process: Process) -> str:
    """The name a process's requests carry on the wire (``client`` beside ``seq``): how a
    checker ties a history's operation to the trace's ``request`` events."""
    return f"c{process}"


def process_order(p: Process) -> tuple[int, int, str]:
    """A sort key that orders integer and string processes alike (integers first)."""
    return (0, p, "") if isinstance(p, int) else (1, 0, p)


def validate_event(ev: Any) -> str | None:
    """What is wrong with one event, or None. Keys and values are otherwise free."""
    if not isinstance(ev, dict):
        return f"expected a JSON object, got {type(ev).__name__}"
    for name in ("process", "type", "f", "ts"):
        if name not in ev:
            return f"missing field {name!r}"
    if not is_process(ev["process"]):
        return f"process must be an integer or a string, got {ev['process']!r}"
    if ev["type"] not in EVENT_TYPES:
        return f"type must be one of {', '.join(EVENT_TYPES)}, got {ev['type']!r}"
    if not isinstance(ev["f"], str) or not ev["f"]:
        return f"f must be a non-empty string, got {ev['f']!r}"
    key = ev.get("key")
    if key is not None and not isinstance(key, str) and not _is_int(key):
        return f"key must be a string, an integer or null, got {key!r}"
    ts = ev["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        return f"ts must be a non-negative number of seconds, got {ts!r}"
    return None


def load_history(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate ``history.jsonl``. Raises CheckError ``path:line: what``."""
    return validated((f"{path}:{lineno}", ev) for lineno, ev in read_jsonl(path, "history"))


def validated(items: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The client events of ``(where, event)`` pairs, each checked; CheckError ``where: what``.

    Besides each event's own shape it checks the process discipline: no
    completion without an invocation, no second invocation while one is in
    flight, no completion before its invocation, a completion's ``f`` and
    ``key`` equal to its invocation's. ``key`` and ``value`` may be left out
    (they mean null); a completion's ``error`` is kept. The nemesis's events
    are left out.
    """
    events: list[dict[str, Any]] = []
    open_: dict[Process, dict[str, Any]] = {}
    for where, ev in items:
        problem = validate_event(ev)
        if problem is None and is_nemesis(ev):
            continue
        if problem is None:
            problem = _check_discipline(ev, open_)
        if problem is not None:
            raise CheckError(f"{where}: {problem}")
        out = {"process": ev["process"], "type": ev["type"], "f": ev["f"],
               "key": ev.get("key"), "value": ev.get("value"), "ts": ev["ts"]}
        if ev.get("error") is not None and ev["type"] != INVOKE:
            out["error"] = ev["error"]
        events.append(out)
    return events


def _check_discipline(ev: dict[str, Any], open_: dict[Process, dict[str, Any]]) -> str | None:
    """One process, one op in flight; updates ``open_`` when the event is fine."""
    p = ev["process"]
    if ev["type"] == INVOKE:
        if p in open_:
            return f"process {p} invokes {ev['f']} while its {open_[p]['f']} is still in flight"
        open_[p] = ev
        return None
    inv = open_.get(p)
    if inv is None:
        return f"{ev['type']} for process {p}, which has no operation in flight"
    if ev["f"] != inv["f"] or ev.get("key") != inv.get("key"):
        return (f"{ev['type']} of process {p} is {ev['f']} {ev.get('key')!r} but it invoked "
                f"{inv['f']} {inv.get('key')!r}")
    if ev["ts"] < inv["ts"]:
        return f"{ev['type']} of process {p} at ts {ev['ts']} is before its invocation at {inv['ts']}"
    del open_[p]
    return None


@dataclass(frozen=True)
class Op:
    """One client operation: an invocation and its outcome."""

    process: Process
    f: str
    key: Any
    value_in: Any          # the invocation's value (what was written, [expected, new] for cas)
    value_out: Any         # the completion's value (what was read); None for info
    invoke_ts: float
    complete_ts: float     # math.inf when the outcome is info or never came
    outcome: str           # ok | fail | info

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for counterexamples (inf becomes null)."""
        return {"process": self.process, "f": self.f, "key": self.key, "value": self.value_in,
                "result": self.value_out, "invoke_ts": self.invoke_ts,
                "complete_ts": None if math.isinf(self.complete_ts) else self.complete_ts,
                "outcome": self.outcome}


def pair_ops(events: Iterable[dict[str, Any]]) -> list[Op]:
    """Match each invocation with its completion, in invocation order.

    An ``info`` completion, or none at all, gives ``complete_ts = inf``: the
    operation may take effect at any time after it was invoked.
    """
    ops: list[Op | None] = []
    open_: dict[Process, tuple[int, dict[str, Any]]] = {}
    for n, ev in enumerate(events):
        problem = validate_event(ev)
        if problem is not None:
            raise CheckError(f"history event {n}: {problem}")
        if is_nemesis(ev):
            continue
        p = ev["process"]
        if ev["type"] == INVOKE:
            if p in open_:
                raise CheckError(f"history event {n}: process {p} invokes while an op is in flight")
            open_[p] = (len(ops), ev)
            ops.append(None)
            continue
        if p not in open_:
            raise CheckError(f"history event {n}: {ev['type']} for process {p} with no op in flight")
        slot, inv = open_.pop(p)
        info = ev["type"] == INFO
        ops[slot] = Op(p, inv["f"], inv.get("key"), inv.get("value"),
                       None if info else ev.get("value"), inv["ts"],
                       math.inf if info else ev["ts"], ev["type"])
    for slot, inv in open_.values():
        ops[slot] = Op(inv["process"], inv["f"], inv.get("key"), inv.get("value"), None,
                       inv["ts"], math.inf, INFO)
    return [op for op in ops if op is not None]
