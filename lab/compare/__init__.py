"""``zlab compare``: the tutorial's comparison table (§8.1), measured.

Every registered row (lab/compare/rows.py) runs every fault of the suite
(lab/compare/suite.py) with the same seed, through the ordinary runner, each run writing
its own run directory. The runs' checks, histories and metrics make the table:

    results/compare-<UTC time>/      results/latest-compare -> it
      table.md  table.json  report.md  compare.png
      scenarios/<row>-<fault>.yaml   what each run ran (its replay command names it)
      runs/<row>-<fault>/            each run's directory
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab import report
from lab.compare import suite as suite_mod
from lab.compare.rows import Row, select
from lab.compare.suite import Fault, Timeline, measure
from lab.compare.table import build_table, write_outputs
from lab.errors import BackendError
from lab.scenario import Scenario
from lab.topology import duration_text, load_scenario

DEFAULT_SEED = 1
DEFAULT_TIMELINE = Timeline()


def cell_scenario(row: Row, fault: Fault, seed: int, timeline: Timeline) -> dict[str, Any]:
    """The scenario one cell runs: the row's shape (checked as any scenario file is), the
    suite's duration, one fault."""
    shape = load_scenario(str(row.scenario))
    doc = dict(shape.raw)
    doc["name"] = f"{shape.name}-{fault.name}"
    doc["description"] = f"{row.name} under the comparison's fault: {fault.title}"
    doc["workload"] = {**(doc.get("workload") or {}), "duration": duration_text(timeline.duration)}
    doc["faults"] = fault.faults(_static_leader(row.leader, shape), shape.node_names,
                                 timeline.at, timeline.window)
    doc["seed"] = seed
    return doc


def _static_leader(target: str, shape: Scenario) -> str:
    """``coordinator`` is a role the scenario fixes: name its node, so that the minority
    partition can put the nodes after it on its side. Other targets stay as they are."""
    if target == "coordinator":
        for n in shape.nodes:
            if "coordinator" in n.roles:
                return n.name
    return target


def run_compare(backend: str = "sim", names: list[str] | None = None,
                faults: list[str] | None = None, seed: int = DEFAULT_SEED,
                out: str | Path | None = None, quiet: bool = False,
                timeline: Timeline = DEFAULT_TIMELINE, extra: tuple[Row, ...] = (),
                views: bool = False) -> dict[str, Any]:
    """Run the suite against the rows ``names`` picks (default: all) and ``extra`` rows (a
    variant not registered: a test's broken protocol), write the compare directory, and
    return the table (what table.json holds). ``views``: each run directory gets its plots,
    perfetto trace and space-time diagram too (most of a short run's time on the simulator)."""
    picked = select(names) if names or not extra else []
    picked += [r for r in extra if r not in picked]
    chosen = suite_mod.suite(faults)
    say: Callable[[str], None] = (lambda _m: None) if quiet else (lambda m: print(m, flush=True))
    out_dir = report.make_run_dir("compare", out, link="latest-compare")
    (out_dir / "scenarios").mkdir(exist_ok=True)
    (out_dir / "runs").mkdir(exist_ok=True)
    say(f"zlab compare: {len(picked)} rows x {len(chosen)} faults on {backend}, seed {seed}; "
        f"writing {out_dir}")
    started = time.monotonic()
    cells: list[dict[str, Any]] = []
    for row in picked:
        for fault in chosen:
            cells.append(_run_cell(row, fault, backend, seed, timeline, out_dir, say, views))
    elapsed = time.monotonic() - started
    table = build_table(picked, chosen, cells, backend=backend, seed=seed, timeline=timeline,
                        elapsed_s=elapsed)
    text = write_outputs(out_dir, table)
    say(text)
    say(f"compare dir {out_dir}  ({elapsed:.0f} s)")
    return table


def failed_runs(table: dict[str, Any]) -> list[str]:
    """``row/fault`` of every run the runtime could not make."""
    return [f"{r['row']}/{f}" for r in table["rows"] for f, c in r["faults"].items() if c.get("error")]


def _run_cell(row: Row, fault: Fault, backend: str, seed: int, timeline: Timeline,
              out_dir: Path, say: Callable[[str], None], views: bool) -> dict[str, Any]:
    from lab.runner import run_scenario
    cell = f"{row.name}-{fault.name}"
    path = out_dir / "scenarios" / f"{cell}.yaml"
    path.write_text(yaml.safe_dump(cell_scenario(row, fault, seed, timeline), sort_keys=False,
                                   default_flow_style=None), encoding="utf-8")
    scenario = load_scenario(str(path))
    t = time.monotonic()
    run_dir = out_dir / "runs" / cell
    try:
        result = run_scenario(scenario, backend_kind=backend, seed=seed, out=run_dir,
                              quiet=True, views=views)
    except BackendError as e:
        # One run the runtime could not make (nodes that did not start on a loaded machine):
        # the table goes on without it and says so.
        say(f"  {cell:28s} failed     {e}")
        return {"row": row.name, "fault": fault.name, "verdicts": {}, "details": {},
                "availability": {"during": None, "after": None, "recovery_s": None},
                "metrics": {}, "run_dir": str(run_dir.relative_to(out_dir)),
                "replay": f"zlab run {path} --backend {backend} --seed {seed}", "error": str(e)}
    verdicts = {v.check: v.verdict for v in result.verdicts}
    avail = measure(result.history, result.trace, timeline)
    say(f"  {cell:28s} {_verdict_word(verdicts):10s} served during "
        f"{_pct(avail['during'])} after {_pct(avail['after'])}  ({time.monotonic() - t:.1f} s)")
    return {"row": row.name, "fault": fault.name, "verdicts": verdicts,
            "details": {v.check: v.detail for v in result.verdicts},
            "availability": avail, "metrics": result.metrics,
            "run_dir": str(result.run_dir.relative_to(out_dir)),
            "replay": report.replay_command(result)}


def _verdict_word(verdicts: dict[str, str]) -> str:
    values = set(verdicts.values())
    return "violated" if "violated" in values else "unknown" if values - {"holds"} else "holds"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"
