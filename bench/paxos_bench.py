"""Multi-Paxos beside zlab's Raft on the local runtime: same client, same durability, one command.

* throughput at the leader and sequential commit latency: bench/raft_bench.py's cluster,
  writer and methods (3 agents, fsync on: an acknowledged write is on disk), run on both
  cores in alternating trials (bench/trials.py); each figure is the median;
* messages per committed op, counted from the trace: a 5-node local run under a steady
  key-value workload (every message one node sent another, heartbeats, elections and
  catch-up included, over the operations answered ok or fail -- a cas that did not match
  went through the log too), beside the stable-leader cost 2(n-1) and the goal 3(n-1).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from typing import Any

from bench import raft_bench
from bench.trials import alternate, ratio, summarize

N = 5
RATES = (50, 400)            # ops/s offered in the message-count runs: light load and batching load
MULTIPAXOS = f"""
name: bench-multipaxos
protocol: multipaxos
nodes: 3
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms, max_batch: {raft_bench.BATCH}}}
"""
COST = """
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
    """Server-to-server messages over ok ops of one local run, every event traced."""
    from lab.metrics import server_messages
    from lab.runner import run_scenario
    from lab.topology import load_scenario_text

    saved = {k: os.environ.get(k) for k in ("ZLAB_TRACE", "ZLAB_HOME")}
    with tempfile.TemporaryDirectory(prefix="zlab-bench-") as tmp:
        os.environ.update(ZLAB_TRACE="all", ZLAB_HOME=tmp)
        try:
            s = load_scenario_text(COST.format(protocol=protocol, n=n, rate=rate))
            r = run_scenario(s, "local", seed=1, out=f"{tmp}/run", quiet=True, write=False)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    # Committed: answered ok, or fail (a cas that did not match): both went through the log.
    committed = sum(1 for h in r.history if h.get("type") in ("ok", "fail"))
    msgs = server_messages(r.trace, s.node_names) or 0
    return {"per_op": round(msgs / committed, 2) if committed else None, "messages": msgs,
            "committed": committed,
            "linearizable": r.verdicts[0].verdict if r.verdicts else None}


def run(trials: int | None = None) -> dict[str, Any]:
    kw = {"trials": trials} if trials else {}
    level = raft_bench.trace_level()
    print(f"   throughput: closed loop at the leader, best of windows, fsync on; trace level {level!r}")
    tp = alternate([("raft", lambda: raft_bench.zlab_throughput(True)),
                    ("multipaxos", lambda: raft_bench.zlab_throughput(True, MULTIPAXOS))], **kw)
    print("   sequential commit latency, one write at a time at the leader, fsync on")
    seq = alternate([("raft", lambda: raft_bench.zlab_sequential(True)),
                     ("multipaxos", lambda: raft_bench.zlab_sequential(True, scenario=MULTIPAXOS))], **kw)
    print(f"   messages per committed op, {N} nodes, from the trace (2(n-1) = {2 * (N - 1)}, "
          f"goal <= 3(n-1) = {3 * (N - 1)})")
    cost = alternate([(f"{p}@{rate}", lambda p=p, rate=rate: messages_per_op(p, rate))
                      for rate in RATES for p in ("raft", "multipaxos")], **kw)
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "trace_level": level, "n": N,
                           "stable_leader_msgs": 2 * (N - 1), "goal_msgs": 3 * (N - 1)}
    for p in ("raft", "multipaxos"):
        out[p] = {"throughput": summarize(tp[p], "ops_per_s"), "p50_ms": summarize(seq[p], "p50_ms"),
                  "p99_ms": summarize(seq[p], "p99_ms"),
                  "msgs_per_op": {rate: summarize(cost[f"{p}@{rate}"], "per_op") for rate in RATES},
                  "trials": {"throughput": tp[p], "sequential": seq[p],
                             "cost": {rate: cost[f"{p}@{rate}"] for rate in RATES}}}
    mp = out["multipaxos"]
    out["throughput_ratios"] = [ratio(m["ops_per_s"], r["ops_per_s"])
                                for m, r in zip(tp["multipaxos"], tp["raft"], strict=True)]
    out["p50_ratios"] = [ratio(m["p50_ms"], r["p50_ms"]) for m, r in zip(seq["multipaxos"], seq["raft"], strict=True)]
    med = {k: statistics.median([x for x in out[k] if x is not None] or [0.0])
           for k in ("throughput_ratios", "p50_ratios")}
    print(f"   multipaxos: {mp['throughput']['median']:,.0f} ops/s ({med['throughput_ratios']:.2f}x Raft), "
          f"sequential p50 {mp['p50_ms']['median']:.2f} ms ({med['p50_ratios']:.2f}x Raft); messages per op "
          + ", ".join(f"{mp['msgs_per_op'][r]['median']} at {r}/s" for r in RATES)
          + " (Raft " + ", ".join(f"{out['raft']['msgs_per_op'][r]['median']}" for r in RATES) + ")")
    out["readme_rows"] = readme_rows(out, med)
    return out


def _trials(summary: dict[str, Any], digits: int) -> str:
    return ", ".join(f"{v:,.{digits}f}" for v in summary["trials"])


def readme_rows(out: dict[str, Any], med: dict[str, float]) -> list[list[str]]:
    mp, raft = out["multipaxos"], out["raft"]
    rows = [["Multi-Paxos throughput at the leader, fsync on",
             f"{mp['throughput']['median']:,.0f}/s ({med['throughput_ratios']:.2f}×; trials "
             f"{_trials(mp['throughput'], 0)})",
             f"zlab's Raft {raft['throughput']['median']:,.0f}/s (trials {_trials(raft['throughput'], 0)})", "—"],
            ["Multi-Paxos sequential commit p50, fsync on",
             f"{mp['p50_ms']['median']:.2f} ms ({med['p50_ratios']:.2f}×; trials {_trials(mp['p50_ms'], 2)})",
             f"zlab's Raft {raft['p50_ms']['median']:.2f} ms (trials {_trials(raft['p50_ms'], 2)})", "—"]]
    for rate in RATES:
        m, r = mp["msgs_per_op"][rate], raft["msgs_per_op"][rate]
        rows.append([f"messages per committed op, {out['n']} nodes at {rate} ops/s (from the trace)",
                     f"Multi-Paxos {m['median']} (trials {_trials(m, 2)})",
                     f"zlab's Raft {r['median']} (trials {_trials(r, 2)}); stable-leader cost "
                     f"2(n−1) = {out['stable_leader_msgs']}", f"≤ 3(n−1) = {out['goal_msgs']}"])
    return rows
