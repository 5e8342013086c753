"""Clients of single-decree Paxos: each asks a proposer to propose a value, and is answered the
value that was chosen (any proposer's, not necessarily its own).

Every operation is ``{"f": "propose", "value": n}`` with ``n`` unique over the
run (1, 2, 3, ...), sent to any node (a node that is no proposer answers
``not_leader`` naming one, and the runner retries there); the ok answer's
``value`` is the chosen value. The run ends with a ``read`` of every learner
(Jepsen's final reads): ``final.json`` is ``{"learned": {node: value},
"undecided": [node, ...]}``. ``agreement`` checks every answer against what
the learners learned, ``validity`` that the chosen value was proposed.

No params.
"""

from __future__ import annotations

from typing import Any

from lab.workloads import Workload
from nodes.protocols.synod import LEARNER, roles_of


class ProposeWorkload(Workload):
    kind = "propose"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.learners = [n.name for n in self.scenario.nodes if LEARNER in roles_of(n.as_dict())]
        self._counter = 0

    def next_op(self, process: int) -> dict[str, Any]:
        self._counter += 1
        return {"f": "propose", "key": None, "value": self._counter}

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(n, {"f": "read", "key": None, "value": None}) for n in self.learners]

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        learned = {n: r.get("value") for n, r in zip(self.learners, results, strict=False)
                   if r.get("type") == "ok"}
        return {"learned": learned, "undecided": [n for n in self.learners if n not in learned]}
