"""What a broadcast run shows, from its history, final reads and trace: one reading shared by
the broadcast workload's figures (metrics.json), the gossip checkers and the spread view.

* the **history** says which broadcasts and deletes clients saw acknowledged, and what reads
  during the run returned (a run-time read has ``key: null``; a final read names its node);
* **final.json** holds each live node's final read (``reads: {node: [values]}``);
* the **trace** holds each node's ``apply`` events: ``{f: add|del, value, via}``. A value's
  *accept* is its first ``add`` with ``via: client`` (the node took it and answered); a node
  *holds* it from its last ``add`` on (a restarted node learns everything again).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.history import OK, Op, pair_ops
from lab.metrics import percentile, quantiles_ms, server_messages

UPDATES = ("broadcast", "delete", "schema")   # the ops that change state (msgs_per_op's divisor)


@dataclass
class Facts:
    acked: dict[Any, float] = field(default_factory=dict)     # value -> client heard ok
    deleted: dict[Any, float] = field(default_factory=dict)   # value -> its delete's ok
    delete_tried: set[Any] = field(default_factory=set)       # any delete invoked, whatever came
    reads: list[Op] = field(default_factory=list)              # ok reads during the run
    updates: int = 0                                           # update ops invoked
    finals: dict[str, list[Any]] | None = None                 # live node -> its final read

    def settled(self) -> dict[Any, float]:
        """Acknowledged values no delete was tried on: what every live node must end with."""
        return {v: t for v, t in self.acked.items() if v not in self.delete_tried}


def _hashable(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def facts(history: Iterable[dict[str, Any]], final: dict[str, Any] | None) -> Facts:
    """The history's facts; the final reads from ``final`` (final.json), else from the history
    itself (a final read's ``key`` is its node)."""
    out = Facts()
    finals: dict[str, list[Any]] = {}
    for op in pair_ops(history):
        if op.f in UPDATES:
            out.updates += 1
        if op.f == "broadcast" and op.outcome == OK and _hashable(op.value_in):
            out.acked.setdefault(op.value_in, op.complete_ts)
        elif op.f == "delete" and _hashable(op.value_in):
            out.delete_tried.add(op.value_in)
            if op.outcome == OK:
                out.deleted.setdefault(op.value_in, op.complete_ts)
        elif op.f == "read" and op.outcome == OK and isinstance(op.value_out, list):
            if op.key is None:
                out.reads.append(op)
            else:
                finals[str(op.key)] = op.value_out
    reads = (final or {}).get("reads")
    if isinstance(reads, dict) and reads:
        out.finals = {str(n): list(v) for n, v in reads.items() if isinstance(v, list)}
    elif finals:
        out.finals = finals
    return out


@dataclass
class Arrivals:
    accepted: dict[Any, float] = field(default_factory=dict)           # value -> first client add
    added: dict[Any, dict[str, float]] = field(default_factory=dict)   # value -> node -> last add
    removed: dict[Any, dict[str, float]] = field(default_factory=dict)  # value -> node -> last del
    events: list[tuple[float, str, str, Any]] = field(default_factory=list)  # (ts, node, f, value)


def arrivals(trace: Iterable[dict[str, Any]]) -> Arrivals:
    out = Arrivals()
    for e in trace:
        if e.get("ev") != "apply":
            continue
        d = e.get("data")
        if not isinstance(d, dict) or d.get("f") not in ("add", "del") or not _hashable(d.get("value")):
            continue
        v, node, ts = d["value"], str(e.get("node")), float(e.get("ts", 0.0))
        out.events.append((ts, node, d["f"], v))
        if d["f"] == "add":
            out.added.setdefault(v, {})[node] = ts
            if d.get("via") == "client" and v not in out.accepted:
                out.accepted[v] = ts
        else:
            out.removed.setdefault(v, {})[node] = ts
    return out


def missing(f: Facts) -> dict[Any, list[str]]:
    """Settled values some live node's final read lacks: value -> those nodes."""
    out: dict[Any, list[str]] = {}
    if f.finals is None:
        return out
    held = {n: set(v for v in vals if _hashable(v)) for n, vals in f.finals.items()}
    for v in f.settled():
        lacking = [n for n in sorted(held) if v not in held[n]]
        if lacking:
            out[v] = lacking
    return out


def stable_times(f: Facts, a: Arrivals) -> dict[Any, float]:
    """Settled value -> seconds from its accept until every live node held it for good.
    Values some live node lacks at the end, or the trace does not show, are left out."""
    if not f.finals:
        return {}
    lost = missing(f)
    out = {}
    for v in f.settled():
        if v in lost or v not in a.accepted:
            continue
        at = a.added.get(v, {})
        times = [at.get(n) for n in f.finals]
        if any(t is None for t in times):
            continue
        out[v] = max(0.0, max(times) - a.accepted[v])        # type: ignore[type-var]
    return out


def stale(f: Facts) -> int | None:
    """Acknowledged values that some read invoked after the acknowledgement did not show
    (Maelstrom's stale count); None when the run made no reads."""
    if not f.reads:
        return None
    reads = sorted(((op.invoke_ts, set(x for x in op.value_out if _hashable(x))) for op in f.reads),
                   key=lambda r: r[0])
    count = 0
    for v, t in f.settled().items():
        if any(ts > t and v not in seen for ts, seen in reads):
            count += 1
    return count


def _mean_p99(xs: Sequence[float], digits: int = 3) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "p99": None}
    return {"mean": round(sum(xs) / len(xs), digits), "p99": round(percentile(xs, 99) or 0.0, digits)}


def metrics(trace: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]],
            final: dict[str, Any], nodes: Sequence[str], round_s: float) -> dict[str, Any]:
    """The broadcast workload's figures for metrics.json (docs/gossip.md defines each)."""
    f = facts(history, final)
    a = arrivals(trace)
    msgs = server_messages(trace, nodes)
    times = list(stable_times(f, a).values())
    return {
        "msgs_per_op": None if msgs is None or not f.updates else round(msgs / f.updates, 3),
        "stable_latency_ms": quantiles_ms(times),
        "lost": None if f.finals is None else len(missing(f)),
        "stale": stale(f),
        "dissemination": {
            "rounds": _mean_p99([t / round_s for t in times] if round_s > 0 else []),
            "seconds": _mean_p99(times, 6),
        },
    }


def spread_curves(f: Facts, a: Arrivals, step: float, limit: float) -> list[tuple[float, float]]:
    """(seconds since accept, mean fraction of live nodes holding a value) on a grid up to
    ``limit``: over the settled values the trace shows, each node counted from its last add."""
    if not f.finals:
        return []
    nodes = list(f.finals)
    per_value = []
    for v in f.settled():
        if v not in a.accepted:
            continue
        at = a.added.get(v, {})
        per_value.append(sorted(at[n] - a.accepted[v] if n in at else math.inf for n in nodes))
    if not per_value:
        return []
    out = []
    steps = int(limit / step) + 1
    for i in range(steps):
        x = i * step
        out.append((x, sum(sum(1 for t in ts if t <= x + 1e-9) / len(ts) for ts in per_value)
                    / len(per_value)))
    return out
