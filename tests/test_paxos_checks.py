"""The Paxos checkers (lab/checks/paxos.py) on hand-made traces and histories: each reports the
violation it exists for, and holds on the run that does not have it."""

from __future__ import annotations

from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.paxos import agreement, decided, validity
from lab.checks.registry import all_checks
from nodes.protocols import get, kv


def ev(node: str, ev_: str, **data: Any) -> dict[str, Any]:
    return {"ts": 0.0, "node": node, "lc": 1, "ev": ev_, "data": data}


def run(trace: list[dict[str, Any]], history: list[dict[str, Any]] | None = None,
        nodes: Any = 3) -> RunData:
    return RunData(scenario={"nodes": nodes}, trace=trace, history=history or [])


INPUTS = [ev("n1", "state", role="proposer", phase="input", value="a"),
          ev("n2", "state", role="proposer", phase="input", value="b")]


def test_agreement_two_values_learned_in_one_slot_is_a_violation() -> None:
    good = INPUTS + [ev("n1", "commit", slot=0, value="a", ballot=[1, "n1"]),
                     ev("n2", "commit", slot=0, value="a", via="n1")]
    assert agreement(run(good)).verdict == HOLDS
    bad = good + [ev("n3", "commit", slot=0, value="b", ballot=[2, "n2"])]
    v = agreement(run(bad))
    assert v.verdict == VIOLATED and "'a'" in v.detail and "'b'" in v.detail and "n3" in v.detail


def test_agreement_a_client_told_another_value_is_a_violation() -> None:
    trace = INPUTS + [ev("n1", "commit", slot=0, value="a", ballot=[1, "n1"])]
    told_a = [{"process": 0, "type": "ok", "f": "propose", "value": "a"}]
    assert agreement(run(trace, told_a)).verdict == HOLDS
    told_b = told_a + [{"process": 1, "type": "ok", "f": "read", "value": "b"}]
    v = agreement(run(trace, told_b))
    assert v.verdict == VIOLATED and "client 1" in v.detail


def test_agreement_per_slot_for_multipaxos_hashes() -> None:
    trace = [ev("n1", "commit", slot=1, hash="aa"), ev("n2", "commit", slot=1, hash="aa"),
             ev("n1", "commit", slot=2, hash="bb"), ev("n3", "commit", slot=2, hash="cc")]
    v = agreement(run(trace))
    assert v.verdict == VIOLATED and v.data["violations"][0]["slot"] == 2
    assert agreement(run(trace[:3])).verdict == HOLDS


def test_agreement_with_nothing_learned_holds_and_without_paxos_events_is_unknown() -> None:
    assert agreement(run(INPUTS)).verdict == HOLDS
    assert agreement(run([])).verdict == UNKNOWN


def test_validity_a_value_nobody_proposed_is_a_violation() -> None:
    client = {"ts": 0.0, "node": "n1", "lc": 1, "ev": "request",
              "data": {"client": "c1", "op": {"f": "propose", "value": 7}}}
    ok = INPUTS + [client, ev("n1", "commit", slot=0, value=7, ballot=[3, "n1"])]
    assert validity(run(ok)).verdict == HOLDS
    bad = INPUTS + [ev("n1", "commit", slot=0, value="zz", ballot=[3, "n1"])]
    v = validity(run(bad))
    assert v.verdict == VIOLATED and "'zz'" in v.detail


def test_validity_multipaxos_commands_must_come_from_requests_or_be_no_ops() -> None:
    op = {"f": "write", "key": "k", "value": 1, "client": "c1", "seq": 1}
    req = {"ts": 0.0, "node": "n1", "lc": 1, "ev": "request", "data": {"client": "h", "op": op}}
    good = [req, ev("n1", "commit", slot=1, hash=kv.command_hash(kv.encode_command(op))),
            ev("n1", "commit", slot=2, hash=kv.command_hash(None))]
    assert validity(run(good)).verdict == HOLDS
    forged = dict(op, value=2)
    bad = good + [ev("n2", "commit", slot=3, hash=kv.command_hash(kv.encode_command(forged)))]
    v = validity(run(bad))
    assert v.verdict == VIOLATED and v.data["violations"][0]["slot"] == 3


def test_decided_every_learner_must_learn() -> None:
    nodes = [{"name": "n1", "role": ["proposer", "learner"]}, {"name": "n2", "role": "acceptor"},
             {"name": "n3", "role": "learner"}]
    trying = INPUTS + [ev("n1", "state", role="proposer", phase="preparing", ballot=[k, "n1"])
                       for k in range(1, 40)]
    v = decided(run(trying, nodes=nodes))
    assert v.verdict == VIOLATED and "no learner" in v.detail and v.data["ballots_tried"] == 39
    half = trying + [ev("n1", "commit", slot=0, value="a", ballot=[39, "n1"])]
    v = decided(run(half, nodes=nodes))
    assert v.verdict == VIOLATED and v.data["undecided"] == ["n3"]
    full = half + [ev("n3", "commit", slot=0, value="a", via="n1")]
    assert decided(run(full, nodes=nodes)).verdict == HOLDS     # n2 is no learner: not asked


def test_the_checks_are_registered_and_each_core_names_them() -> None:
    known = all_checks()
    assert {"agreement", "validity", "decided"} <= set(known)
    assert get("paxos").default_checks == ("agreement", "validity", "decided")
    assert get("multipaxos").applicable_checks() == ("agreement", "validity", "linearizable")
