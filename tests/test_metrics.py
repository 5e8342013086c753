"""metrics.json: the generic figures every run gets, from hand-made traces and a real run."""

from __future__ import annotations

import json
from pathlib import Path

from lab import runner
from lab.metrics import generic, percentile, quantiles_ms, server_messages
from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec


def send(node: str, peer: str) -> dict:
    return {"ts": 0.1, "node": node, "lc": 1, "ev": "send", "mid": 1, "type": "x", "peer": peer}


def op(process: int, t0: float, t1: float, outcome: str = "ok") -> list[dict]:
    return [{"process": process, "type": "invoke", "f": "read", "key": "k", "value": None, "ts": t0},
            {"process": process, "type": outcome, "f": "read", "key": "k", "value": 1, "ts": t1}]


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([1.0, 2.0], 99) == 2.0
    assert quantiles_ms([0.001, 0.002, 0.010]) == {"p50": 2.0, "p99": 10.0, "max": 10.0}


def test_only_messages_between_the_labs_nodes_count() -> None:
    trace = [send("n1", "n2"), send("n2", "n1"), send("n1", "n3"), send("lab", "n1"), send("n1", "ghost")]
    assert server_messages(trace, ["n1", "n2", "n3"]) == 3
    assert server_messages([{"ev": "recv"}], ["n1"]) is None      # no sends traced: unknown, not 0


def test_generic_figures_from_a_hand_made_run() -> None:
    history = op(0, 0.0, 0.004) + op(1, 0.1, 0.102) + op(2, 0.2, 0.5, "info")
    m = generic([send("n1", "n2")] * 6, history, ["n1", "n2"], duration=2.0)
    assert m["ops"] == {"ok": 2, "fail": 0, "info": 1}
    assert m["throughput"] == 1.0
    assert m["latency_ms"] == {"p50": 2.0, "p99": 4.0, "max": 4.0}
    assert m["msgs_per_op"] == 2.0      # 6 messages over 3 operations


def test_a_run_writes_metrics_json(tmp_path: Path) -> None:
    s = Scenario(name="m", protocol="raft", nodes=[NodeSpec(f"n{i}") for i in (1, 2, 3)],
                 network=NetworkSpec(LinkParams(delay=0.001)),
                 workload=WorkloadSpec(kind="kv", clients=2, duration=1.0, params={"keys": 2}),
                 settle=0.5)
    r = runner.run_scenario(s, "sim", seed=3, out=tmp_path / "run", quiet=True)
    on_disk = json.loads((r.run_dir / "metrics.json").read_text())
    assert on_disk == r.metrics
    assert on_disk["ops"]["ok"] > 10 and on_disk["latency_ms"]["p50"] > 0
    # a Raft op costs at least a round of appends and their answers to two followers
    assert on_disk["msgs_per_op"] >= 4
