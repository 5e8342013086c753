"""Raft on the local runtime (3 agents, durable log) beside PySyncObj, measured in one command.

Both sides submit at the leader, and each figure is the median of alternating trials
(bench/trials.py): PySyncObj, zlab with fsync, zlab with ZLAB_FSYNC=0, then again.

* throughput: ops/s achieved at saturation, a closed loop of a window of writes in
  flight, the best of the same windows on both sides (bench/ratesearch.py);
* sequential commit latency: one write at a time (PySyncObj's latency set-up:
  appendEntriesUseBatch=False on its side), p50 and p99 of 300.

zlab runs with its default trace level (every message traced) unless ZLAB_TRACE says
otherwise; the figure carries the level. ZLAB_FSYNC=0 matches PySyncObj's journal (an
mmap, never fsync'd); with fsync (zlab's default) an acknowledged write is on disk.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench import pysyncobj_bench
from bench.ratesearch import SPAN, WARMUP, best_window
from bench.trials import alternate, ratio, summarize
from lab.clientrule import Tally, Targets, client_rule_of

# Entries in one AppendEntries (Raft's max_append_entries; Multi-Paxos's max_batch in its bench).
# The default, 64, keeps messages small; at saturation, with at most 2 appends in flight per
# follower, it caps the window at 128 entries a follower round trip. PySyncObj's own batches
# hold up to 64 KB (appendEntriesBatchSizeBytes), a few hundred of these commands: 256 is alike.
BATCH = 256
SCENARIO = f"""
name: bench-raft
protocol: raft
nodes: 3
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms, max_append_entries: {BATCH}}}
"""
SEQUENTIAL = 300


@contextmanager
def cluster(fsync: bool, scenario: str = SCENARIO) -> Iterator[Any]:
    """A started local lab of ``scenario`` (agents with or without fsync), stopped afterwards."""
    from lab.backends.local import LocalBackend
    from lab.topology import load_scenario_text

    saved = {k: os.environ.get(k) for k in ("ZLAB_FSYNC", "ZLAB_HOME")}
    with tempfile.TemporaryDirectory(prefix="zlab-bench-") as tmp:
        os.environ.update(ZLAB_FSYNC="1" if fsync else "0", ZLAB_HOME=tmp)
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


def trace_level() -> str:
    return os.environ.get("ZLAB_TRACE", "all")


def leader(backend: Any, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in backend.scenario.node_names:
            st = backend.status(n)
            if st and st.get("role") == "leader":
                return n
        time.sleep(0.05)
    raise RuntimeError(f"no leader within {timeout:g} s")


class Writer:
    """Writes to one node through the backend's client path; counts answers by outcome.
    Under a core's client rule (PBFT; lab/clientrule.py) a write goes, signed, to the nodes
    of each attempt (``node`` unused; ``Targets``: the primary and f more, then every node
    after ``Targets.retry_later``) and counts once ``rule.replies`` of them answered alike, as the
    runner's clients do."""

    def __init__(self, backend: Any, node: str | None) -> None:
        self.b, self.node = backend, node
        self.seq = self.ok = self.other = 0
        self.rule = client_rule_of(backend.scenario)
        self.signer = backend.client_signer() if self.rule is not None and self.rule.sign else None
        self.targets = Targets(self.rule, backend.scenario.node_names) if self.rule is not None else None

    def write(self, then: Callable[[], None] | None = None) -> None:
        self.seq += 1
        op = {"f": "write", "key": f"k{self.seq % 8}", "value": self.seq,
              "client": "bench", "seq": self.seq}

        def done(result: dict[str, Any]) -> None:
            if result.get("type") == "ok":
                self.ok += 1
            else:
                self.other += 1
            if then is not None:
                then()
        if self.rule is None:
            self.b.submit(self.node, op, done)
            return
        if self.signer is not None:
            op = self.signer.sign_request(op)
        self._attempt(op, Tally(self.rule.replies), 1, done, self.b.now())

    def _attempt(self, op: dict[str, Any], tally: Tally, attempt: int,
                 done: Callable[[dict[str, Any]], None], sent: float) -> None:
        rule, targets, b = self.rule, self.targets, self.b
        assert rule is not None and targets is not None

        def answer(node: str, res: dict[str, Any]) -> None:
            if tally.add(node, res):
                targets.learn(res)
                targets.observe(b.now() - sent, attempt)
                done(res)
        for node in targets.of(attempt):
            b.submit(node, op, lambda res, node=node: answer(node, res))
        targets.retry_later(b.now, b.call_at, lambda: tally.accepted is None,
                            lambda: self._attempt(op, tally, attempt + 1, done, sent))

    def closed_loop(self, window: int, span: float = SPAN) -> float:
        """ops/s completed with ``window`` writes in flight, over ``span`` s after a warm-up."""
        b = self.b
        start = b.now()
        end = start + WARMUP + span

        def more() -> None:
            if b.now() < end:
                self.write(more)
        for _ in range(window):
            self.write(more)
        b.run_until(start + WARMUP)
        ok0, t0 = self.ok, b.now()
        b.run_until(end)
        ok1, t1 = self.ok, b.now()
        b.run_until(end + 1.0)       # drain what is in flight before the lab stops
        return (ok1 - ok0) / (t1 - t0)

    def sequential(self, count: int) -> dict[str, float]:
        samples = []
        for _ in range(count):
            answered = self.ok + self.other
            t = time.perf_counter()
            self.write()
            # Stop at the answer itself, as PySyncObj's side does (a callback sets an event):
            # pumping in fixed slices (run_until) would add up to a slice and a poll tick.
            if self.b.wait_for(lambda answered=answered: self.ok + self.other > answered, 5.0):
                samples.append(time.perf_counter() - t)
        samples.sort()
        return {"p50_ms": statistics.median(samples) * 1e3,
                "p99_ms": samples[int(len(samples) * 0.99)] * 1e3, "count": len(samples)}


def zlab_throughput(fsync: bool, scenario: str = SCENARIO) -> dict[str, Any]:
    def at(window: int) -> float:
        with cluster(fsync, scenario) as b:
            return Writer(b, leader(b)).closed_loop(window)
    best, window, tried = best_window(at)
    return {"ops_per_s": best, "window": window, "tried": tried}


def zlab_sequential(fsync: bool, count: int = SEQUENTIAL, scenario: str = SCENARIO) -> dict[str, Any]:
    with cluster(fsync, scenario) as b:
        return Writer(b, leader(b)).sequential(count)


def run(trials: int | None = None) -> dict[str, Any]:
    level = trace_level()
    kw = {"trials": trials} if trials else {}
    print(f"   throughput: closed loop at the leader, best of windows; zlab trace level {level!r}")
    tp = alternate([("pysyncobj", pysyncobj_bench.throughput),
                    ("zlab_fsync", lambda: zlab_throughput(True)),
                    ("zlab_nofsync", lambda: zlab_throughput(False))], **kw)
    print("   sequential commit latency, one write at a time at the leader")
    seq = alternate([("pysyncobj", lambda: pysyncobj_bench.sequential(SEQUENTIAL)),
                     ("zlab_fsync", lambda: zlab_sequential(True)),
                     ("zlab_nofsync", lambda: zlab_sequential(False))], **kw)
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "trace_level": level,
                           "pysyncobj": {"throughput": summarize(tp["pysyncobj"], "ops_per_s"),
                                         "p50_ms": summarize(seq["pysyncobj"], "p50_ms"),
                                         "p99_ms": summarize(seq["pysyncobj"], "p99_ms")}}
    for label in ("zlab_fsync", "zlab_nofsync"):
        # Ratios pair by pair (trial i of zlab against trial i of PySyncObj), then their median.
        tp_ratios = [ratio(z["ops_per_s"], p["ops_per_s"]) for z, p in zip(tp[label], tp["pysyncobj"], strict=True)]
        p50_ratios = [ratio(z["p50_ms"], p["p50_ms"]) for z, p in zip(seq[label], seq["pysyncobj"], strict=True)]
        row = {"throughput": summarize(tp[label], "ops_per_s"),
               "p50_ms": summarize(seq[label], "p50_ms"), "p99_ms": summarize(seq[label], "p99_ms"),
               "throughput_ratio": statistics.median(tp_ratios), "throughput_ratios": tp_ratios,
               "p50_ratio": statistics.median(p50_ratios), "p50_ratios": p50_ratios,
               "trials": {"throughput": tp[label], "sequential": seq[label]}}
        out[label] = row
        print(f"   {label}: {row['throughput']['median']:,.0f} ops/s = {row['throughput_ratio']:.2f}x "
              f"PySyncObj's {out['pysyncobj']['throughput']['median']:,.0f} (median of pair ratios "
              f"{tp_ratios}; goal >= 1.5x); sequential p50 {row['p50_ms']['median']:.2f} ms = "
              f"{row['p50_ratio']:.2f}x PySyncObj's {out['pysyncobj']['p50_ms']['median']:.2f} ms "
              f"(goal <= 2x)")
    out["pysyncobj"]["trials"] = {"throughput": tp["pysyncobj"], "sequential": seq["pysyncobj"]}
    out["readme_rows"] = readme_rows(out)
    return out


def _trials(summary: dict[str, Any], digits: int) -> str:
    return ", ".join(f"{v:,.{digits}f}" for v in summary["trials"])


def readme_rows(out: dict[str, Any]) -> list[list[str]]:
    pso, level = out["pysyncobj"], out["trace_level"]
    rows = []
    for label, what in (("zlab_fsync", "fsync on"), ("zlab_nofsync", "`ZLAB_FSYNC=0`")):
        z = out[label]
        rows.append([f"Raft throughput at the leader, {what}, trace level `{level}`",
                     f"{z['throughput']['median']:,.0f}/s (**{z['throughput_ratio']:.2f}×**; "
                     f"trials {_trials(z['throughput'], 0)})",
                     f"PySyncObj {pso['throughput']['median']:,.0f}/s "
                     f"(trials {_trials(pso['throughput'], 0)})", "≥ 1.5×"])
        rows.append([f"Raft sequential commit p50, {what}",
                     f"{z['p50_ms']['median']:.2f} ms (**{z['p50_ratio']:.2f}×**; "
                     f"trials {_trials(z['p50_ms'], 2)})",
                     f"PySyncObj {pso['p50_ms']['median']:.2f} ms "
                     f"(trials {_trials(pso['p50_ms'], 2)})", "≤ 2×"])
    return rows
