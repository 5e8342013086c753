"""PBFT on the in-memory network (tests/memnet.py): clients that sign and send to every
replica, the way the runner's clients do, and PBFT's checkers over the net's trace."""

from __future__ import annotations

from typing import Any

from memnet import Net as _Net

from lab.checks.base import RunData, Verdict
from lab.checks.pbft import CHECKS
from lab.clientrule import Tally
from nodes.protocols.pbft import PBFT


class Net(_Net[PBFT]):
    """``byzantine``: node -> behaviours, as a scenario's ``byzantine:`` key gives them."""

    def __init__(self, n: int = 4, seed: int = 1, config: dict[str, Any] | None = None,
                 byzantine: dict[str, list[str]] | None = None, **kw: Any) -> None:
        byzantine = byzantine or {}
        specs = {f"n{i}": {"name": f"n{i}", **({"byzantine": byzantine[f"n{i}"]}
                                               if f"n{i}" in byzantine else {})}
                 for i in range(1, n + 1)}
        super().__init__(PBFT, seed=seed, config=config, specs=specs, **kw)
        self.client_seq = 0

    def op(self, f: str, key: str, value: Any = None, client: str = "c1") -> dict[str, Any]:
        """A signed client request, with the next seq."""
        self.client_seq += 1
        assert self.client is not None
        return self.client.sign_request({"f": f, "key": key, "value": value, "client": client,
                                         "seq": self.client_seq})

    def submit(self, op: dict[str, Any], to: list[str] | None = None) -> str:
        """Send ``op`` to every running replica (or ``to``); the handle is the client's name and seq."""
        handle = f"{op['client']}#{op['seq']}"
        for node in to or self.up():
            self.request(node, op, client=handle)
        return handle

    def answers(self, handle: str) -> dict[str, dict[str, Any]]:
        """Each replica's reply to ``handle`` (its first)."""
        out: dict[str, dict[str, Any]] = {}
        for node, client, result in self.replies:
            if client == handle:
                out.setdefault(node, result)
        return out

    def accepted(self, handle: str) -> dict[str, Any] | None:
        """The result the client rule accepts (f+1 matching replies), if any yet."""
        rule = PBFT.client_rule(self.config, self.names)
        tally = Tally(rule.replies)
        for node, result in self.answers(handle).items():
            if tally.add(node, result):
                return result
        return None

    def run(self, op: dict[str, Any], seconds: float = 0.5) -> dict[str, Any] | None:
        handle = self.submit(op)
        self.tick(seconds)
        return self.accepted(handle)

    def data(self) -> RunData:
        nodes = [dict(spec) for spec in self.specs.values()]
        return RunData(scenario={"nodes": nodes}, trace=self.trace, history=[])

    def verdicts(self) -> dict[str, Verdict]:
        run = self.data()
        return {name: CHECKS[name](run) for name in ("agreement", "committed_survives_view_change")}

    def drops(self, node: str) -> dict[str, int]:
        return dict(self.core(node).dropped)

    def commits(self, node: str) -> dict[int, str]:
        """seq -> digest of every commit ``node`` traced."""
        return {e["data"]["seq"]: e["data"]["digest"] for e in self.trace
                if e["ev"] == "commit" and e["node"] == node}
