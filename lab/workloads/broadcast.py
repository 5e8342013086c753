"""Maelstrom's broadcast workload: clients send unique values to random nodes; at the end every
node is read.

Ops (docs/gossip.md, "client ops"): ``{"f": "broadcast", "value": n}`` with n = 1, 2, 3...
over the whole run, each to a node drawn at random; with ``read_ratio``, ``{"f": "read"}``
(run-time reads, ``key: null`` in the history: what ``stale`` counts); with
``delete_ratio``, ``{"f": "delete", "value": v}`` of a value broadcast earlier. After the heal
and the settle, each node gets a final read ``{"f": "read", "key": <node>, "full": true}``,
whose answer includes the node's whole state for the convergence check.

final.json: ``{"reads": {node: [values]}, "states": {node: state}, "unanswered": [nodes]}``.
metrics.json gains ``msgs_per_op`` (per update op: broadcast, delete), ``stable_latency_ms``,
``lost``, ``stale`` and ``dissemination`` (lab/spread.py).

params:
  ``read_ratio``    fraction of ops that are reads (default 0)
  ``delete_ratio``  fraction of ops that delete a value broadcast earlier (default 0)
"""

from __future__ import annotations

from random import Random
from typing import Any

from lab import spread
from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload
from nodes.protocols import get as get_protocol
from nodes.protocols.core import ConfigValueError, build_config
from nodes.units import shown


class BroadcastWorkload(Workload):
    kind = "broadcast"
    params = ("read_ratio", "delete_ratio")

    def __init__(self, spec: WorkloadSpec, scenario: Scenario, rng: Random) -> None:
        super().__init__(spec, scenario, rng)
        p = dict(spec.params)
        self.read_ratio = self._fraction(p, "read_ratio")
        self.delete_ratio = self._fraction(p, "delete_ratio")
        if self.read_ratio + self.delete_ratio > 1.0 + 1e-9:
            raise ConfigError("read_ratio + delete_ratio is above 1", path=scenario.source,
                              field="workload.delete_ratio")
        self.nodes = scenario.node_names
        self.round_s = round_length(scenario)
        self._counter = 0
        self._sent: list[int] = []           # values broadcast and not yet picked for deletion

    def _fraction(self, p: dict[str, Any], name: str) -> float:
        value = p.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"expected a fraction from 0 to 1, got {shown(value)}",
                              path=self.scenario.source, field=f"workload.{name}")
        return float(value)

    def next_op(self, process: int) -> dict[str, Any]:
        r = self.rng.random()
        if r < self.read_ratio:
            return {"f": "read", "key": None, "value": None}
        if r < self.read_ratio + self.delete_ratio and self._sent:
            value = self._sent.pop(self.rng.randrange(len(self._sent)))
            return {"f": "delete", "key": None, "value": value}
        self._counter += 1
        self._sent.append(self._counter)
        return {"f": "broadcast", "key": None, "value": self._counter}

    def node_for(self, op: dict[str, Any]) -> str | None:
        return self.rng.choice(self.nodes)

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(n, {"f": "read", "key": n, "value": None, "full": True}) for n in self.nodes]

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        reads: dict[str, Any] = {}
        states: dict[str, Any] = {}
        unanswered = []
        for node, res in zip(self.nodes, results + [{}] * (len(self.nodes) - len(results)), strict=True):
            if res.get("type") == "ok" and isinstance(res.get("value"), list):
                reads[node] = res["value"]
                states[node] = res.get("state")
            else:
                unanswered.append(node)
        return {"reads": reads, "states": states, "unanswered": unanswered}

    def metrics(self, trace: list[dict[str, Any]], history: list[dict[str, Any]],
                final: dict[str, Any]) -> dict[str, Any]:
        return spread.metrics(trace, history, final, self.nodes, self.round_s)


def round_length(scenario: Scenario) -> float:
    """Seconds in one gossip round of the scenario's protocol: its ``interval`` when it gossips
    rumors, else its anti-entropy period; 0 when the protocol has neither."""
    try:
        cfg = build_config(get_protocol(scenario.protocol), scenario.config)
    except (KeyError, ConfigValueError):
        return 0.0
    if getattr(cfg, "fanout", 0):
        return float(getattr(cfg, "interval", 0.0))
    return float(getattr(cfg, "anti_entropy", 0.0))
