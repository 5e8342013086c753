"""A key-value workload for the linearizability checker (Jepsen's register-per-key model).

Writes carry unique, increasing values (1, 2, 3, ... over the whole run), so a
read can always say which write it saw and a lost or resurrected write shows
up as a read no linearization explains. The run ends with a read of every key
(Jepsen's final reads), so a write acknowledged late and then lost is seen too.
"""

from __future__ import annotations

from random import Random
from typing import Any

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload
from nodes.units import shown


class KvWorkload(Workload):
    """params: ``keys`` (count of keys, default 5), ``read_ratio`` (0.5), ``cas_ratio`` (0.1),
    ``delete_ratio`` (0); writes take what the ratios leave."""

    kind = "kv"
    params = ("keys", "read_ratio", "cas_ratio", "delete_ratio")

    def __init__(self, spec: WorkloadSpec, scenario: Scenario, rng: Random) -> None:
        super().__init__(spec, scenario, rng)
        p = dict(spec.params)
        self.keys = _param(p, "keys", 5, int, scenario)
        self.read_ratio = _param(p, "read_ratio", 0.5, float, scenario)
        self.cas_ratio = _param(p, "cas_ratio", 0.1, float, scenario)
        self.delete_ratio = _param(p, "delete_ratio", 0.0, float, scenario)
        if self.keys < 1:
            raise ConfigError("workload.keys must be at least 1", path=scenario.source)
        if self.read_ratio + self.cas_ratio + self.delete_ratio > 1.0 + 1e-9:
            raise ConfigError("workload read_ratio + cas_ratio + delete_ratio is above 1",
                              path=scenario.source)
        self._counter = 0
        self._made_ops = False
        self._observed: dict[Any, None] = {}     # keys of ops made elsewhere (a Lab), first seen first
        # The last value this workload wrote to each key: cas guesses it, so that a fair
        # share of compares succeed instead of all failing on a random guess.
        self._last: dict[str, int] = {}

    def key_name(self, i: int) -> str:
        return f"k{i}"

    def _value(self) -> int:
        self._counter += 1
        return self._counter

    def next_op(self, process: int) -> dict[str, Any]:
        self._made_ops = True
        key = self.key_name(self.rng.randrange(self.keys))
        r = self.rng.random()
        if r < self.read_ratio:
            return {"f": "read", "key": key, "value": None}
        r -= self.read_ratio
        if r < self.cas_ratio:
            new = self._value()
            return {"f": "cas", "key": key, "value": [self._last.get(key), new]}
        r -= self.cas_ratio
        if r < self.delete_ratio:
            return {"f": "delete", "key": key, "value": None}
        value = self._value()
        self._last[key] = value
        return {"f": "write", "key": key, "value": value}

    def observe(self, op: dict[str, Any]) -> None:
        if op.get("key") is not None:
            self._observed.setdefault(op["key"], None)

    def final_keys(self) -> list[Any]:
        """Every key of the key space once this workload has made ops, then every key observed."""
        keys = [self.key_name(i) for i in range(self.keys)] if self._made_ops else []
        return keys + [k for k in self._observed if k not in keys]

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        """Jepsen's final reads: every key once, through the protocol, after the heal and the settle."""
        return [(None, {"f": "read", "key": k, "value": None}) for k in self.final_keys()]

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """final.json: what each final read saw (absent keys as null; unanswered ones left out)."""
        keys = self.final_keys()
        reads = {}
        for key, res in zip(keys, results, strict=False):
            if res.get("type") == "ok":
                reads[key] = res.get("value")
        return {"reads": reads, "unanswered": [k for k, r in zip(keys, results, strict=False)
                                               if r.get("type") != "ok"]}


def _param(params: dict[str, Any], name: str, default: Any, kind: type, scenario: Scenario) -> Any:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"expected a number, got {shown(value)}", path=scenario.source,
                          field=f"workload.{name}")
    if value < 0:
        raise ConfigError(f"must not be negative, got {shown(value)}", path=scenario.source,
                          field=f"workload.{name}")
    return kind(value)
