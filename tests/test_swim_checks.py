"""SWIM's checkers and figures on hand-made traces: each verdict, each excuse, each bound.

Three members with the ``fast`` preset: base suspicion timeout (the accuracy
window) 0.4 s, default completeness bound 0.8 + 2.4 + 4 x 0.02 = 3.28 s.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.swim import accuracy, analyse, completeness
from lab.errors import ConfigError
from lab.runner import run_scenario
from lab.topology import load_scenario_text
from lab.workloads.membership import MembershipWorkload

SCENARIO = {"nodes": 3, "config": {"preset": "fast"}}
NAMES = ["n1", "n2", "n3"]


def fault(ts: float, action: str, target: Any, phase: str = "apply") -> dict[str, Any]:
    return {"ts": ts, "node": "lab", "lc": 0, "ev": "fault",
            "data": {"action": action, "target": target, "phase": phase, "mechanism": "sim"}}


def st(ts: float, node: str, member: str, status: str, inc: int = 0, by: str | None = None,
       refute: bool = False) -> dict[str, Any]:
    data = {"member": member, "status": status, "inc": inc, "by": by or node}
    if refute:
        data["refute"] = True
    return {"ts": ts, "node": node, "lc": 1, "ev": "state", "data": data}


def born(ts: float = 0.0, inc: int = 0) -> list[dict[str, Any]]:
    return [st(ts, n, n, "alive", inc) for n in NAMES]


def data(trace: list[dict[str, Any]], **params: Any) -> RunData:
    return RunData(scenario=SCENARIO, trace=sorted(trace, key=lambda e: e["ts"]), history=[],
                   params=params)


# -- accuracy -------------------------------------------------------------------------------

def test_a_responsive_member_declared_dead_violates_accuracy() -> None:
    trace = [*born(), st(1.0, "n1", "n3", "suspect"), st(1.5, "n1", "n3", "dead")]
    v = accuracy(data(trace))
    assert v.verdict == VIOLATED and "n1 declared n3 dead at 1.500s" in v.detail
    assert v.data["counts"]["false"] == 1 and v.data["window_s"] == pytest.approx(0.4)


@pytest.mark.parametrize("faults,kind", [
    ([fault(0.9, "pause", "n3"), fault(1.2, "resume", "n3")], "paused"),
    ([fault(0.5, "crash", "n3")], "crashed"),
    ([fault(0.8, "partition", [["n3"], ["n1", "n2"]]), fault(1.3, "heal", "all")], "partitioned"),
    ([fault(0.8, "delay", ["n1", "n3"]), fault(0.8, "delay", ["n2", "n3"]),
      fault(1.3, "delay", ["n1", "n3"], "revert"), fault(1.3, "delay", ["n2", "n3"], "revert")], "slow"),
])
def test_a_member_that_could_not_answer_within_the_window_is_excused(
        faults: list[dict[str, Any]], kind: str) -> None:
    trace = [*born(), *faults, st(1.5, "n1", "n3", "dead")]
    v = accuracy(data(trace))
    assert v.verdict == HOLDS, v.detail
    assert v.data["counts"][kind] == 1


def test_the_window_decides_what_counts_as_recent() -> None:
    trace = [*born(), fault(0.5, "pause", "n3"), fault(0.6, "resume", "n3"), st(1.5, "n1", "n3", "dead")]
    assert accuracy(data(trace)).verdict == VIOLATED               # paused 0.9 s before: outside 0.4 s
    assert accuracy(data(trace, window=1.0)).verdict == HOLDS


def test_a_death_of_an_earlier_life_is_not_a_false_positive() -> None:
    # n3 crashed, came back as incarnation 1; n1 only now declares incarnation 0 dead.
    trace = [*born(), fault(0.2, "crash", "n3"), fault(0.3, "restart", "n3"), st(0.3, "n3", "n3", "alive", 1),
             st(2.0, "n1", "n3", "dead", 0)]
    v = accuracy(data(trace))
    assert v.verdict == HOLDS and v.data["counts"]["stale"] == 1
    trace.append(st(3.0, "n2", "n3", "dead", 1))                  # the new life, responsive: false
    assert accuracy(data(trace)).verdict == VIOLATED


def test_a_trace_without_membership_events_decides_nothing() -> None:
    for check in (accuracy, completeness):
        assert check(data([fault(1.0, "crash", "n3")])).verdict == UNKNOWN


# -- completeness ------------------------------------------------------------------------------

def test_every_live_member_must_declare_the_crashed_one_within_the_bound() -> None:
    base = [*born(), fault(1.0, "crash", "n3"), st(2.0, "n1", "n3", "dead"), st(9.0, "n1", "n2", "alive")]
    v = completeness(data(base))
    assert v.verdict == VIOLATED and "n2 never declared n3 dead" in v.detail
    assert v.data["bound_s"] == pytest.approx(3.28)
    v = completeness(data([*base, st(2.5, "n2", "n3", "dead")]))
    assert v.verdict == HOLDS and v.data["slowest_s"] == pytest.approx(1.5)
    v = completeness(data([*base, st(5.0, "n2", "n3", "dead")]))
    assert v.verdict == VIOLATED and "beyond the bound" in v.detail
    assert completeness(data([*base, st(5.0, "n2", "n3", "dead")], bound=4.5)).verdict == HOLDS


def test_a_crashed_member_must_stay_dead_until_it_restarts() -> None:
    trace = [*born(), fault(1.0, "crash", "n3"), st(2.0, "n1", "n3", "dead"), st(2.1, "n2", "n3", "dead"),
             fault(8.0, "restart", "n3"), st(8.0, "n3", "n3", "alive", 1)]
    v = completeness(data([*trace, st(3.0, "n2", "n3", "alive", 0)]))
    assert v.verdict == VIOLATED and "alive again at 3.000s" in v.detail
    # Alive again after the restart is a rejoin, not a resurrection.
    assert completeness(data([*trace, st(8.5, "n2", "n3", "alive", 1)])).verdict == HOLDS


def test_members_that_were_down_or_paused_meanwhile_owe_nothing_and_short_crashes_are_not_judged() -> None:
    trace = [*born(), fault(1.0, "crash", "n3"), fault(1.5, "pause", "n2"), fault(2.0, "resume", "n2"),
             st(2.0, "n1", "n3", "dead"), st(9.0, "n1", "n2", "alive")]
    assert completeness(data(trace)).verdict == HOLDS
    short = [*born(), fault(1.0, "crash", "n3"), fault(2.0, "restart", "n3"), st(9.0, "n1", "n2", "alive")]
    v = completeness(data(short))
    assert v.verdict == UNKNOWN and "no crash lasted" in v.detail


# -- figures -------------------------------------------------------------------------------------

def test_analyse_gives_detection_times_and_counts_false_positives_once_per_life() -> None:
    trace = sorted([*born(), fault(1.0, "crash", "n3"), st(2.0, "n1", "n3", "dead"),
                    st(2.6, "n2", "n3", "dead"),
                    # n2 falsely dead at incarnation 0, as two members saw it: one episode
                    st(4.0, "n1", "n2", "dead"), st(4.1, "n3", "n2", "dead"),
                    fault(4.2, "pause", "n1"), fault(4.4, "resume", "n1"), st(4.5, "n2", "n1", "dead")],
                   key=lambda e: e["ts"])
    m = analyse(NAMES, {"preset": "fast"}, trace)
    assert m["detection_s"] == {"p50": 1.6, "max": 1.6, "crashes": 1, "undetected": 0}
    assert (m["false_positives"], m["false_positives_paused"], m["false_positives_slow"]) == (1, 1, 0)


# -- the workload ----------------------------------------------------------------------------------

def test_the_membership_workload_runs_no_clients_and_reads_every_view() -> None:
    s = load_scenario_text("""
name: m
protocol: swim
nodes: 4
config: {preset: fast}
workload: {kind: membership, duration: 2s}
faults: [{at: 0.5s, crash: n4}]
checks: [accuracy]
""")
    r = run_scenario(s, "sim", seed=1, quiet=True, write=False)
    assert [e["f"] for e in r.history if e["type"] == "invoke"] == ["members"] * 4
    views = r.final["views"]
    # The run ends by restarting n4 (faults are reverted before the final reads): it rejoined.
    assert views["n1"]["n4"] == ["alive", 1] and views["n4"]["n1"] == ["alive", 0]
    assert r.metrics["detection_s"]["crashes"] == 1 and r.metrics["detection_s"]["undetected"] == 0


def test_the_membership_workload_refuses_client_keys() -> None:
    with pytest.raises(ConfigError, match="m.yaml:4: workload.keys: unknown key"):
        load_scenario_text("name: m\nprotocol: swim\nnodes: 3\n"
                           "workload: {kind: membership, duration: 2s, keys: 3}\n", path="m.yaml")
    s = load_scenario_text("name: m\nprotocol: swim\nnodes: 3\n"
                           "workload: {kind: membership, duration: 2s}\n", path="m.yaml")
    with pytest.raises(ConfigError, match="workload.keys"):
        MembershipWorkload(dataclasses.replace(s.workload, params={"keys": 3}), s, random.Random(1))
