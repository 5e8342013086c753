"""What a checker is: a function from a run's data to a verdict.

Checkers read only what a run directory holds (the resolved scenario,
``trace.jsonl``, ``history.jsonl`` and ``final.json``), so ``zlab check
RUN_DIR`` gives the same verdicts as the run that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

HOLDS, VIOLATED, UNKNOWN = "holds", "violated", "unknown"
VerdictName = Literal["holds", "violated", "unknown"]


@dataclass
class RunData:
    scenario: dict[str, Any]                 # the resolved scenario (as in scenario.yaml of the run dir)
    trace: list[dict[str, Any]]
    history: list[dict[str, Any]]
    final: dict[str, Any] = field(default_factory=dict)   # workload's final reads, e.g. balances
    time_limit: float = 30.0                 # s a search-based checker may spend before it answers unknown
    # The parameters the scenario gave the check now running (`checks: [{name: x, threshold: 2s}]`),
    # converted to their units; each checker module declares what it takes in its PARAMS.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    check: str
    verdict: VerdictName
    detail: str = ""                          # one line a person reads in the summary
    data: dict[str, Any] = field(default_factory=dict)   # counterexample, counts, metrics

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "verdict": self.verdict, "detail": self.detail, "data": self.data}


Checker = Callable[[RunData], Verdict]

# What a checker module exports: ``CHECKS`` (name -> Checker) and, for checks that take
# parameters, ``PARAMS`` (name -> {parameter: (unit, doc)}), units as protocol tunables use
# them (``s``, ``%``, ``count``, ...: nodes/protocols/core.py).
Params = dict[str, dict[str, tuple[str, str]]]
