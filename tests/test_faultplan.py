"""The fault plan against a fake backend that records every call: the exact calls are the contract."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lab.errors import ConfigError
from lab.faultplan import FaultPlan
from lab.scenario import FaultStep, LinkParams, LinkRule, NetworkSpec, NodeSpec, Scenario
from lab.targets import TargetResolver, partition_cuts


class FakeBackend:
    """Records calls; time moves only when a test says so; status() is what the test sets."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.t = 0.0
        self.pending: list[tuple[float, Any]] = []
        self.statuses: dict[str, dict[str, Any] | None] = {}

    def now(self) -> float:
        return self.t

    def call_at(self, t: float, fn: Any) -> None:
        self.pending.append((t, fn))

    def run_until(self, t: float) -> None:
        while True:
            due = sorted((p for p in self.pending if p[0] <= t), key=lambda p: p[0])
            if not due:
                break
            when, fn = due[0]
            self.pending.remove(due[0])
            self.t = when
            fn()
        self.t = t

    def status(self, node: str) -> dict[str, Any] | None:
        self.calls.append(("status", node))
        return self.statuses.get(node)

    def set_cuts(self, cuts: frozenset) -> str:
        self.calls.append(("set_cuts", frozenset(cuts)))
        return "iptables"

    def set_link(self, src: str, dst: str, params: LinkParams) -> str:
        self.calls.append(("set_link", src, dst, params))
        return "netem"

    def crash(self, node: str) -> None:
        self.calls.append(("crash", node))

    def restart(self, node: str) -> None:
        self.calls.append(("restart", node))

    def pause(self, node: str) -> None:
        self.calls.append(("pause", node))

    def resume(self, node: str) -> str:
        self.calls.append(("resume", node))
        return "signal"

    def effects(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] != "status"]


BASE = LinkParams(delay=0.002)
SLOW = LinkParams(delay=0.08)


def scenario(n: int = 5, faults: list[FaultStep] | None = None, roles: dict[str, str] | None = None,
             ) -> Scenario:
    roles = roles or {}
    nodes = [NodeSpec(f"n{i}", role=roles.get(f"n{i}")) for i in range(1, n + 1)]
    net = NetworkSpec(default=BASE, links=(LinkRule("n1", "n2", SLOW),))
    return Scenario(name="t", protocol="register", nodes=nodes, network=net, faults=faults or [],
                    source="t.yaml")


def make(faults: list[FaultStep], n: int = 5, **kw: Any) -> tuple[FaultPlan, FakeBackend]:
    be = FakeBackend()
    return FaultPlan(scenario(n, faults, **kw), be, random.Random(7)), be  # type: ignore[arg-type]


def cut(*pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(tuple(p.split(">")) for p in pairs)  # type: ignore[misc]


# -- partition arithmetic -------------------------------------------------------------------

def test_two_groups_cut_both_ways() -> None:
    assert partition_cuts([["n1"], ["n2", "n3"]]) == cut("n1>n2", "n1>n3", "n2>n1", "n3>n1")


def test_intersecting_groups_leave_the_bridge_connected() -> None:
    cuts = partition_cuts([["n1", "n2", "n3"], ["n3", "n4", "n5"]])
    assert ("n1", "n4") in cuts and ("n5", "n2") in cuts
    assert not any("n3" in c for c in cuts)
    assert len(cuts) == 8


def test_oneway_cuts_only_from_the_first_group() -> None:
    assert partition_cuts([["n1"], ["n2", "n3"]], oneway=True) == cut("n1>n2", "n1>n3")


def test_nodes_in_no_group_are_untouched() -> None:
    assert partition_cuts([["n1"], ["n2"]]) == cut("n1>n2", "n2>n1")


# -- applying and reverting ---------------------------------------------------------------------

def test_partitions_accumulate_and_heal_clears_them() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "partition", [["n1"], ["n2"]]))
    plan.apply(FaultStep(2.0, "partition", [["n3"], ["n4"]], oneway=True))
    plan.apply(FaultStep(3.0, "heal", "all"))
    assert be.effects() == [
        ("set_cuts", cut("n1>n2", "n2>n1")),
        ("set_cuts", cut("n1>n2", "n2>n1", "n3>n4")),
        ("set_cuts", frozenset()),
    ]
    assert [(e["data"]["action"], e["data"]["phase"], e["data"]["mechanism"]) for e in plan.events] == [
        ("partition", "apply", "iptables"), ("partition", "apply", "iptables"),
        ("heal", "apply", "iptables")]
    assert plan.events[1]["data"]["oneway"] is True
    assert all(e["node"] == "lab" and e["lc"] == 0 and e["ev"] == "fault" for e in plan.events)


def test_partition_for_reverts_only_its_own_cuts() -> None:
    plan, be = make([FaultStep(1.0, "partition", [["n1"], ["n2"]], duration=2.0),
                     FaultStep(2.0, "partition", [["n3"], ["n4"]], oneway=True)])
    plan.schedule(0.0)
    be.run_until(10.0)
    assert be.effects()[-1] == ("set_cuts", cut("n3>n4"))
    assert plan.events[-1]["ts"] == 3.0
    assert plan.events[-1]["data"]["phase"] == "revert"


def test_single_group_is_set_against_the_rest() -> None:
    plan, be = make([], n=3)
    plan.apply(FaultStep(1.0, "partition", "n2"))
    assert be.effects() == [("set_cuts", cut("n2>n1", "n2>n3", "n1>n2", "n3>n2"))]
    assert plan.events[0]["data"]["target"] == [["n2"], ["n1", "n3"]]


def test_crash_leader_resolves_the_highest_term_leader_at_apply_time() -> None:
    plan, be = make([FaultStep(1.0, "crash", "leader", duration=1.5)])
    be.statuses = {"n2": {"role": "leader", "term": 3}, "n4": {"role": "leader", "term": 5},
                   "n1": {"role": "follower", "term": 5}}
    plan.schedule(0.0)
    be.run_until(0.5)
    assert be.calls == []           # nothing asked before the fault is due
    be.run_until(5.0)
    assert be.effects() == [("crash", "n4"), ("restart", "n4")]
    assert [(e["ts"], e["data"]["action"], e["data"]["target"], e["data"]["phase"], e["data"]["mechanism"])
            for e in plan.events] == [(1.0, "crash", "n4", "apply", "fake"),
                                      (2.5, "restart", "n4", "revert", "fake")]
    assert plan.crashed == set()


def test_no_leader_means_no_crash_and_a_traced_skip() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "crash", "leader"))
    assert be.effects() == []
    assert plan.events[0]["data"]["target"] == [] and "skipped" in plan.events[0]["data"]


def test_restart_crashed_restarts_what_the_plan_crashed() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "crash", ["n1", "n3"]))
    plan.apply(FaultStep(1.0, "crash", "n1"))       # already down: not crashed twice
    plan.apply(FaultStep(2.0, "restart", "crashed"))
    assert be.effects() == [("crash", "n1"), ("crash", "n3"), ("restart", "n1"), ("restart", "n3")]
    assert plan.events[-1]["data"]["phase"] == "apply"


def test_crashed_nodes_are_not_asked_for_status() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "crash", "n1"))
    be.calls.clear()
    plan.apply(FaultStep(2.0, "crash", "leader"))
    assert ("status", "n1") not in be.calls
    assert [c[1] for c in be.calls] == ["n2", "n3", "n4", "n5"]


def test_pause_then_revert_all_resumes_with_the_backends_mechanism() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "pause", "n2"))
    plan.revert_all()
    assert be.effects() == [("pause", "n2"), ("resume", "n2")]
    assert plan.events[-1]["data"] == {"action": "resume", "target": "n2", "phase": "revert",
                                       "mechanism": "signal"}


def test_link_fault_merges_onto_the_scenarios_params_and_reverts_to_them() -> None:
    plan, be = make([FaultStep(1.0, "loss", {"from": "n1", "to": "n2", "loss": 0.25}, duration=1.0)])
    plan.schedule(0.0)
    be.run_until(5.0)
    assert be.effects() == [
        ("set_link", "n1", "n2", SLOW.merged(loss=0.25)),
        ("set_link", "n2", "n1", BASE.merged(loss=0.25)),
        ("set_link", "n1", "n2", SLOW),
        ("set_link", "n2", "n1", BASE),
    ]
    assert [e["data"]["mechanism"] for e in plan.events] == ["netem"] * 4


def test_oneway_link_fault_and_units_in_strings() -> None:
    plan, be = make([], n=3)
    plan.apply(FaultStep(1.0, "delay", {"from": "n3", "to": ["n1", "n2"], "delay": "100ms"},
                         oneway=True))
    assert be.effects() == [("set_link", "n3", "n1", BASE.merged(delay=0.1)),
                            ("set_link", "n3", "n2", BASE.merged(delay=0.1))]


def test_link_faults_compose_and_heal_resets_them() -> None:
    plan, be = make([], n=2)
    plan.apply(FaultStep(1.0, "delay", {"nodes": "n2", "delay": 0.05}))
    plan.apply(FaultStep(2.0, "duplicate", {"from": "n1", "to": "n2", "duplicate": 0.1}, oneway=True))
    be.calls.clear()
    plan.apply(FaultStep(3.0, "heal", "links"))
    # n1->n2 has a scenario override (SLOW): heal puts exactly that back.
    assert be.effects() == [("set_link", "n1", "n2", SLOW), ("set_link", "n2", "n1", BASE)]
    assert plan.links == {}


def test_minority_holds_the_leader_and_majority_is_the_rest() -> None:
    plan, be = make([])
    be.statuses = {"n5": {"role": "leader", "term": 1}}
    plan.apply(FaultStep(1.0, "partition", ["minority", "majority"]))
    groups = plan.events[0]["data"]["target"]
    assert len(groups[0]) == 2 and "n5" in groups[0]
    assert sorted(groups[0] + groups[1]) == ["n1", "n2", "n3", "n4", "n5"]


def test_coordinator_and_random_and_all() -> None:
    be = FakeBackend()
    r = TargetResolver(scenario(3, roles={"n2": "coordinator"}), be, random.Random(1))  # type: ignore[arg-type]
    assert r.resolve("coordinator") == ["n2"]
    assert r.resolve("all") == ["n1", "n2", "n3"]
    assert r.resolve("random")[0] in ("n1", "n2", "n3")
    picks = {r.resolve("random")[0] for _ in range(50)}
    assert picks == {"n1", "n2", "n3"}


def test_random_is_replayable_from_the_plans_rng() -> None:
    def picks(seed: int) -> list[str]:
        r = TargetResolver(scenario(5), FakeBackend(), random.Random(seed))  # type: ignore[arg-type]
        return [r.resolve("random")[0] for _ in range(10)]
    assert picks(3) == picks(3)


def test_unknown_target_is_a_config_error_with_the_line() -> None:
    plan, _ = make([])
    with pytest.raises(ConfigError, match="t.yaml:9: .*unknown fault target 'n9'"):
        plan.apply(FaultStep(1.0, "crash", "n9", line=9))


def test_steps_after_the_workload_are_not_scheduled_and_revert_all_closes_the_plan() -> None:
    plan, be = make([FaultStep(1.0, "crash", "n1", duration=5.0), FaultStep(9.0, "crash", "n2")])
    plan.schedule(0.0, until=3.0)
    be.run_until(3.0)
    plan.revert_all()
    be.run_until(20.0)              # the `for:` revert at 6s finds the plan closed
    assert be.effects() == [("crash", "n1"), ("restart", "n1")]


def test_revert_all_without_closing_keeps_taking_faults() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "crash", "n1"))
    assert plan.revert_all(close=False) is True
    assert plan.revert_all(close=False) is False    # nothing left in force
    plan.apply(FaultStep(2.0, "crash", "n2"))
    assert be.effects() == [("crash", "n1"), ("restart", "n1"), ("crash", "n2")]


# -- rest: the nodes the step's other targets leave out -------------------------------------------

def test_rest_is_every_node_outside_the_other_groups() -> None:
    plan, be = make([])
    be.statuses = {"n4": {"role": "leader", "term": 2}}
    plan.apply(FaultStep(1.0, "partition", ["leader", "rest"]))
    plan.apply(FaultStep(1.0, "partition", ["rest", ["n1", "n2"]]))
    assert [e["data"]["target"] for e in plan.events] == [
        [["n4"], ["n1", "n2", "n3", "n5"]], [["n3", "n4", "n5"], ["n1", "n2"]]]


def test_rest_as_a_link_end_is_every_other_node() -> None:
    plan, be = make([])
    plan.apply(FaultStep(1.0, "loss", {"from": "rest", "to": "n3", "loss": 0.1}, oneway=True))
    assert [c[1:3] for c in be.effects()] == [("n1", "n3"), ("n2", "n3"), ("n4", "n3"), ("n5", "n3")]


def test_rest_where_it_means_nothing_is_refused_at_load_and_at_apply() -> None:
    from lab.topology import load_scenario_text
    head = "name: t\nprotocol: register\nnodes: 3\nfaults:\n"
    ok = load_scenario_text(head + "  - {at: 1s, partition: [n1, rest]}\n"
                                   "  - {at: 2s, delay: {from: n2, to: rest, delay: 5ms}}\n")
    assert [f.args for f in ok.faults] == [["n1", "rest"], {"from": "n2", "to": "rest", "delay": 0.005}]
    for step, what in (("{at: 1s, crash: rest}", "faults\\[0\\].crash: rest means"),
                       ("{at: 1s, partition: [rest, rest]}", "at most one rest group"),
                       ("{at: 1s, loss: {from: rest, to: rest, value: 5%}}", "cannot both be rest")):
        with pytest.raises(ConfigError, match=what):
            load_scenario_text(head + f"  - {step}\n", path="f.yaml")
    plan, _ = make([])
    with pytest.raises(ConfigError, match="rest means"):
        plan.apply(FaultStep(1.0, "pause", "rest"))
