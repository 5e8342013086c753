"""The membership workload: SWIM runs on its own, with no client operations.

``workload: {kind: membership, duration: 30s}``. Nothing is sent to the nodes
while the faults play out; after the heal and the settle every node is asked
for its view (``{"f": "members"}``), which goes to ``final.json`` as
``{"views": {node: {member: [status, incarnation]}}}``. ``metrics.json`` gains
``detection_s`` ``{p50, max, crashes, undetected}`` (from a crash until every
member that stayed up holds the crashed one dead), ``false_positives``
(members declared dead though they had been up and reachable for a whole
refutation window, counted once per member and incarnation) and
``false_positives_paused`` (the same for members that had been paused: a
slow member, counted apart). The figures come from the trace
(lab/checks/swim.py), so ``zlab check`` and the metrics agree.
"""

from __future__ import annotations

from random import Random
from typing import Any

from lab.checks.swim import analyse
from lab.scenario import Scenario, WorkloadSpec
from lab.workloads import Workload


class MembershipWorkload(Workload):
    kind = "membership"
    client_ops = False

    def __init__(self, spec: WorkloadSpec, scenario: Scenario, rng: Random) -> None:
        super().__init__(spec, scenario, rng)

    def next_op(self, process: int) -> dict[str, Any]:
        raise AssertionError("the membership workload has no client operations")

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(n, {"f": "members"}) for n in self.scenario.node_names]

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        views: dict[str, Any] = {}
        for node, res in zip(self.scenario.node_names, results, strict=False):
            views[node] = res.get("value") if res.get("type") == "ok" else None
        return {"views": views}

    def metrics(self, trace: list[dict[str, Any]], history: list[dict[str, Any]],
                final: dict[str, Any]) -> dict[str, Any]:
        return analyse(self.scenario.node_names, self.scenario.config, trace)
