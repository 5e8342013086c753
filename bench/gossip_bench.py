"""Gossip: the seed's claim and the anchors, measured (`python -m bench gossip`).

* **sweep**: rounds for a value to reach every node against N = 10 ... 1,000, the core on the
  simulator beside a Monte Carlo of the same model (lab/epidemic.py) and Serf's formula;
  the simulator must stay within 10% of the Monte Carlo. Plotted to bench/gossip-sweep.png.
* **glomers**: Gossip Glomers 3d (topologies/gossip-glomers.yaml: 25 nodes, 100 ms links,
  100 broadcasts/s, ``preset: efficient``) on the simulator and on local processes: targets
  msgs_per_op < 30, stable latency median < 400 ms and max < 600 ms; and the same shape
  through a partition (topologies/gossip-glomers-partition.yaml): lost must be 0.
* **scale**: local labs of 10, 30 and 100 gossip nodes: time to ready and memory per agent,
  then a 100-node broadcast run; a 30-container gossip run on docker (skipped, and said so,
  where no engine answers). The 1,000-node simulator run is the sweep's last point.

Figures that depend on the wall clock (local, docker) need a quiet machine.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import epidemic
from lab.runner import RunResult, run_scenario
from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec
from lab.topology import load_scenario

SWEEP = ((10, 40.0), (20, 40.0), (50, 30.0), (100, 20.0), (200, 15.0), (500, 10.0), (1000, 10.0))
MC_TRIALS = 400
TOLERANCE = 0.10
GLOMERS = {"msgs_per_op": 30.0, "p50": 400.0, "max": 600.0}
LOCAL_SIZES = (10, 30, 100)
DOCKER_NODES = 30
PLOT = Path("bench/gossip-sweep.png")


def _cpu() -> float:
    return time.process_time()


def sweep() -> list[dict[str, Any]]:
    rows = []
    for n, duration in SWEEP:
        t, c = time.perf_counter(), _cpu()
        measured, values, metrics = epidemic.measured_rounds(n, duration)
        wall, cpu = time.perf_counter() - t, _cpu() - c
        predicted = epidemic.predicted_rounds(epidemic.sweep_model(n), MC_TRIALS if n <= 200 else 100)
        serf = epidemic.serf_rounds(n, int(epidemic.SWEEP_CONFIG["fanout"]))
        diff = (measured - predicted) / predicted
        row = {"n": n, "values": values, "sim_rounds": measured, "monte_carlo_rounds": round(predicted, 3),
               "serf_rounds": round(serf, 3), "diff": round(diff, 4), "within_10pct": abs(diff) <= TOLERANCE,
               "lost": metrics["lost"], "msgs_per_op": metrics["msgs_per_op"],
               "sim_wall_s": round(wall, 1), "sim_cpu_s": round(cpu, 1)}
        rows.append(row)
        print(f"   N={n:5d}: {measured:.2f} rounds in the simulator ({values} values), Monte Carlo "
              f"{predicted:.2f} ({diff:+.1%}{'' if row['within_10pct'] else ' OUTSIDE 10%'}), Serf "
              f"{serf:.2f}; sim run {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    _plot(rows)
    return rows


def _plot(rows: list[dict[str, Any]]) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["sim_rounds"] for r in rows], "o-", label="zlab core on the simulator")
    ax.plot(ns, [r["monte_carlo_rounds"] for r in rows], "s--", label="Monte Carlo, same model")
    ax.plot(ns, [r["serf_rounds"] for r in rows], ":", color="#7f7f7f", label="Serf's formula")
    ax.set_xscale("log")
    ax.set_xlabel("nodes")
    ax.set_ylabel("rounds until every node has a value")
    cfg = epidemic.SWEEP_CONFIG
    ax.set_title(f"push gossip, fanout {cfg['fanout']}, interval {cfg['interval']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(PLOT), format="png")
    print(f"   plot: {PLOT}")


def _figures(r: RunResult) -> dict[str, Any]:
    m = r.metrics
    return {"msgs_per_op": m["msgs_per_op"], "stable_latency_ms": m["stable_latency_ms"],
            "lost": m["lost"], "dissemination": m["dissemination"], "exit_code": r.exit_code,
            "verdicts": {v.check: v.verdict for v in r.verdicts}}


def glomers_targets_met(m: dict[str, Any]) -> bool:
    lat = m["stable_latency_ms"]
    return (m["msgs_per_op"] is not None and m["msgs_per_op"] < GLOMERS["msgs_per_op"]
            and lat["p50"] is not None and lat["p50"] < GLOMERS["p50"]
            and lat["max"] is not None and lat["max"] < GLOMERS["max"] and m["lost"] == 0)


def _run(scenario: Scenario, backend: str) -> RunResult:
    """A run kept in memory; local and docker agents keep their durable state in a directory
    of the run's own, removed afterwards (a shared one would hand one run's disks to the next)."""
    out = tempfile.mkdtemp(prefix="zlab-bench-gossip-")
    try:
        return run_scenario(scenario, backend, out=out, quiet=True, write=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def glomers(backend: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("gossip-glomers", "gossip-glomers-partition"):
        t = time.perf_counter()
        r = _run(load_scenario(f"topologies/{name}.yaml"), backend)
        f = _figures(r)
        f["wall_s"] = round(time.perf_counter() - t, 1)
        out[name] = f
        lat = f["stable_latency_ms"]
        extra = (f"; targets {'met' if glomers_targets_met(f) else 'MISSED'}" if name == "gossip-glomers"
                 else "")
        print(f"   {name} on {backend}: msgs_per_op {f['msgs_per_op']}, stable latency p50 "
              f"{lat['p50']} ms max {lat['max']} ms, lost {f['lost']}, exit {f['exit_code']}{extra}",
              flush=True)
    return out


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gossip_scenario(n: int, duration: float, rate: float = 20.0) -> Scenario:
    return Scenario(name=f"gossip-scale-{n}", protocol="gossip",
                    nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)], config={"preset": "lan"},
                    network=NetworkSpec(default=LinkParams(delay=0.002)),
                    workload=WorkloadSpec(kind="broadcast", clients=10, rate=rate, duration=duration),
                    checks=["eventual_delivery", "convergence", "no_resurrection"], settle=5.0, seed=1)


def local_start(n: int) -> dict[str, Any]:
    """Seconds to a ready n-node local lab, and what an agent costs (resident memory)."""
    from lab.backends.local import LocalBackend

    out = tempfile.mkdtemp(prefix="zlab-bench-gossip-")
    b = LocalBackend(_gossip_scenario(n, 1.0), 1, out)
    t = time.perf_counter()
    try:
        b.start()
        ready = time.perf_counter() - t
        rss = [x for x in (_rss_mb(p) for p in b.pids.values()) if x is not None]
    finally:
        b.stop()
        shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "ready_s": round(ready, 2), "rss_mb_mean": round(sum(rss) / len(rss), 1) if rss else None,
            "rss_mb_total": round(sum(rss), 1)}


def scale() -> dict[str, Any]:
    out: dict[str, Any] = {"local_start": []}
    for n in LOCAL_SIZES:
        try:
            row = local_start(n)
        except Exception as e:  # noqa: BLE001 -- a size that cannot start is a figure too
            row = {"n": n, "error": f"{type(e).__name__}: {e}"}
        out["local_start"].append(row)
        print(f"   local lab of {n} gossip nodes: " + (
            f"ready in {row['ready_s']} s, {row['rss_mb_mean']} MB resident per agent "
            f"({row['rss_mb_total']} MB in all)" if "error" not in row else f"could not start: {row['error']}"),
            flush=True)
    try:
        t = time.perf_counter()
        r = _run(_gossip_scenario(100, 10.0), "local")
        out["local_100_run"] = {**_figures(r), "wall_s": round(time.perf_counter() - t, 1)}
        print(f"   100 local processes, broadcast 20/s for 10 s: exit {r.exit_code}, "
              f"{out['local_100_run']['verdicts']}, msgs_per_op {r.metrics['msgs_per_op']}", flush=True)
    except Exception as e:  # noqa: BLE001
        out["local_100_run"] = {"error": f"{type(e).__name__}: {e}"}
        print(f"   100 local processes: could not run: {type(e).__name__}: {e}", flush=True)
    out["docker"] = docker_run()
    return out


def docker_run(n: int = DOCKER_NODES) -> dict[str, Any]:
    """A gossip broadcast run on ``n`` containers, or why it could not run."""
    try:
        from lab.backends.docker import docker_client
        docker_client().ping()
    except Exception as e:  # noqa: BLE001
        print(f"   docker: skipped, no engine answers ({type(e).__name__}: {e})", flush=True)
        return {"skipped": f"{type(e).__name__}: {e}"}
    os.environ.setdefault("ZLAB_OWNER", "bench")
    t = time.perf_counter()
    try:
        r = _run(_gossip_scenario(n, 10.0), "docker")
    except Exception as e:  # noqa: BLE001
        print(f"   docker, {n} containers: could not run: {type(e).__name__}: {e}", flush=True)
        return {"n": n, "error": f"{type(e).__name__}: {e}"}
    f = {**_figures(r), "n": n, "wall_s": round(time.perf_counter() - t, 1)}
    print(f"   docker, {n} containers, broadcast 20/s for 10 s: exit {r.exit_code}, {f['verdicts']}, "
          f"{f['wall_s']} s in all", flush=True)
    return f


def run(parts: tuple[str, ...] = ("sweep", "glomers", "scale")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "sweep" in parts:
        out["sweep"] = sweep()
    if "glomers" in parts:
        out["glomers_sim"] = glomers("sim")
        out["glomers_local"] = glomers("local")
    if "scale" in parts:
        out["scale"] = scale()
    out["max_rss_mb_orchestrator"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


if __name__ == "__main__":      # python -m bench.gossip_bench [sweep|glomers|scale ...]
    import json
    print(json.dumps(run(tuple(sys.argv[1:]) or ("sweep", "glomers", "scale")), indent=1, default=str))

