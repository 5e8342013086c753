"""Workloads by kind, imported when a scenario uses them."""

from __future__ import annotations

from random import Random

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload
from nodes.loader import load

_WORKLOADS = {
    "kv": "lab.workloads.kv:KvWorkload",
    "transfer": "lab.workloads.transfer:TransferWorkload",
    "propose": "lab.workloads.propose:ProposeWorkload",
    "membership": "lab.workloads.membership:MembershipWorkload",
}


def kinds() -> list[str]:
    return sorted(_WORKLOADS)


def workload_for(spec: WorkloadSpec, scenario: Scenario, rng: Random) -> Workload | None:
    """The workload ``spec.kind`` names, or None for ``none`` (a run with no clients)."""
    if spec.kind in ("none", "", None):
        return None
    target = _WORKLOADS.get(spec.kind)
    if target is None:
        raise ConfigError(f"unknown workload kind {spec.kind!r} (known: none, {', '.join(kinds())})",
                          path=scenario.source, field="workload.kind")
    return load(target)(spec, scenario, rng)
