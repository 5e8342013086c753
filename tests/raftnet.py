"""Raft on the in-memory network (tests/memnet.py): etcd's verbs (campaign, heartbeat, elect)
and Raft's checkers over the net's trace."""

from __future__ import annotations

import json
from typing import Any

from memnet import MAX_STEPS, Message, NodeContext
from memnet import Net as _Net

from lab.checks.base import Verdict
from lab.checks.linearizable import check as linearizable
from lab.checks.raft import CHECKS
from nodes.protocols.raft import LEADER, Raft

__all__ = ["MAX_STEPS", "Message", "Net", "NodeContext"]


class Net(_Net[Raft]):
    def __init__(self, n: int = 3, seed: int = 1, config: dict[str, Any] | None = None,
                 core: type[Raft] = Raft, **kw: Any) -> None:
        super().__init__(core, n=n, seed=seed, config=config, **kw)
        self.history: list[dict[str, Any]] = []      # what client_op() recorded, Jepsen's way
        self._seq = 0

    def client_op(self, node: str, op: dict[str, Any], process: int) -> dict[str, Any] | None:
        """One client operation with a history: invoked now at ``node``, everything delivered,
        completed with the answer if one came (else left open: ``info`` to the checker)."""
        self._seq += 1
        name = f"c{process}"
        self.history.append({"process": process, "type": "invoke", "f": op["f"], "key": op.get("key"),
                             "value": op.get("value"), "ts": self.now})
        before = len(self.replies_to(name))
        self.request(node, {**op, "client": name, "seq": self._seq}, client=name)
        self.deliver_all()
        answers = self.replies_to(name)[before:]
        if not answers:
            return None
        res = answers[0]
        value = res.get("value") if op["f"] == "read" else op.get("value")
        self.history.append({"process": process, "type": res["type"], "f": op["f"], "key": op.get("key"),
                             "value": value, "ts": self.now})
        return res

    def campaign(self, node: str) -> None:
        """Make ``node`` time out and start an election, then deliver everything."""
        self.fire(node, "election")
        self.deliver_all()

    def leaders(self) -> list[str]:
        return [n for n in self.up() if self.core(n).role == LEADER]

    def leader(self) -> str:
        """The one leader of the highest term among running nodes."""
        best = max(self.up(), key=lambda n: (self.core(n).role == LEADER, self.core(n).term))
        assert self.core(best).role == LEADER, "no leader"
        return best

    def elect(self, node: str, attempts: int = 3) -> None:
        """Make ``node`` campaign until it leads (a lost round still raises its term)."""
        for _ in range(attempts):
            self.campaign(node)
            if self.core(node).role == LEADER:
                return
        raise AssertionError(f"{node} did not win: {self.core(node).status()}")

    def heartbeat(self, node: str) -> None:
        """Make leader ``node`` send its heartbeat now (etcd's MsgBeat), then deliver everything."""
        self.fire(node, "heartbeat")
        self.deliver_all()

    def checks(self) -> dict[str, Verdict]:
        """The Raft checks over the trace, and ``linearizable`` over what client_op() recorded."""
        run = self.run_data(self.history)
        return {name: fn(run) for name, fn in {**CHECKS, "linearizable": linearizable}.items()}

    def verdicts(self) -> dict[str, str]:
        return {name: v.verdict for name, v in self.checks().items()}

    def commits(self, node: str) -> list[Any]:
        """The committed commands of ``node``, index 1 first (no-ops as None)."""
        core = self.core(node)
        return [None if core.log[i][1] is None else json.loads(core.log[i][1])
                for i in range(1, core.commit + 1)]
