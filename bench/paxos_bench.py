"""Multi-Paxos beside zlab's Raft on the local runtime, same client, same durability, one command.

* Sequential commit latency and the highest rate with >= 90% success: the machinery of
  bench/raft_bench.py (3 agents, fsync on, PySyncObj's rate method), run on both cores,
  alternating Raft and Multi-Paxos in each of ``TRIALS`` trials; the figure is the median.
* Messages per committed op, counted from the trace: a 5-node run under a steady key-value
  workload (every message one node sent another, heartbeats and catch-up included, over the
  ok operations), beside the stable-leader cost 2(n-1) = 8 and the goal 3(n-1) = 12.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from typing import Any

from bench import raft_bench
from bench.ratesearch import max_rate

TRIALS = 3
N = 5
SCENARIOS = {
    "raft": raft_bench.SCENARIO,
    "multipaxos": """
name: bench-multipaxos
protocol: multipaxos
nodes: 3
config: {election_timeout: [300ms, 600ms], heartbeat: 50ms}
""",
}
COST_SCENARIO = """
name: bench-{protocol}-cost
protocol: {protocol}
nodes: {n}
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms}}
network: {{delay: 1ms}}
workload: {{kind: kv, clients: 4, rate: {rate}/s, duration: 5s, timeout: 1s, keys: 8}}
checks: [linearizable]
settle: 500ms
"""


def messages_per_op(protocol: str, rate: int, n: int = N) -> dict[str, Any]:
    """Server-to-server messages over ok ops of one local run with every event traced."""
    from lab.metrics import server_messages
    from lab.runner import run_scenario
    from lab.topology import load_scenario_text

    saved = {k: os.environ.get(k) for k in ("ZLAB_TRACE", "ZLAB_HOME")}
    with tempfile.TemporaryDirectory(prefix="zlab-bench-") as tmp:
        os.environ.update(ZLAB_TRACE="all", ZLAB_HOME=tmp)
        try:
            s = load_scenario_text(COST_SCENARIO.format(protocol=protocol, n=n, rate=rate))
            r = run_scenario(s, "local", seed=1, out=f"{tmp}/run", quiet=True, write=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    ok = sum(1 for h in r.history if h.get("type") == "ok")
    msgs = server_messages(r.trace, s.node_names) or 0
    return {"rate": rate, "ok": ok, "messages": msgs, "per_op": round(msgs / ok, 2) if ok else None,
            "checks": {v.check: v.verdict for v in r.verdicts}}


def run(seconds: float = 4.0, count: int = 300, trials: int = TRIALS) -> dict[str, Any]:
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "trials": trials}
    samples: dict[str, dict[str, list[Any]]] = {p: {"p50": [], "p99": [], "rps": []} for p in SCENARIOS}
    for t in range(trials):
        for protocol, text in SCENARIOS.items():          # alternate within each trial
            seq = raft_bench.sequential(True, count, text)
            best, _ = max_rate(raft_bench.success_at(True, seconds, text), 100, 80000)
            samples[protocol]["p50"].append(seq["p50_ms"])
            samples[protocol]["p99"].append(seq["p99_ms"])
            samples[protocol]["rps"].append(best)
            print(f"   trial {t + 1} {protocol}: sequential p50 {seq['p50_ms']:.2f} ms "
                  f"p99 {seq['p99_ms']:.2f} ms; max rate {best}/s", flush=True)
    for protocol, got in samples.items():
        out[protocol] = {"sequential_p50_ms": statistics.median(got["p50"]),
                         "sequential_p99_ms": statistics.median(got["p99"]),
                         "max_rps": statistics.median(got["rps"]), "trials": got}
    mp, raft = out["multipaxos"], out["raft"]
    print(f"   median of {trials}: multipaxos p50 {mp['sequential_p50_ms']:.2f} ms "
          f"({mp['sequential_p50_ms'] / raft['sequential_p50_ms']:.2f}x Raft), max rate {mp['max_rps']}/s "
          f"({mp['max_rps'] / raft['max_rps'] if raft['max_rps'] else float('inf'):.2f}x Raft)")
    cost: dict[str, Any] = {"n": N, "stable_leader": 2 * (N - 1), "goal": 3 * (N - 1)}
    for protocol in SCENARIOS:
        for rate in (50, 400):
            m = messages_per_op(protocol, rate)
            cost.setdefault(protocol, []).append(m)
            print(f"   {protocol} {N} nodes at {rate} ops/s: {m['per_op']} messages per committed op "
                  f"(2(n-1) = {2 * (N - 1)}, goal <= 3(n-1) = {3 * (N - 1)}); checks {m['checks']}")
    out["messages_per_op"] = cost
    return out
