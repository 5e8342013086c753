"""Workloads by kind, imported lazily so that one broken workload does not break the others."""

from __future__ import annotations

import importlib
from random import Random

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload

_WORKLOADS = {
    "kv": "lab.workloads.kv:KvWorkload",
    "transfer": "lab.workloads.transfer:TransferWorkload",
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
    module, _, name = target.partition(":")
    mod = importlib.import_module(module)
    cls = getattr(mod, name, None)
    if cls is None:
        # Tolerate a module that names its class differently: take its one Workload subclass.
        found = [v for v in vars(mod).values()
                 if isinstance(v, type) and issubclass(v, Workload) and v is not Workload]
        if len(found) != 1:
            raise ConfigError(f"{module} has no workload class {name}")
        cls = found[0]
    return cls(spec, scenario, rng)
