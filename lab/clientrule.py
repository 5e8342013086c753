"""How a client accepts a result, for cores that declare it (``Core.client_rule``; PBFT: f+1
matching replies from distinct replicas, every request signed and sent to every replica).

One place for the rule, used by the runner's clients (lab/runner.py), ``zlab client``
(lab/cli_lab.py) and the benchmarks: :func:`client_rule_of` reads it from the scenario's
core and config, :class:`Tally` counts the answers to one request.
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
    accepted when ``need`` nodes gave the very same one."""

    __slots__ = ("need", "voted", "counts")

    def __init__(self, need: int) -> None:
        self.need = need
        self.voted: set[str] = set()
        self.counts: dict[str, int] = {}

    def add(self, node: str, result: dict[str, Any]) -> bool:
        """Count ``node``'s answer; True when this answer makes its result accepted."""
        if node in self.voted:
            return False
        self.voted.add(node)
        key = _key(result)
        c = self.counts[key] = self.counts.get(key, 0) + 1
        return c == self.need
