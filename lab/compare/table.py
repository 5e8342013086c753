"""The comparison's table from its runs: table.json, table.md, report.md and compare.png."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from lab.compare.rows import ROOT, TUTORIAL, Row
from lab.compare.suite import Fault, Timeline
from lab.views.compare import write_compare_plot

HOLDS, VIOLATED = "holds", "violated"
RUN_FAILED = "run failed"       # a run the runtime could not make, in place of its verdicts


# -- building ----------------------------------------------------------------------------------


def core_lines(row: Row) -> int | None:
    """Lines of code of the row's core files: neither blank nor only a comment (docstrings count:
    they are how these cores explain themselves). None when a file is missing."""
    total = 0
    for name in row.sources:
        path = ROOT / "nodes" / "protocols" / name
        if not path.is_file():
            return None
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text and not text.startswith("#"):
                total += 1
    return total or None


def consistency(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per check: the faults under which it was violated (or undecided)."""
    violated: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    for c in cells:
        if c.get("error"):
            unknown.setdefault(RUN_FAILED, []).append(c["fault"])
        for check, verdict in c["verdicts"].items():
            if verdict == VIOLATED:
                violated.setdefault(check, []).append(c["fault"])
            elif verdict != HOLDS:
                unknown.setdefault(check, []).append(c["fault"])
    checks = sorted({k for c in cells for k in c["verdicts"]})
    return {"checks": checks, "violated": violated, "unknown": unknown,
            "holds_everywhere": not violated and not unknown}


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.fmean(got), 4) if got else None


def build_row(row: Row, faults: list[Fault], cells: list[dict[str, Any]]) -> dict[str, Any]:
    by = {c["fault"]: c for c in cells}
    faulty = [c for c in cells if c["fault"] != "none"]
    parts = {f.name for f in faults if f.partition}
    clean = by.get("none")
    metrics = clean["metrics"] if clean else {}
    recoveries = [c["availability"]["recovery_s"] for c in faulty]
    found = [r for r in recoveries if r is not None]
    return {
        "protocol": row.protocol,
        "row": row.name,
        "note": row.note,
        "leader_target": row.leader,
        "consistency": consistency(cells),
        "availability": {
            "during": _mean([c["availability"]["during"] for c in faulty]),
            "after": _mean([c["availability"]["after"] for c in faulty]),
            "fault_free": clean["availability"]["during"] if clean else None,
        },
        "partition": {
            "during": _mean([c["availability"]["during"] for c in faulty if c["fault"] in parts]),
            "violated": sorted({k for c in faulty if c["fault"] in parts
                                for k, v in c["verdicts"].items() if v == VIOLATED}),
        },
        "throughput": metrics.get("throughput"),
        "latency_ms": metrics.get("latency_ms"),
        "msgs_per_op": metrics.get("msgs_per_op"),
        "recovery_s": {"median": round(statistics.median(found), 3) if found else None,
                       "max": max(found) if found else None,
                       "never": [c["fault"] for c in faulty
                                 if c["availability"]["recovery_s"] is None and not c.get("error")]},
        "complexity_lines": core_lines(row),
        "tutorial": {"row": row.tutorial, **TUTORIAL.get(row.tutorial, {})},
        "faults": {c["fault"]: {k: c[k] for k in ("verdicts", "details", "availability", "metrics",
                                                  "run_dir", "replay", "error") if k in c}
                   for c in cells},
    }


def build_table(rows: list[Row], faults: list[Fault], cells: list[dict[str, Any]], *,
                backend: str, seed: int, timeline: Timeline, elapsed_s: float) -> dict[str, Any]:
    return {
        "backend": backend, "seed": seed, "elapsed_s": round(elapsed_s, 1),
        "suite": [{"fault": f.name, "title": f.title, "partition": f.partition} for f in faults],
        "timeline": timeline.as_dict(),
        "rows": [build_row(r, faults, [c for c in cells if c["row"] == r.name]) for r in rows],
    }


# -- writing -----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def _num(x: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def consistency_text(c: dict[str, Any]) -> str:
    if c["holds_everywhere"]:
        return f"all {len(c['checks'])} checks hold"
    parts = [f"**{k}** violated ({', '.join(v)})" for k, v in sorted(c["violated"].items())]
    parts += [f"{k}{'' if k == RUN_FAILED else ' unknown'} ({', '.join(v)})"
              for k, v in sorted(c["unknown"].items())]
    return "; ".join(parts)


def main_table(table: dict[str, Any]) -> list[str]:
    out = ["| protocol | consistency (measured) | tutorial | availability during / after faults "
           "| tutorial | served during partitions | tutorial | throughput, p50 / p99 (no faults) "
           "| msgs/op | tutorial | recovery after heal, median / max | core lines | tutorial |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        t, lat, rec = r["tutorial"], r["latency_ms"] or {}, r["recovery_s"]
        never = f", never: {', '.join(rec['never'])}" if rec["never"] else ""
        name = r["row"] + (f" <sub>{r['note']}</sub>" if r["note"] else "")
        out.append(
            f"| {name} | {consistency_text(r['consistency'])} | {t.get('consistency', '-')} "
            f"| {_pct(r['availability']['during'])} / {_pct(r['availability']['after'])} "
            f"| {t.get('availability', '-')} | {_pct(r['partition']['during'])}"
            + (f" ({', '.join(r['partition']['violated'])} violated)" if r["partition"]["violated"] else "")
            + f" | {t.get('partition', '-')} "
            f"| {_num(r['throughput'], ' ops/s')}, {_num(lat.get('p50'), ' ms')} / {_num(lat.get('p99'), ' ms')} "
            f"| {_num(r['msgs_per_op'])} | {t.get('performance', '-')} "
            f"| {_num(rec['median'], ' s', 2)} / {_num(rec['max'], ' s', 2)}{never} "
            f"| {r['complexity_lines'] or '-'} | {t.get('complexity', '-')} |")
    return out


def fault_table(table: dict[str, Any]) -> list[str]:
    faults = [f["fault"] for f in table["suite"]]
    out = ["| protocol | " + " | ".join(faults) + " |", "|---|" + "---|" * len(faults)]
    for r in table["rows"]:
        cells = []
        for f in faults:
            c = r["faults"].get(f)
            if c is None:
                cells.append("-")
                continue
            bad = [k for k, v in c["verdicts"].items() if v == VIOLATED]
            unk = [k for k, v in c["verdicts"].items() if v not in (HOLDS, VIOLATED)]
            word = ("**" + ", ".join(bad) + "**") if bad else ("? " + ", ".join(unk)) if unk else "ok"
            if c.get("error"):
                word = RUN_FAILED
            a = c["availability"]
            avail = _pct(a["during"])
            cells.append(f"[{word}]({c['run_dir']}) {avail}")
        out.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    return out


def write_outputs(out_dir: Path, table: dict[str, Any]) -> str:
    """table.json, table.md, report.md and the plot; returns the text printed as the summary."""
    (out_dir / "table.json").write_text(json.dumps(table, indent=1, sort_keys=False) + "\n",
                                        encoding="utf-8")
    head = main_table(table)
    by_fault = fault_table(table)
    md = ["# zlab compare", "",
          f"Backend `{table['backend']}`, seed {table['seed']}, {len(table['rows'])} rows x "
          f"{len(table['suite'])} faults, {table['elapsed_s']:g} s. "
          "How each column is measured: report.md.", "", *head, "",
          "## Under each fault", "",
          "Violated checks (bold; each cell links its run directory) and the share of client "
          "operations served while the fault lasted (no faults: the same window, the baseline).",
          "",
          *by_fault, ""]
    (out_dir / "table.md").write_text("\n".join(md), encoding="utf-8")
    plot_note = ""
    try:
        if write_compare_plot(table, out_dir / "compare.png") is False:
            plot_note = "compare.png not written: matplotlib is not installed."
    except Exception as e:  # noqa: BLE001 - the plot is a convenience; the table stands
        plot_note = f"compare.png not written: {type(e).__name__}: {e}"
    (out_dir / "report.md").write_text(report_text(table, head, by_fault, plot_note), encoding="utf-8")
    return "\n".join(head + [""] + by_fault)


def report_text(table: dict[str, Any], head: list[str], by_fault: list[str], plot_note: str) -> str:
    tl = table["timeline"]
    suite = "\n".join(f"- `{f['fault']}`: {f['title']}" for f in table["suite"])
    replays = []
    for r in table["rows"]:
        for f, c in r["faults"].items():
            replays.append(f"- {r['row']} / {f}: `{c['replay']}`")
    text = f"""# zlab compare: the tutorial's table (§8.1), measured

Backend `{table['backend']}`, seed {table['seed']} for every run; {table['elapsed_s']:g} s in all.

{chr(10).join(head)}

![availability under each fault, latency without faults](compare.png)
{plot_note}

## Under each fault

{chr(10).join(by_fault)}

## The suite

Every row runs every fault below with the same seed. Each run's workload lasts
{tl['workload_s']:g} s; the fault applies {tl['fault_at_s']:g} s in and is reverted
{tl['fault_for_s']:g} s later (the heal, restart or resume), leaving the rest of the workload to
recover in; then the runner settles the cluster and makes its final reads, as `zlab run` does.
"The leader" is each row's target: Raft's and Multi-Paxos's leader, PBFT's primary, 2PC's and
3PC's coordinator, a fixed proposer for single-decree Paxos, a random node for Gossip.

{suite}

## The columns

- **consistency**: every safety (and, where the protocol promises one, liveness) check of the
  row's scenario, run on each fault's history and trace. "all N checks hold" means every check
  held under every fault; otherwise the violated checks and the faults they broke under. Each
  run can be replayed (below) and its directory holds the checker's explanation.
- **availability during / after faults**: the share of client operations *served*: `ok`, or
  refused on their own merits (a CAS that did not match, a transfer the account could not
  pay). "During": of the operations that ended (answered or timed out) while the fault was
  in force; one that waited the fault out and ended after the heal counts in neither
  window. "After": of the operations invoked after the heal until the workload ended. The
  mean over the faulty runs. A 2PC/3PC abort and a timeout are not served; the final reads
  are left out. The fault-free run, measured over the same windows, is the baseline (the
  `none` column below).
- **served during partitions**: the same share, over the partition faults only (minority, no
  majority, one-way), with the checks violated under them: the tutorial's "partition
  tolerance".
- **throughput, p50 / p99**: from the fault-free run (its metrics.json): `ok` operations per
  second of workload under an open-loop offered load (each row's scenario: 100 ops/s, 8
  clients with one operation each in flight: at most 8 / latency of it is taken), and the
  latency of `ok` operations, invocation to completion. On `sim` latency is simulated network
  time (no CPU cost), so it counts round trips; on `local` it includes real processing.
- **msgs/op**: messages the nodes sent one another over the fault-free run (heartbeats and
  gossip included) per client operation: Maelstrom's msgs-per-op.
- **recovery after heal**: seconds from the heal (the fault's revert event in the trace)
  to the end of the first operation
  invoked after it that was served, median and max over the faulty runs; "never" names
  the faults after which no operation succeeded before the workload ended. Its floor is the
  gap between arrivals (about 10 ms at 100 ops/s) plus one operation's latency.
- **core lines**: lines of the protocol's core files under nodes/protocols/ that are neither
  blank nor comments: a measure of the tutorial's "complexity" (shared modules count in each
  row that uses them).
- **tutorial**: the tutorial's own rating for that column (its §8.1 table, in English).
  Multi-Paxos stands beside Paxos's ratings.

## Replaying a run

{chr(10).join(replays)}
"""
    return text
