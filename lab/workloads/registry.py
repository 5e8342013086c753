"""Workloads by kind, imported when a scenario uses them."""

from __future__ import annotations

from random import Random

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload
from nodes.loader import load
from nodes.units import shown

_WORKLOADS = {
    "kv": "lab.workloads.kv:KvWorkload",
    "transfer": "lab.workloads.transfer:TransferWorkload",
    "broadcast": "lab.workloads.broadcast:BroadcastWorkload",
    "propose": "lab.workloads.propose:ProposeWorkload",
    "membership": "lab.workloads.membership:MembershipWorkload",
}


def kinds() -> list[str]:
    return sorted(_WORKLOADS)


def workload_class(kind: str) -> type[Workload] | None:
    """The class of workload ``kind`` (None for ``none`` or a kind no one registered)."""
    target = _WORKLOADS.get(kind)
    return load(target) if target is not None else None


def workload_for(spec: WorkloadSpec, scenario: Scenario, rng: Random) -> Workload | None:
    """The workload ``spec.kind`` names, or None for ``none`` (a run with no clients)."""
    if spec.kind in ("none", "", None):
        return None
    cls = workload_class(spec.kind)
    if cls is None:
        raise ConfigError(f"unknown workload kind {shown(spec.kind)} (known: none, {', '.join(kinds())})",
                          path=scenario.source, field="workload.kind")
    return cls(spec, scenario, rng)
