"""Raft on the local runtime (3 agents, durable log) beside PySyncObj, measured in one command.

Throughput uses PySyncObj's own method (bench/ratesearch.py): requests are
offered open-loop at a fixed rate in one-second bursts, spread over the three
nodes' clients, and the figure is the highest rate at which >= 90% succeed.
zlab's clients send to the leader (a follower would answer not_leader, where
PySyncObj forwards internally). Sequential latency: one write at a time, as
PySyncObj's latency set-up does (appendEntriesUseBatch=False on its side).

zlab runs twice: with fsync (its default: an acknowledged write is on disk) and
with ZLAB_FSYNC=0, which matches PySyncObj's journal (mmap, never fsync'd).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from bench import pysyncobj_bench
from bench.localrun import Client, cluster, sequential, success_at, wait_for_role
from bench.ratesearch import max_rate

SCENARIO = """
name: bench-raft
protocol: raft
nodes: 3
config: {election_timeout: [300ms, 600ms], heartbeat: 50ms}
"""


def leader_client(backend: Any) -> Client:
    """zlab's clients send to the leader (a follower would answer not_leader)."""
    return Client(backend, wait_for_role(backend, "leader"))


def _sequential(fsync: bool, count: int) -> dict[str, float]:
    with cluster(SCENARIO, fsync) as b:
        return sequential(b, leader_client(b), count)


def run(seconds: float = 4.0, count: int = 300) -> dict[str, Any]:
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0]}
    pso_seq = pysyncobj_bench.sequential(count)
    print(f"   PySyncObj sequential (no batch): p50 {pso_seq['p50_ms']:.1f} ms, p99 {pso_seq['p99_ms']:.1f} ms")
    pso_tp = pysyncobj_bench.throughput(seconds)
    print(f"   PySyncObj max rate with >= 90% success: {pso_tp['max_rps']}/s")
    out["pysyncobj"] = {"sequential": pso_seq, "throughput": pso_tp}
    for label, fsync in (("zlab_fsync", True), ("zlab_nofsync", False)):
        seq = _sequential(fsync, count)
        best, tried = max_rate(success_at(partial(cluster, SCENARIO, fsync), leader_client, seconds),
                               100, 80000)
        ratio_tp = best / pso_tp["max_rps"] if pso_tp["max_rps"] else float("inf")
        ratio_p50 = seq["p50_ms"] / pso_seq["p50_ms"]
        print(f"   {label}: sequential p50 {seq['p50_ms']:.1f} ms p99 {seq['p99_ms']:.1f} ms "
              f"({ratio_p50:.2f}x PySyncObj; goal <= 2x); max rate {best}/s "
              f"({ratio_tp:.2f}x PySyncObj; goal >= 1.5x)")
        out[label] = {"sequential": seq, "throughput": {"max_rps": best, "tried": tried},
                      "p50_ratio": ratio_p50, "throughput_ratio": ratio_tp}
    return out
