"""Raft on the local runtime (3 agents, durable log) beside PySyncObj, measured in one command.

Throughput uses PySyncObj's own method (bench/ratesearch.py): requests are
offered open-loop at a fixed rate in one-second bursts, spread over the three
nodes' clients, and the figure is the highest rate at which >= 90% succeed.
zlab's clients send to the leader (a follower would answer not_leader, where
PySyncObj forwards internally). Sequential latency: one write at a time, as
PySyncObj's latency set-up does (appendEntriesUseBatch=False on its side).

zlab runs twice: with fsync (its default: an acknowledged write is on disk) and
with ZLAB_FSYNC=0, which matches PySyncObj's journal (mmap, never fsync'd).

The cluster, the client and both measurements take the scenario as text, so that
other replicated key-value cores (bench/paxos_bench.py) are measured by the very
same machinery.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from typing import Any

from bench import pysyncobj_bench
from bench.ratesearch import max_rate

SCENARIO = """
name: bench-raft
protocol: raft
nodes: 3
config: {election_timeout: [300ms, 600ms], heartbeat: 50ms}
"""


@contextmanager
def _cluster(fsync: bool, scenario: str = SCENARIO):
    from lab.backends.local import LocalBackend
    from lab.topology import load_scenario_text

    saved = {k: os.environ.get(k) for k in ("ZLAB_FSYNC", "ZLAB_TRACE", "ZLAB_HOME")}
    with tempfile.TemporaryDirectory(prefix="zlab-bench-") as tmp:
        os.environ.update(ZLAB_FSYNC="1" if fsync else "0", ZLAB_TRACE="protocol", ZLAB_HOME=tmp)
        backend = LocalBackend(load_scenario_text(scenario), 1, f"{tmp}/run")
        try:
            backend.start()
            yield backend
        finally:
            backend.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _leader(backend: Any, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in backend.scenario.node_names:
            st = backend.status(n)
            if st and st.get("role") == "leader":
                return n
        time.sleep(0.05)
    raise RuntimeError(f"no leader within {timeout:.0f} s")


class _Client:
    """Open-loop writes against one backend; counts answers by outcome."""

    def __init__(self, backend: Any) -> None:
        self.b = backend
        self.seq = 0
        self.ok = 0
        self.other = 0

    def write(self, leader: str, process: int) -> None:
        self.seq += 1
        op = {"f": "write", "key": f"k{self.seq % 8}", "value": self.seq,
              "client": f"bench{process}", "seq": self.seq}

        def done(result: dict[str, Any]) -> None:
            if result.get("type") == "ok":
                self.ok += 1
            else:
                self.other += 1
        self.b.submit(leader, op, done)


def success_at(fsync: bool, seconds: float, scenario: str = SCENARIO) -> Any:
    """The success fraction of ``rate`` writes a second offered for ``seconds``, on a fresh cluster."""
    def at(rate: int) -> float:
        with _cluster(fsync, scenario) as b:
            leader = _leader(b)
            client = _Client(b)
            start = b.now()
            sent = 0
            for second in range(int(seconds)):
                burst = start + second
                b.run_until(burst)
                for i in range(rate):
                    client.write(leader, i % 3)
                    sent += 1
            b.run_until(start + seconds + 2.0)
            return client.ok / sent if sent else 0.0
    return at


def sequential(fsync: bool, count: int, scenario: str = SCENARIO) -> dict[str, float]:
    """Commit latency of ``count`` writes one at a time: ``{p50_ms, p99_ms, count}``."""
    with _cluster(fsync, scenario) as b:
        leader = _leader(b)
        client = _Client(b)
        samples = []
        for _ in range(count):
            answered = client.ok + client.other
            t = time.perf_counter()
            client.write(leader, 0)
            deadline = b.now() + 5.0
            while client.ok + client.other == answered and b.now() < deadline:
                b.run_until(b.now() + 0.0005)
            if client.ok + client.other > answered:
                samples.append(time.perf_counter() - t)
    samples.sort()
    return {"p50_ms": statistics.median(samples) * 1e3,
            "p99_ms": samples[int(len(samples) * 0.99)] * 1e3, "count": len(samples)}


def run(seconds: float = 4.0, count: int = 300) -> dict[str, Any]:
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0]}
    pso_seq = pysyncobj_bench.sequential(count)
    print(f"   PySyncObj sequential (no batch): p50 {pso_seq['p50_ms']:.1f} ms, p99 {pso_seq['p99_ms']:.1f} ms")
    pso_tp = pysyncobj_bench.throughput(seconds)
    print(f"   PySyncObj max rate with >= 90% success: {pso_tp['max_rps']}/s")
    out["pysyncobj"] = {"sequential": pso_seq, "throughput": pso_tp}
    for label, fsync in (("zlab_fsync", True), ("zlab_nofsync", False)):
        seq = sequential(fsync, count)
        best, tried = max_rate(success_at(fsync, seconds), 100, 80000)
        ratio_tp = best / pso_tp["max_rps"] if pso_tp["max_rps"] else float("inf")
        ratio_p50 = seq["p50_ms"] / pso_seq["p50_ms"]
        print(f"   {label}: sequential p50 {seq['p50_ms']:.1f} ms p99 {seq['p99_ms']:.1f} ms "
              f"({ratio_p50:.2f}x PySyncObj; goal <= 2x); max rate {best}/s "
              f"({ratio_tp:.2f}x PySyncObj; goal >= 1.5x)")
        out[label] = {"sequential": seq, "throughput": {"max_rps": best, "tried": tried},
                      "p50_ratio": ratio_p50, "throughput_ratio": ratio_tp}
    return out
