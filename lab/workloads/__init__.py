"""Workloads: what clients ask of the lab. A workload only makes operations; the runner
times, sends, retries and records them (lab/runner.py)."""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from random import Random
from typing import Any, ClassVar

from lab.errors import ConfigError
from lab.scenario import Scenario, WorkloadSpec


class Workload(ABC):
    """Makes operations for client processes and, at the end, the reads that
    give the checkers the final state."""

    kind: str = ""
    #: the kind's own keys under ``workload:`` besides kind, clients, rate, concurrency, duration
    #: and timeout; any other key is refused (the YAML loader refuses it with its line)
    params: ClassVar[tuple[str, ...]] = ()
    #: False for a workload that only watches (membership): the runner then starts no clients,
    #: and only the final ops reach the nodes.
    client_ops: bool = True

    def __init__(self, spec: WorkloadSpec, scenario: Scenario, rng: Random) -> None:
        self.spec = spec
        self.scenario = scenario
        self.rng = rng
        unknown = sorted(set(spec.params) - set(self.params))
        if unknown:
            raise ConfigError(unknown_key(unknown[0], self.kind, self.params),
                              path=scenario.source, field=f"workload.{unknown[0]}")

    @abstractmethod
    def next_op(self, process: int) -> dict[str, Any]:
        """The next operation of client ``process``: ``{"f": ..., "key": ..., "value": ...}``."""

    def node_for(self, op: dict[str, Any]) -> str | None:
        """The node ``op`` goes to, or None to let the runner choose (the last node that
        answered this client, else a random one)."""
        return None

    def observe(self, op: dict[str, Any]) -> None:
        """An operation made outside :meth:`next_op` (a Lab's own call): a workload whose final
        ops depend on what was touched (the keys to read back) takes note of it here."""
        return None

    def final_ops(self) -> list[tuple[str | None, dict[str, Any]]]:
        """(node or None for 'the leader', op) to run once faults are healed; results go to final.json."""
        return []

    def record_final(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """Turn the answers to final_ops into final.json's content."""
        return {}

    def metrics(self, trace: list[dict[str, Any]], history: list[dict[str, Any]],
                final: dict[str, Any]) -> dict[str, Any]:
        """This workload's own figures for metrics.json, beside the generic ones (lab/metrics.py)."""
        return {}


def unknown_key(key: str, kind: str, params: tuple[str, ...]) -> str:
    """What to say of a key the ``kind`` workload does not take: a typo's likely meaning."""
    from lab.scenario import WORKLOAD_KEYS
    hint = difflib.get_close_matches(key, (*WORKLOAD_KEYS, *params), n=1)
    takes = f"its keys: {', '.join(params)}" if params else "it takes no keys of its own"
    return f"unknown key for the {kind} workload ({takes})" + (f"; did you mean {hint[0]}?" if hint else "")
