"""What one run gives back: shared by the runner that makes it and the report that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.checks.base import Verdict
from lab.scenario import Scenario


@dataclass
class RunResult:
    scenario: Scenario
    backend: str
    seed: int
    run_dir: Path
    verdicts: list[Verdict]
    exit_code: int
    stats: dict[str, Any]
    resolved: dict[str, Any]
    trace: list[dict[str, Any]] = field(repr=False, default_factory=list)
    history: list[dict[str, Any]] = field(repr=False, default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    replay: str | None = None       # how to run it again, when not `zlab run` (a Lab's test)
