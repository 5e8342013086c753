"""How a client accepts a result, for cores that declare it (``Core.client_rule``; PBFT: f+1
matching replies from distinct replicas, every request signed, sent first to the primary and
f more replicas, then again to every replica).

One place for the rule, used by the runner's clients (lab/runner.py), ``zlab client``
(lab/cli_lab.py) and the benchmarks: :func:`client_rule_of` reads it from the scenario's
core and config, :class:`Targets` says where each attempt goes, :class:`Tally` counts the
answers to one request.
"""

from __future__ import annotations

import json
from typing import Any

from lab.scenario import Scenario
from nodes.protocols import get as get_protocol
from nodes.protocols.core import ClientRule, build_config

_key = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode


def client_rule_of(scenario: Scenario) -> ClientRule | None:
    """The scenario's core's client rule, or None for the default (one answer, redirects)."""
    try:
        cls = get_protocol(scenario.protocol)
    except KeyError:
        return None
    return cls.client_rule(build_config(cls, scenario.config), scenario.node_names)


class Tally:
    """The answers to one request. Each node counts once (its first answer); a result is
    accepted when ``need`` nodes gave the very same one (then ``accepted`` holds it)."""

    __slots__ = ("need", "voted", "counts", "accepted")

    def __init__(self, need: int) -> None:
        self.need = need
        self.voted: set[str] = set()
        self.counts: dict[str, int] = {}
        self.accepted: dict[str, Any] | None = None

    def add(self, node: str, result: dict[str, Any]) -> bool:
        """Count ``node``'s answer; True when this answer makes its result accepted (once: an
        answer after that, even one completing another result, returns False)."""
        if node in self.voted or self.accepted is not None:
            return False
        self.voted.add(node)
        key = _key(result)
        c = self.counts[key] = self.counts.get(key, 0) + 1
        if c == self.need:
            self.accepted = result
            return True
        return False


class Targets:
    """Where each attempt of a request goes under ``rule``, among ``nodes`` (the lab's, in its
    order). Without ``rule.first``: every attempt to every node. With it: a first attempt to
    the primary this client believes current and the ``first - 1`` nodes after it (wrapping
    round), every later attempt to every node -- so a silent or lying primary, or a node that
    is down, costs one ``rule.retry``. The belief comes from the ``primary`` key of accepted
    results (:meth:`learn`): ``replies`` nodes vouched for it, so not a liar alone."""

    __slots__ = ("nodes", "first", "primary", "_first_nodes")

    def __init__(self, rule: ClientRule, nodes: list[str]) -> None:
        self.nodes = list(nodes)
        self.first = rule.first if 0 < rule.first < len(self.nodes) else 0
        self.primary = ""
        self._first_nodes = self.nodes
        self._believe(self.nodes[0] if self.nodes else "")

    def of(self, attempt: int) -> list[str]:
        """The nodes attempt ``attempt`` (1 for the first) goes to (a list not to be changed)."""
        return self._first_nodes if attempt == 1 else self.nodes

    def learn(self, result: dict[str, Any]) -> None:
        """An accepted result: the primary it names (if a node of the lab) is tried first from now."""
        hint = result.get("primary")
        if hint != self.primary and type(hint) is str and hint in self.nodes:
            self._believe(hint)

    def _believe(self, primary: str) -> None:
        self.primary = primary
        if self.first:
            p, n = self.nodes.index(primary), len(self.nodes)
            self._first_nodes = [self.nodes[(p + k) % n] for k in range(self.first)]
