"""Gossip on the simulator (and one scenario on local processes): the shipped scenarios give
their expected verdicts, the Gossip Glomers 3d targets hold with ``preset: efficient``, the
core spreads values as its Monte Carlo model predicts, runs replay from their seed, and the
broadcast workload's keys and metrics are there."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lab import epidemic
from lab.errors import ConfigError
from lab.runner import run_scenario
from lab.topology import load_scenario, load_scenario_text

SCENARIOS = sorted(Path("topologies").glob("gossip-*.yaml"))
CHEAP = [p for p in SCENARIOS if "glomers" not in p.name]     # the Glomers ones run below


def test_there_are_gossip_scenarios() -> None:
    assert {p.stem for p in SCENARIOS} >= {"gossip-broadcast", "gossip-partition", "gossip-glomers",
                                           "gossip-glomers-partition"}


@pytest.mark.sim
@pytest.mark.parametrize("path", CHEAP, ids=lambda p: p.stem)
def test_shipped_scenarios_give_their_expected_verdicts_on_sim(path: Path) -> None:
    result = run_scenario(load_scenario(str(path)), "sim", quiet=True, write=False)
    assert result.exit_code == 0, [v.as_dict() for v in result.verdicts]
    for key in ("msgs_per_op", "stable_latency_ms", "lost", "stale", "dissemination"):
        assert key in result.metrics


@pytest.mark.sim
def test_glomers_3d_targets_hold_with_the_efficient_preset() -> None:
    result = run_scenario(load_scenario("topologies/gossip-glomers.yaml"), "sim", quiet=True, write=False)
    assert result.exit_code == 0
    m = result.metrics
    assert m["msgs_per_op"] < 30
    assert m["stable_latency_ms"]["p50"] < 400
    assert m["stable_latency_ms"]["max"] < 600
    assert m["lost"] == 0
    assert result.stats["ok"] > 1900          # about 100 broadcasts a second for 20 s


@pytest.mark.sim
def test_nothing_is_lost_through_a_partition_in_the_glomers_shape() -> None:
    s = load_scenario("topologies/gossip-glomers-partition.yaml")
    s = dataclasses.replace(s, workload=dataclasses.replace(s.workload, duration=10.0),
                            faults=[dataclasses.replace(f, at=3.0, duration=4.0) for f in s.faults])
    result = run_scenario(s, "sim", quiet=True, write=False)
    assert result.exit_code == 0
    assert result.metrics["lost"] == 0
    # Values sent during the cut reached the other side only after the heal.
    assert result.metrics["stable_latency_ms"]["max"] > 2000


@pytest.mark.sim
@pytest.mark.parametrize("n", [10, 30])
def test_rounds_to_reach_every_node_match_the_monte_carlo_within_10_percent(n: int) -> None:
    measured, values, metrics = epidemic.measured_rounds(n, 40.0, seed=n)
    predicted = epidemic.predicted_rounds(epidemic.sweep_model(n), 1000, seed=n)
    assert values > 150 and metrics["lost"] == 0
    assert abs(measured - predicted) / predicted < 0.10, (measured, predicted)


def test_the_monte_carlo_is_the_model_it_claims() -> None:
    """Sanity of the model itself: more fanout spreads faster, pull beats push at the end, a
    blind counter of one round leaves a residue, and the curve reaches 1."""
    def rounds(**kw: object) -> float:
        return epidemic.predicted_rounds(epidemic.Model(n=200, interval=1.0, **kw), 100)   # type: ignore[arg-type]
    assert rounds(fanout=6, stop="none") < rounds(fanout=2, stop="none")
    assert rounds(mode="push_pull", stop="none") < rounds(mode="push", stop="none")
    leaky = epidemic.trials(epidemic.Model(n=200, fanout=1, stop="counter", stop_k=1), 50)
    assert any(max(t) == float("inf") for t in leaky)
    runs = epidemic.trials(epidemic.Model(n=50, stop="none"), 20)
    assert epidemic.curve(runs, [0.0, 100.0]) == [pytest.approx(1 / 50), 1.0]
    assert epidemic.serf_fraction(100, 3, 0.0) == pytest.approx(1 / 102)
    assert epidemic.serf_fraction(100, 3, epidemic.serf_rounds(100, 3)) == pytest.approx(1 - 1 / 200, abs=1e-4)


@pytest.mark.sim
def test_a_seed_replays_the_same_trace() -> None:
    s = load_scenario("topologies/gossip-broadcast.yaml")
    a = run_scenario(s, "sim", seed=4, quiet=True, write=False)
    b = run_scenario(s, "sim", seed=4, quiet=True, write=False)
    assert json.dumps(a.trace) == json.dumps(b.trace)
    assert a.metrics == b.metrics


@pytest.mark.sim
def test_a_run_directory_has_metrics_and_the_spread_view(tmp_path: Path) -> None:
    s = load_scenario("topologies/gossip-broadcast.yaml")
    s = dataclasses.replace(s, workload=dataclasses.replace(s.workload, duration=3.0))
    result = run_scenario(s, "sim", out=tmp_path / "run", quiet=True)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["lost"] == 0 and metrics["dissemination"]["rounds"]["mean"] > 0
    final = json.loads((result.run_dir / "final.json").read_text())
    assert sorted(final["reads"]) == sorted(s.node_names) and final["unanswered"] == []
    assert (result.run_dir / "spread.png").stat().st_size > 10_000
    assert "spread.png" not in (result.run_dir / "report.md").read_text()   # no "not written" note


def test_the_broadcast_workload_refuses_unknown_keys_and_bad_ratios() -> None:
    base = "name: x\nprotocol: gossip\nnodes: 3\nworkload: {kind: broadcast, rate: 10/s, duration: 1s, %s}\n"
    for extra, field in (("keys: 3", "workload.keys"), ("read_ratio: 2", "workload.read_ratio"),
                         ("read_ratio: 0.7, delete_ratio: 0.5", "workload.delete_ratio")):
        with pytest.raises(ConfigError) as e:
            run_scenario(load_scenario_text(base % extra), "sim", quiet=True, write=False)
        assert e.value.field == field


@pytest.mark.local
def test_gossip_partition_gives_its_verdicts_on_local_processes(tmp_path: Path) -> None:
    s = load_scenario("topologies/gossip-partition.yaml")
    s = dataclasses.replace(s, workload=dataclasses.replace(s.workload, duration=8.0),
                            faults=[dataclasses.replace(f, at=2.0, duration=2.0) if f.action == "partition"
                                    else dataclasses.replace(f, at=5.0, duration=1.5) for f in s.faults])
    # A run directory of its own: the agents keep their durable state under it.
    result = run_scenario(s, "local", out=tmp_path, quiet=True, write=False)
    assert result.exit_code == 0, [v.as_dict() for v in result.verdicts]
    assert result.metrics["lost"] == 0
