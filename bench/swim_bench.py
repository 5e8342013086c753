"""SWIM on the simulator: Lifeguard's false positives and the cost in detection time.

Anchor: Lifeguard (Dadgar, Phillips, Currey, arXiv 1707.00788) reports more than
50x fewer false positives with its local health extensions, for a modest rise in
detection latency. Three comparisons, every trial printed, each trial a seed:

* a slow member whose messages reach it 5 s late (``topologies/swim-slow-*.yaml``,
  5% loss): false positives (members declared dead though responsive for a whole
  refutation window) with memberlist's defaults (Lifeguard) and with ``preset:
  classic`` (the SWIM paper's fixed suspicion timeout, no local health);
* the same member made slow by repeated pauses instead (SIGSTOP-like: paused 3 s
  in every 5 s): a frozen member's timers stop with it, so it accuses nobody;
* detection time of two crashes under 5% loss (``swim-crash-loss.yaml``), both ways.

Each figure is the sum (false positives) or the median (detection) over the trials.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from lab.runner import run_scenario
from lab.scenario import FaultStep, Scenario
from lab.topology import load_scenario

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"lifeguard": {"preset": "lan"}, "classic": {"preset": "classic"}}


def _scenario(name: str, config: dict[str, Any]) -> Scenario:
    s = load_scenario(str(ROOT / "topologies" / name))
    return dataclasses.replace(s, config=config, expect={})


def _paused(s: Scenario) -> Scenario:
    """The slow member made by pauses: 3 s in every 5 s, over the same run."""
    steps, t = [], 2.0
    while t + 3.0 < s.workload.duration:
        steps.append(FaultStep(t, "pause", "n3", duration=3.0))
        t += 5.0
    return dataclasses.replace(s, faults=steps)


def _trials(s: Scenario, seeds: range, *keys: str) -> list[dict[str, Any]]:
    out = []
    for seed in seeds:
        m = run_scenario(s, "sim", seed=seed, quiet=True, write=False).metrics
        out.append({k: m[k] for k in keys})
    return out


def _false_positives(label: str, make: Any, seeds: range, claim: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, config in VARIANTS.items():
        trials = _trials(make(config), seeds, "false_positives", "false_positives_slow",
                         "false_positives_paused")
        fp = [t["false_positives"] for t in trials]
        apart = [t["false_positives_slow"] + t["false_positives_paused"] for t in trials]
        out[variant] = {"false_positives": fp, "total": sum(fp), "slow_member_deaths": apart}
        print(f"   {label}, {variant:9s}: false positives per trial {fp} (total {sum(fp)}); "
              f"deaths of the slow member itself, counted apart: {apart}")
    lg, cl = out["lifeguard"]["total"], out["classic"]["total"]
    out["ratio"] = cl / lg if lg else None
    ratio = f"{cl / lg:.1f}x" if lg else f"{cl} vs 0"
    note = "(Lifeguard: > 50x; goal >= 10x)" if claim else "(a frozen member accuses nobody)"
    print(f"   {label}: without local health awareness / with: {ratio} {note}")
    return out


def run(trials: int = 10) -> dict[str, Any]:
    seeds = range(trials)
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "trials": trials}
    out["slow_by_delay"] = _false_positives(
        "slow member (messages to it 5 s late)",
        lambda config: _scenario("swim-slow-lifeguard.yaml", config), seeds, claim=True)
    out["slow_by_pause"] = _false_positives(
        "slow member (paused 3 s in every 5 s)",
        lambda config: _paused(_scenario("swim-slow-lifeguard.yaml", config)), seeds, claim=False)
    detection: dict[str, Any] = {}
    for variant, config in VARIANTS.items():
        trials_ = _trials(_scenario("swim-crash-loss.yaml", config), seeds, "detection_s")
        worst = [t["detection_s"]["max"] for t in trials_]
        median = [t["detection_s"]["p50"] for t in trials_]
        detection[variant] = {"max_s": worst, "p50_s": median,
                              "median_of_max_s": statistics.median(w for w in worst if w is not None)}
        print(f"   crash detection (5% loss), {variant:9s}: slowest of 2 crashes per trial {worst} s "
              f"(median {detection[variant]['median_of_max_s']:.2f} s)")
    out["detection"] = detection
    slow = out["slow_by_delay"]
    out["readme_rows"] = [
        [f"SWIM false positives, one slow member + 5% loss ({trials} seeds, sim)",
         f"{slow['lifeguard']['total']} with local health awareness vs {slow['classic']['total']} "
         "without", "Lifeguard paper: > 50x fewer", "≥ 10x fewer"],
        [f"SWIM crash detection under 5% loss, slowest of 2 crashes (median of {trials} seeds, sim)",
         f"{detection['lifeguard']['median_of_max_s']:.2f} s with local health awareness, "
         f"{detection['classic']['median_of_max_s']:.2f} s without",
         "Lifeguard paper: modestly slower", "—"]]
    return out
