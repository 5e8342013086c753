"""The run directory (DESIGN.md) and the summaries a person reads.

    results/<scenario>-<UTC timestamp>/     (or --out DIR); results/latest -> it
      scenario.yaml     the resolved scenario, with seed and backend
      trace.jsonl       history.jsonl       final.json       checks.json      metrics.json
      report.md         what ran, how to replay it, verdicts, figures, the fault timeline
      trace.perfetto.json  plots.png  spacetime.svg   (lab/views, when present)
      nodes/<name>.log
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lab.checks.base import Verdict
from lab.checks.registry import expected
from lab.errors import ConfigError
from lab.history import pair_ops, write_history
from lab.metrics import percentile
from lab.runresult import RunResult
from lab.scenario import Scenario
from lab.tracefile import write_trace
from nodes.loader import load
from nodes.units import format_duration

RESULTS = "results"


# -- the directory -------------------------------------------------------------------------


def make_run_dir(name: str, out: str | os.PathLike[str] | None = None,
                 now: _dt.datetime | None = None,
                 root: str | os.PathLike[str] = RESULTS, link: str = "latest") -> Path:
    """``out`` as given, or a fresh ``<root>/<name>-<UTC timestamp>`` (root: ``results``) with
    ``<root>/<link>`` (a relative link, so the tree can be moved) pointing at it."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            # A used directory may hold a local or docker run's node data, which the next run
            # would recover from: the run would not be the one its seed describes.
            raise ConfigError("exists and is not empty; a run directory must be new",
                              path=str(path), field="--out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{_safe(name)}-{stamp}"
    path = root / base
    for n in range(2, 1000):   # two runs in one second: a suffix, never a shared directory
        try:
            path.mkdir()
            break
        except FileExistsError:
            path = root / f"{base}-{n}"
    tmp = root / f".{link}-{os.getpid()}"
    link_path = root / link
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(path.name)
        os.replace(tmp, link_path)    # atomic: a reader never sees no link
    except OSError:
        pass                      # a filesystem without links still gets its run directory
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"


def resolved_scenario(scenario: Scenario, seed: int, backend: str) -> dict[str, Any]:
    """The scenario as it ran: what ``scenario.yaml`` of the run directory holds."""
    try:
        from lab.topology import scenario_to_dict
        out = dict(scenario_to_dict(scenario))
    except ImportError:
        out = _plain(dataclasses.asdict(scenario))
        out.pop("raw", None)
    out["seed"] = seed
    out["backend"] = backend
    if scenario.source:
        out.setdefault("source", scenario.source)
    return out


def _plain(value: Any) -> Any:
    """YAML-safe plain data (tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_data(run_dir: Path, resolved: dict[str, Any], trace: Sequence[dict[str, Any]],
               history: Sequence[dict[str, Any]], final: dict[str, Any],
               logs: dict[str, str]) -> None:
    """Everything a checker reads, plus the node logs. Written before the checks run, so a
    run whose checker hangs or crashes still leaves its evidence."""
    (run_dir / "scenario.yaml").write_text(
        yaml.safe_dump(_plain(resolved), sort_keys=False, default_flow_style=None), encoding="utf-8")
    write_trace(trace, run_dir / "trace.jsonl")
    write_history(history, run_dir / "history.jsonl")
    (run_dir / "final.json").write_text(json.dumps(final, sort_keys=True, indent=1) + "\n",
                                        encoding="utf-8")
    if logs:
        (run_dir / "nodes").mkdir(exist_ok=True)
        for name, text in sorted(logs.items()):
            (run_dir / "nodes" / f"{_safe(name)}.log").write_text(text, encoding="utf-8")


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, sort_keys=True, indent=1) + "\n",
                                          encoding="utf-8")


def write_checks(run_dir: Path, verdicts: Iterable[Verdict], expect: dict[str, str],
                 code: int) -> None:
    rows = []
    for v in verdicts:
        row = v.as_dict()
        row["expected"] = expected(v.check, expect)
        row["as_expected"] = v.verdict == row["expected"]
        rows.append(row)
    doc = {"exit_code": code, "checks": rows}
    (run_dir / "checks.json").write_text(json.dumps(doc, sort_keys=True, indent=1, default=str) + "\n",
                                         encoding="utf-8")


# -- figures ----------------------------------------------------------------------------------


def leader_terms(trace: Iterable[dict[str, Any]]) -> list[tuple[float, str, Any]]:
    """(ts, node, term) of every node becoming leader (a PBFT primary: its view), in trace order."""
    out = []
    seen: set[tuple[str, Any]] = set()
    for ev in trace:
        data = ev.get("data") or {}
        if ev.get("ev") == "state" and data.get("role") in ("leader", "primary"):
            term = data.get("term", data.get("view"))
            key = (ev["node"], term)
            if key not in seen:
                seen.add(key)
                out.append((ev["ts"], ev["node"], term))
    return out


def run_stats(trace: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]],
              counts: dict[str, int] | None = None) -> dict[str, Any]:
    """Op counts, latencies, leader changes, commits and the fault timeline of a run."""
    ops = pair_ops(history)
    by = {"ok": 0, "fail": 0, "info": 0}
    lat = []
    for op in ops:
        by[op.outcome] = by.get(op.outcome, 0) + 1
        if op.outcome == "ok":
            lat.append(op.complete_ts - op.invoke_ts)
    commits: set[Any] = set()
    n_commit_events = 0
    for ev in trace:
        if ev.get("ev") == "commit":
            n_commit_events += 1
            data = ev.get("data") or {}
            commits.add(data.get("index", data.get("slot", data.get("tx", n_commit_events))))
    leaders = leader_terms(trace)
    faults = [{"ts": ev["ts"], **(ev.get("data") or {})} for ev in trace if ev.get("ev") == "fault"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "ops": len(ops), **by, "skipped": (counts or {}).get("skipped", 0),
        "latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "leaders": [{"ts": ts, "node": n, "term": t} for ts, n, t in leaders],
        "leader_changes": max(0, len(leaders) - 1),
        "commits": len(commits),
        "faults": faults,
    }


# -- views --------------------------------------------------------------------------------------

# (renderer, file, arguments) of each view; one that cannot render is noted in report.md.
# A renderer returns False when its dependency is missing, None (writing nothing) when the
# view does not apply to the run (a gossip view of a Raft run).
VIEWS = (("lab.views.perfetto:write_perfetto", "trace.perfetto.json", ("trace",)),
         ("lab.views.plots:write_plots", "plots.png", ("history", "trace")),
         ("lab.views.spacetime:write_spacetime", "spacetime.svg", ("trace",)),
         ("lab.views.spread:write_spread", "spread.png", ("trace", "history", "scenario")))


def write_views(run_dir: Path, trace: Sequence[dict[str, Any]],
                history: Sequence[dict[str, Any]], scenario: dict[str, Any] | None = None) -> list[str]:
    """Render the views into ``run_dir``; returns notes on what could not be made.
    ``scenario`` is the resolved scenario (what the run directory's scenario.yaml holds)."""
    notes = []
    inputs = {"trace": list(trace), "history": list(history), "scenario": dict(scenario or {})}
    for renderer, filename, args in VIEWS:
        try:
            made = load(renderer)(*(inputs[a] for a in args), run_dir / filename)
        except Exception as e:  # noqa: BLE001 - a view is a convenience; the run still stands
            notes.append(f"{filename} not written: {type(e).__name__}: {e}")
            continue
        if made is None and not (run_dir / filename).exists():
            continue
        if made is False or not (run_dir / filename).exists():
            notes.append(f"{filename} not written (its renderer's dependency is missing)")
    return notes


# -- report.md and the summary ----------------------------------------------------------------


def replay_command(result: RunResult) -> str:
    if result.replay:
        return result.replay
    src = result.scenario.source or str(result.run_dir / "scenario.yaml")
    return f"zlab run {src} --backend {result.backend} --seed {result.seed}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:g} ms"


def _verdict_line(v: Verdict, expect: dict[str, str]) -> str:
    want = expected(v.check, expect)
    mark = "ok" if v.verdict == want else ("??" if v.verdict == "unknown" else "XX")
    exp = "" if want == "holds" else f" (expected {want})"
    return f"[{mark}] {v.check}: {v.verdict}{exp}" + (f" -- {v.detail}" if v.detail else "")


def write_report(result: RunResult, extra_notes: Sequence[str] = (), views: bool = True) -> None:
    """checks.json, the views (unless ``views`` is False: they cost most of a short run's
    time, and a batch of runs may not want them), and report.md."""
    run_dir = result.run_dir
    s = result.scenario
    write_checks(run_dir, result.verdicts, s.expect, result.exit_code)
    view_notes = (write_views(run_dir, result.trace, result.history, result.resolved) if views
                  else ["views not made for this run; its replay command makes them"])
    st = result.stats
    lines = [
        f"# {s.name}",
        "",
        f"- protocol: `{s.protocol}`, nodes: {', '.join(s.node_names)}",
        f"- backend: `{result.backend}`, seed: `{result.seed}`",
        f"- workload: {s.workload.kind}, {s.workload.clients} clients, "
        + (f"open loop at {s.workload.rate:g}/s" if s.workload.rate else "closed loop")
        + f", {format_duration(s.workload.duration)}; settle {format_duration(s.settle)}",
        f"- replay: `{replay_command(result)}`",
        f"- exit code: {result.exit_code}",
        "",
        "## Checks",
        "",
        "| check | verdict | expected | detail |",
        "|---|---|---|---|",
    ]
    for v in result.verdicts:
        detail = v.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {v.check} | {v.verdict} | {expected(v.check, s.expect)} | {detail} |")
    lines += [
        "",
        "## Figures",
        "",
        f"- operations: {st['ops']} (ok {st['ok']}, fail {st['fail']}, info {st['info']}); "
        f"skipped arrivals (no idle client): {st['skipped']}",
        f"- latency of ok operations: p50 {_ms(st['latency_p50_ms'])}, p99 {_ms(st['latency_p99_ms'])}",
        f"- leader changes: {st['leader_changes']}; commits: {st['commits']}",
    ]
    if st["leaders"]:
        lines.append("- leaders: " + ", ".join(f"{x['node']} (term {x['term']}) at {x['ts']:g}s"
                                               for x in st["leaders"]))
    lines += ["", "## Fault timeline", ""]
    if st["faults"]:
        lines += ["| ts | action | phase | target | mechanism |", "|---|---|---|---|---|"]
        for f in st["faults"]:
            target = json.dumps(f.get("target"), separators=(",", ":"))
            lines.append(f"| {f['ts']:g}s | {f.get('action')} | {f.get('phase')} | `{target}` "
                         f"| {f.get('mechanism')} |")
    else:
        lines.append("No faults.")
    notes = list(result.notes) + list(extra_notes) + view_notes
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def summary(result: RunResult) -> str:
    """The few lines printed at the end of a run."""
    s, st = result.scenario, result.stats
    out = [
        f"scenario {s.name}  backend {result.backend}  seed {result.seed}",
        f"leader changes {st['leader_changes']}  commits {st['commits']}  ops ok {st['ok']} "
        f"fail {st['fail']} info {st['info']}  latency p50 {_ms(st['latency_p50_ms'])} "
        f"p99 {_ms(st['latency_p99_ms'])}",
    ]
    out += ["  " + _verdict_line(v, s.expect) for v in result.verdicts]
    out += [f"run dir {result.run_dir}", f"replay  {replay_command(result)}"]
    return "\n".join(out)


def verdict_lines(verdicts: Iterable[Verdict], expect: dict[str, str]) -> list[str]:
    return [_verdict_line(v, expect) for v in verdicts]
