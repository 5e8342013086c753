"""The fault suite of ``zlab compare`` and what is measured in each of its runs.

Every run of the suite has the same :class:`Timeline`: the workload runs ``duration``
seconds, one fault applies at ``at`` and is reverted ``window`` later (a YAML ``for:``), and
the rest of the workload is the "after" window. The fault is written against the row's leader target
(``L``: leader, primary, coordinator, or a fixed or random node for protocols with none).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError
from lab.history import FAIL, INVOKE, OK, OUTCOMES
from lab.topology import duration_text


@dataclass(frozen=True)
class Timeline:
    """When each run's fault applies and heals, in seconds from the workload's start."""

    at: float = 1.0          # the fault applies
    window: float = 2.5      # it lasts this long, then is reverted (the heal): above the 2 s
                             # a 2PC participant may block before nonblocking calls it blocked
    duration: float = 5.5    # the workload: the rest, after the heal, is the time to recover in

    def as_dict(self) -> dict[str, float]:
        return {"workload_s": self.duration, "fault_at_s": self.at, "fault_for_s": self.window}


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    step: Callable[[str, list[str]], dict[str, Any]]   # (leader target, node names) -> the fault
    partition: bool = False        # counts toward the partition-tolerance column

    def faults(self, leader: str, nodes: list[str], at: float, window: float) -> list[dict[str, Any]]:
        step = self.step(leader, nodes)
        if not step:
            return []
        return [{"at": duration_text(at), **step, "for": duration_text(window)}]


# Targets the resolver answers from the nodes' own status (or at random) when the fault
# applies; any other target is a node's name.
DYNAMIC = ("leader", "primary", "random")


def minority(lead: str, nodes: list[str]) -> list[Any]:
    """Partition groups cutting ``lead`` off with a minority: the resolver's own split when the
    leader is known only at run time (it puts the leader on the minority side), else ``lead``
    and the nodes after it in order, up to a minority."""
    if lead in DYNAMIC:
        return ["minority", "majority"]
    size = max(1, (len(nodes) - 1) // 2)
    at = nodes.index(lead)
    group = (nodes[at:] + nodes[:at])[:size]
    return [group, "rest"]


def no_majority(nodes: list[str]) -> list[list[str]]:
    """Three groups dealt round-robin: with three nodes or more, none holds a majority."""
    groups: list[list[str]] = [[], [], []]
    for i, n in enumerate(nodes):
        groups[i % 3].append(n)
    return [g for g in groups if g]


SUITE: tuple[Fault, ...] = (
    Fault("none", "no faults", lambda lead, nodes: {}),
    Fault("crash", "the leader crashes, restarts", lambda lead, nodes: {"crash": lead}),
    Fault("minority", "the leader cut off with a minority",
          lambda lead, nodes: {"partition": minority(lead, nodes)}, partition=True),
    Fault("majority", "split three ways: no side holds a majority",
          lambda lead, nodes: {"partition": no_majority(nodes)}, partition=True),
    Fault("loss", "10% of messages lost on every link", lambda lead, nodes: {"loss": "10%"}),
    Fault("oneway", "the leader's messages out are cut (it still hears)",
          lambda lead, nodes: {"partition": [[lead], "rest"], "oneway": True}, partition=True),
    Fault("pause", "the leader paused (a stalled process)", lambda lead, nodes: {"pause": lead}),
)


def suite(names: list[str] | None = None) -> list[Fault]:
    """The faults ``names`` picks, in the suite's order (default: all of them)."""
    if not names:
        return list(SUITE)
    known = {f.name: f for f in SUITE}
    for n in names:
        if n not in known:
            raise ConfigError(f"unknown fault {n!r} (the suite: {', '.join(known)})", field="--faults")
    return [f for f in SUITE if f.name in names]


# -- what one run measured ---------------------------------------------------------------------


def fault_times(trace: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """When the run's fault applied and when it was reverted: its first ``fault`` events in
    phase ``apply`` and ``revert`` (None where there is none)."""
    applied = reverted = None
    for ev in trace:
        if ev.get("ev") != "fault":
            continue
        phase = (ev.get("data") or {}).get("phase")
        if phase == "apply" and applied is None:
            applied = float(ev["ts"])
        elif phase == "revert" and applied is not None and reverted is None:
            reverted = float(ev["ts"])
    return applied, reverted


# A fail with one of these errors is the system's answer to the operation itself (the CAS
# did not match, the account could not pay): it was served. Any other fail, a timeout (info)
# or an unavailable answer was not.
ANSWERED = frozenset({"cas_mismatch", "insufficient_funds"})


@dataclass(frozen=True)
class _Op:
    invoked: float
    ended: float           # when its outcome was recorded (a timeout's too); inf: never
    served: bool


def client_ops(history: list[dict[str, Any]]) -> list[_Op]:
    """Each operation of the history with when it ended and whether it was served."""
    open_: dict[Any, float] = {}
    out: list[_Op] = []
    for ev in history:
        kind, proc = ev.get("type"), ev.get("process")
        if kind == INVOKE:
            open_[proc] = float(ev["ts"])
        elif kind in OUTCOMES and proc in open_:
            served = kind == OK or (kind == FAIL and ev.get("error") in ANSWERED)
            out.append(_Op(open_.pop(proc), float(ev["ts"]), served))
    out += [_Op(t, math.inf, False) for t in open_.values()]
    return sorted(out, key=lambda op: op.invoked)


def measure(history: list[dict[str, Any]], trace: list[dict[str, Any]],
            timeline: Timeline) -> dict[str, Any]:
    """Availability: the share of client operations served (ok, or refused on their own
    merits: ANSWERED) among those that *ended* while the fault was in force (a timeout ends
    an op; one that waited the fault out and ended after the heal is left out of it; the heal
    is the fault's revert event, or the timeline's when there is none), and
    among those *invoked* after the heal until the workload's end; and the time from the
    heal to the end of the first op invoked after it that was served. The final reads
    (after the workload) are left out. A fault-free run is measured over the same windows
    (its workload's start taken from its first operation): the baseline. It has no recovery."""
    ops = client_ops(history)
    if not ops:
        return {"during": None, "after": None, "recovery_s": None}
    applied, reverted = fault_times(trace)
    t0 = (applied - timeline.at) if applied is not None else ops[0].invoked
    start = t0 + timeline.at
    # The heal as it happened: a backend whose restart takes seconds (docker) reverts late.
    heal = reverted if reverted is not None else start + timeline.window
    end = t0 + timeline.duration
    during = [op for op in ops if start <= op.ended < heal]
    after = [op for op in ops if heal <= op.invoked < end]
    firsts = [op.ended for op in after if op.served]
    recovery = round(min(firsts) - heal, 3) if firsts and applied is not None else None
    return {"during": _share(during), "after": _share(after), "recovery_s": recovery,
            "ops_during": len(during), "ops_after": len(after)}


def _share(ops: list[_Op]) -> float | None:
    return round(sum(1 for op in ops if op.served) / len(ops), 4) if ops else None
