"""Jepsen's final reads catch what nothing else can: an acknowledged write lost at the very end.

Raft with bug ``ack_before_commit`` answers ``ok`` to a write as soon as the leader has it in
its own log. The leader is cut off from the others for the last moments of the workload: it
goes on acknowledging writes that never reach a majority, the others elect a new leader, and
after the heal that leader's log overwrites them. No client reads those keys before the
workload ends, so the run's operations alone are linearizable; the reads of every key after the
heal and the settle are what show the acknowledged writes gone.
"""

from __future__ import annotations

import pytest

from lab.checks.base import HOLDS, VIOLATED
from lab.checks.linearizable import check_events
from lab.history import INVOKE
from lab.runner import RunResult, run_scenario
from lab.scenario import FaultStep, LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec
from nodes.protocols.raft import Raft

pytestmark = pytest.mark.sim

DURATION = 2.0
SEEDS = 20


def scenario(bugs: list[str]) -> Scenario:
    config = {"election_timeout": ["150ms", "300ms"], "heartbeat": "50ms", "bugs": bugs}
    return Scenario(
        name="raft-final-reads", protocol="raft", nodes=[NodeSpec(f"n{i}") for i in (1, 2, 3)],
        config=config, network=NetworkSpec(LinkParams(delay=0.002, jitter=0.001)),
        workload=WorkloadSpec(kind="kv", clients=3, rate=40.0, duration=DURATION, timeout=0.5,
                              params={"keys": 3}),
        # The leader is cut off for the workload's last 450 ms; the runner heals it at the end.
        faults=[FaultStep(DURATION - 0.45, "partition", "leader")],
        checks=list(Raft.default_checks), settle=1.0)


def run(bugs: list[str], seed: int) -> RunResult:
    return run_scenario(scenario(bugs), "sim", seed=seed, quiet=True, write=False, time_limit=10.0)


def without_final_reads(r: RunResult) -> list[dict]:
    """The run's history less the final reads (the operations invoked after the workload)."""
    final = {e["process"] for e in r.history if e["type"] == INVOKE and e["ts"] >= DURATION}
    assert final, "the run recorded no final reads"
    return [e for e in r.history if e["process"] not in final]


def test_the_bug_is_named_for_what_it_breaks() -> None:
    assert Raft.bug_breaks["ack_before_commit"] == ("linearizable",)
    assert "ack_before_commit" in Raft.bugs


def test_only_the_final_reads_catch_an_acknowledged_write_lost_at_the_end() -> None:
    for seed in range(SEEDS):
        r = run(["ack_before_commit"], seed)
        verdicts = {v.check: v for v in r.verdicts}
        if verdicts["linearizable"].verdict != VIOLATED:
            continue
        if check_events(without_final_reads(r)).verdict != HOLDS:
            continue            # a read during the run saw the loss too: not the case shown here
        # What the checker is stuck on is a final read, of a key whose acknowledged write is gone.
        stuck = verdicts["linearizable"].data["counterexample"]["stuck"]
        assert stuck["f"] == "read" and stuck["invoke_ts"] >= DURATION, stuck
        # The same schedule on the correct Raft: every check holds, final reads included.
        good = run([], seed)
        assert good.exit_code == 0, [(v.check, v.detail) for v in good.verdicts if v.verdict != HOLDS]
        assert len(without_final_reads(good)) < len(good.history)
        return
    pytest.fail(f"ack_before_commit: no seed in {SEEDS} where only the final reads catch the loss")
