"""The gossip checkers and the broadcast workload's figures: each checker flags a hand-made bad
run and passes a good one, and each named bug of the core is caught by the check the docs
name, on seeds where the correct core keeps every property."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.gossip import CHECKS, convergence, eventual_delivery, no_resurrection
from lab.checks.registry import all_checks
from lab.runner import run_scenario
from lab.spread import metrics
from lab.topology import load_scenario

pytestmark = pytest.mark.sim


class H:
    """A hand-made history: ops one after the other, one process each."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.p = 0

    def op(self, f: str, value: Any, t0: float, t1: float, outcome: str = "ok",
           result: Any = None, key: Any = None) -> H:
        self.p += 1
        self.events.append({"process": self.p, "type": "invoke", "f": f, "key": key, "value": value, "ts": t0})
        self.events.append({"process": self.p, "type": outcome, "f": f, "key": key,
                            "value": value if result is None else result, "ts": t1})
        return self


def apply(node: str, f: str, value: Any, ts: float, via: str = "rumor") -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 1, "ev": "apply", "data": {"f": f, "value": value, "via": via}}


def run(history: H | None = None, final: dict[str, Any] | None = None, *trace: dict[str, Any]) -> RunData:
    return RunData(scenario={}, trace=list(trace), history=(history or H()).events, final=final or {})


def test_the_registry_lists_the_gossip_checks() -> None:
    assert set(CHECKS) == {"eventual_delivery", "convergence", "no_resurrection"}
    assert set(CHECKS) <= set(all_checks())


def test_eventual_delivery_counts_acknowledged_values_missing_on_live_nodes() -> None:
    h = H().op("broadcast", 1, 0.0, 0.1).op("broadcast", 2, 0.2, 0.3).op("broadcast", 3, 0.4, 0.5, "info")
    good = {"reads": {"n1": [1, 2], "n2": [2, 1]}}
    assert eventual_delivery(run(h, good)).verdict == HOLDS
    bad = {"reads": {"n1": [1, 2], "n2": [1], "n3": []}, "unanswered": ["n4"]}
    v = eventual_delivery(run(h, bad))
    assert v.verdict == VIOLATED
    assert v.data["lost"] == 2 and v.data["examples"] == {"1": ["n3"], "2": ["n2", "n3"]}
    assert "n4 did not answer" in v.detail
    assert eventual_delivery(run(h, {})).verdict == UNKNOWN


def test_eventual_delivery_leaves_out_values_someone_tried_to_delete() -> None:
    h = H().op("broadcast", 1, 0.0, 0.1).op("delete", 1, 0.2, 0.3, "info")
    assert eventual_delivery(run(h, {"reads": {"n1": []}})).verdict == HOLDS


def test_convergence_compares_whole_states_and_says_what_differs() -> None:
    s = {"values": [1, 2], "dead": [], "schema": [1, "a", "n1"], "endpoints": {"n1": [1, 3, [1, "a", "n1"]]}}
    same = {"states": {"n1": s, "n2": dict(s), "n3": dict(s)}}
    assert convergence(run(None, same)).verdict == HOLDS
    other = {**s, "values": [1], "endpoints": {"n1": [1, 2, [1, "a", "n1"]]}}
    v = convergence(run(None, {"states": {"n1": s, "n2": dict(s), "n3": other}}))
    assert v.verdict == VIOLATED
    assert "n1 (2 nodes) vs n3 (1 node)" in v.detail
    assert "values: 1 only on the first, 0 only on the second" in v.detail
    assert "endpoint views of n1" in v.detail
    assert convergence(run(None, {"reads": {"n1": [1], "n2": [2]}})).verdict == VIOLATED
    assert convergence(run(None, {})).verdict == UNKNOWN


def test_no_resurrection_flags_a_value_back_after_its_delete() -> None:
    trace = [apply("n1", "add", 5, 0.1), apply("n1", "del", 5, 0.2), apply("n1", "add", 5, 0.3)]
    v = no_resurrection(run(None, {}, *trace))
    assert v.verdict == VIOLATED
    assert v.data["came_back"] == [{"node": "n1", "value": 5, "deleted": 0.2, "back": 0.3}]
    # Added then deleted (a value and its certificate arriving in that order) is fine.
    assert no_resurrection(run(None, {}, *trace[:2])).verdict == HOLDS


def test_no_resurrection_flags_an_acknowledged_delete_in_the_final_reads() -> None:
    h = H().op("broadcast", 5, 0.0, 0.1).op("delete", 5, 0.2, 0.3)
    v = no_resurrection(run(h, {"reads": {"n1": [], "n2": [5]}}))
    assert v.verdict == VIOLATED and v.data["in_final_reads"] == {"5": ["n2"]}
    assert no_resurrection(run(h, {"reads": {"n1": [], "n2": []}})).verdict == HOLDS
    assert no_resurrection(run(H().op("broadcast", 5, 0.0, 0.1), {"reads": {"n1": [5]}})).detail \
        == "nothing was deleted"


def test_broadcast_metrics_from_a_hand_made_run() -> None:
    h = (H().op("broadcast", 1, 0.0, 0.2).op("broadcast", 2, 0.1, 0.3)
         .op("read", None, 0.5, 0.6, result=[1]).op("broadcast", 3, 0.6, 0.7)
         .op("read", None, 2.0, 2.1, result=[1, 2]))
    trace = [apply("n1", "add", 1, 0.1, "client"), apply("n2", "add", 1, 0.3),
             apply("n2", "add", 2, 0.2, "client"), apply("n1", "add", 2, 0.9),
             apply("n1", "add", 3, 0.65, "client"),
             {"ts": 0.3, "node": "n1", "lc": 2, "ev": "send", "peer": "n2", "type": "rumor"},
             {"ts": 0.3, "node": "n1", "lc": 2, "ev": "send", "peer": "n2", "type": "rumor"},
             {"ts": 0.3, "node": "n1", "lc": 2, "ev": "send", "peer": "n2", "type": "rumor"}]
    final = {"reads": {"n1": [1, 2, 3], "n2": [1, 2]}}
    m = metrics(trace, h.events, final, ["n1", "n2"], round_s=0.1)
    assert m["msgs_per_op"] == 1.0                     # 3 messages, 3 broadcasts
    assert m["lost"] == 1                              # 3 is not on n2
    assert m["stale"] == 2                             # the read at 0.5 lacked 2; the one at 2.0 lacked 3
    assert m["stable_latency_ms"] == {"p50": 200.0, "p99": 700.0, "max": 700.0}
    assert m["dissemination"] == {"rounds": {"mean": 4.5, "p99": 7.0},
                                  "seconds": {"mean": 0.45, "p99": 0.7}}


# -- the named bugs on the simulator ---------------------------------------------------------

def scenario(name: str, bugs: tuple[str, ...], duration: float = 8.0) -> Any:
    s = load_scenario(f"topologies/{name}.yaml")
    return dataclasses.replace(s, config={**s.config, "bugs": list(bugs)}, expect={},
                               workload=dataclasses.replace(s.workload, duration=duration))


SEEDS = (1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_no_anti_entropy_is_caught_by_eventual_delivery(seed: int) -> None:
    # The partition scenario without its crash: the bug alone must lose values.
    base = scenario("gossip-partition", ())
    base = dataclasses.replace(base, faults=[f for f in base.faults if f.action == "partition"])
    good = run_scenario(base, "sim", seed=seed, quiet=True, write=False)
    assert {v.check: v.verdict for v in good.verdicts} == dict.fromkeys(CHECKS, HOLDS)
    bad = run_scenario(dataclasses.replace(base, config={**base.config, "bugs": ["no_anti_entropy"]}),
                       "sim", seed=seed, quiet=True, write=False)
    verdicts = {v.check: v.verdict for v in bad.verdicts}
    assert verdicts["eventual_delivery"] == VIOLATED
    assert verdicts["convergence"] == VIOLATED
    assert bad.metrics["lost"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_no_death_certificates_is_caught_by_no_resurrection(seed: int) -> None:
    good = run_scenario(scenario("gossip-resurrection", ()), "sim", seed=seed, quiet=True, write=False)
    assert {v.check: v.verdict for v in good.verdicts} == dict.fromkeys(CHECKS, HOLDS)
    bad = run_scenario(scenario("gossip-resurrection", ("no_death_certificates",)), "sim",
                       seed=seed, quiet=True, write=False)
    verdicts = {v.check: v.verdict for v in bad.verdicts}
    assert verdicts["no_resurrection"] == VIOLATED
    assert verdicts["eventual_delivery"] == HOLDS
