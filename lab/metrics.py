"""Figures a run measures, for ``metrics.json`` in its run directory (DESIGN.md).

Every run gets the generic ones, computed from the trace and the history
alone; a workload adds its own through :meth:`lab.workloads.Workload.metrics`
(the broadcast workload's ``stable_latency_ms``, ``lost``, ``dissemination``...).

* ``ops``: client operations by outcome (``ok``, ``fail``, ``info``), final reads included;
* ``throughput``: ok operations per second of the workload's duration;
* ``latency_ms``: ``{p50, p99, max}`` of ok operations, invocation to completion;
* ``msgs_per_op``: messages one node sent another over the whole run (heartbeats, gossip
  and retries included), per client operation invoked: Maelstrom's ``:net :servers
  :msgs-per-op``. ``null`` when the trace has no ``send`` events (a trace level that
  leaves messages out, as the benchmarks use).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from lab.history import pair_ops


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, math.ceil(q / 100.0 * len(ordered)) - 1)
    return ordered[k]


def quantiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """``{p50, p99, max}`` in milliseconds (rounded to µs), None each for no values."""
    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000.0, 3)
    return {"p50": ms(percentile(seconds, 50)), "p99": ms(percentile(seconds, 99)),
            "max": ms(max(seconds) if seconds else None)}


def server_messages(trace: Iterable[dict[str, Any]], nodes: Iterable[str]) -> int | None:
    """How many messages the lab's nodes sent one another; None if the trace holds no sends."""
    names = set(nodes)
    sends = [e for e in trace if e.get("ev") == "send"]
    if not sends:
        return None
    return sum(1 for e in sends if e.get("node") in names and e.get("peer") in names)


def generic(trace: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]],
            nodes: Sequence[str], duration: float) -> dict[str, Any]:
    ops = pair_ops(history)
    by = {"ok": 0, "fail": 0, "info": 0}
    lat: list[float] = []
    for op in ops:
        by[op.outcome] = by.get(op.outcome, 0) + 1
        if op.outcome == "ok":
            lat.append(op.complete_ts - op.invoke_ts)
    msgs = server_messages(trace, nodes)
    return {"ops": by,
            "throughput": round(by["ok"] / duration, 3) if duration > 0 else None,
            "latency_ms": quantiles_ms(lat),
            "msgs_per_op": None if msgs is None or not ops else round(msgs / len(ops), 3)}
