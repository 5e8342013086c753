"""The atomic-commitment checkers on hand-made traces and final reads, and the transfer
workload that produces those reads."""

from __future__ import annotations

import dataclasses
from random import Random
from typing import Any

import pytest

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.commit import (
    CHECKS,
    atomicity,
    conservation,
    no_commit_after_abort,
    nonblocking,
)
from lab.checks.registry import all_checks
from lab.errors import ConfigError
from lab.scenario import NodeSpec, Scenario, WorkloadSpec
from lab.workloads.transfer import TransferWorkload


def st(ts: float, node: str, txn: str, state: str, role: str = "participant") -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 0, "ev": "state",
            "data": {"txn": txn, "role": role, "state": state}}


def init(node: str, balances: dict[str, int]) -> dict[str, Any]:
    return {"ts": 0.0, "node": node, "lc": 0, "ev": "apply", "data": {"init": True, "balances": balances}}


def applied(ts: float, node: str, txn: str, deltas: dict[str, int]) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 0, "ev": "apply", "data": {"txn": txn, "deltas": deltas}}


def with_params(data: RunData, **params: Any) -> RunData:
    return dataclasses.replace(data, params=params)


def log(ts: float, node: str, msg: str) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 0, "ev": "log", "data": {"msg": msg}}


def run(trace: list[dict[str, Any]], final: dict[str, Any] | None = None, protocol: str = "twopc") -> RunData:
    return RunData(scenario={"protocol": protocol}, trace=sorted(trace, key=lambda e: e["ts"]),
                   history=[], final=final or {})


GOOD = [
    st(0.0, "coord", "t1", "wait", "coordinator"),
    st(0.01, "p1", "t1", "prepared"), st(0.01, "p2", "t1", "prepared"),
    st(0.02, "coord", "t1", "committed", "coordinator"),
    st(0.03, "p1", "t1", "committed"), st(0.03, "p2", "t1", "committed"),
    st(0.1, "coord", "t2", "wait", "coordinator"),
    st(0.11, "p1", "t2", "aborted"), st(0.11, "p2", "t2", "prepared"),
    st(0.12, "coord", "t2", "aborted", "coordinator"), st(0.13, "p2", "t2", "aborted"),
]
SPLIT = [*GOOD[:4], st(0.03, "p1", "t1", "committed"), st(0.5, "p2", "t1", "aborted")]


def test_registered_under_their_names() -> None:
    assert set(CHECKS) == {"atomicity", "conservation", "no_commit_after_abort", "nonblocking"}
    assert set(CHECKS) <= set(all_checks())


def test_atomicity_holds_when_everyone_agrees() -> None:
    v = atomicity(run(GOOD))
    assert v.verdict == HOLDS and v.data["transactions"] == 2


def test_atomicity_catches_a_split_decision() -> None:
    v = atomicity(run(SPLIT, protocol="threepc"))
    assert v.verdict == VIOLATED
    assert v.detail == "3PC: transaction t1: committed at coord, p1; aborted at p2"
    assert v.data["split"] == {"t1": {"coord": "committed", "p1": "committed", "p2": "aborted"}}


def test_atomicity_counts_an_undecided_participant_as_blocked_not_split() -> None:
    v = atomicity(run([*GOOD[:4], st(0.03, "p1", "t1", "committed")]))
    assert v.verdict == HOLDS and v.data["undecided_at_end"] == {"p2": ["t1"]}
    assert "1 still undecided" in v.detail


def test_no_commit_after_abort() -> None:
    assert no_commit_after_abort(run(GOOD)).verdict == HOLDS
    v = no_commit_after_abort(run(SPLIT))
    assert v.verdict == VIOLATED and "coord committed t1" in v.detail and "before p2 aborted" in v.detail
    # The coordinator's own abort counts: participants committed what it later aborted.
    late = [*GOOD[:6], st(4.0, "coord", "t1", "aborted", "coordinator")]
    v = no_commit_after_abort(run(late))
    assert v.verdict == VIOLATED and v.data["examples"][0]["aborted_by"] == "coord"


# -- what the coordinator and the clients were told counts too --------------------------------

def request(ts: float, node: str, handle: str, client: str, seq: int) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 0, "ev": "request",
            "data": {"client": handle, "op": {"f": "transfer", "from": 0, "to": 1, "amount": 5,
                                              "client": client, "seq": seq}}}


def reply(ts: float, node: str, handle: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 0, "ev": "reply", "data": {"client": handle, "result": result}}


def transfer(process: int | str, t0: float, t1: float, outcome: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"process": process, "type": "invoke", "f": "transfer", "key": None, "value": [0, 1, 5], "ts": t0},
            {"process": process, "type": outcome, "f": "transfer", "key": None, "value": [0, 1, 5],
             "ts": t1, **extra}]


# The coordinator decided commit (and said ok); every participant aborted.
COORD_COMMIT_ALL_ABORT = [
    st(0.0, "coord", "c0.5", "wait", "coordinator"),
    st(0.01, "p1", "c0.5", "ready"), st(0.01, "p2", "c0.5", "ready"),
    st(0.02, "coord", "c0.5", "precommit", "coordinator"),
    st(0.4, "coord", "c0.5", "committed", "coordinator"),
    st(0.6, "p1", "c0.5", "aborted"), st(0.6, "p2", "c0.5", "aborted"),
]


def test_a_coordinator_commit_with_every_participant_aborted_is_split() -> None:
    for check in (atomicity, no_commit_after_abort):
        v = check(run(COORD_COMMIT_ALL_ABORT, protocol="threepc"))
        assert v.verdict == VIOLATED and "c0.5" in v.detail, v.detail
    v = atomicity(run(COORD_COMMIT_ALL_ABORT, protocol="threepc"))
    assert v.detail == "3PC: transaction c0.5: committed at coord; aborted at p1, p2"
    v = no_commit_after_abort(run(COORD_COMMIT_ALL_ABORT))
    assert v.data["examples"][0] | {"after": False} == {
        "txn": "c0.5", "aborted_by": "p1", "aborted_at": 0.6, "committed_by": "coord",
        "committed_at": 0.4, "after": False}


def test_a_single_participant_transaction_is_checked() -> None:
    one = [st(0.0, "coord", "t", "wait", "coordinator"), st(0.01, "p1", "t", "ready"),
           st(0.02, "coord", "t", "committed", "coordinator")]
    assert atomicity(run([*one, st(0.03, "p1", "t", "committed")])).verdict == HOLDS
    v = atomicity(run([*one, st(0.3, "p1", "t", "aborted")]))
    assert v.verdict == VIOLATED and v.detail == "2PC: transaction t: committed at coord; aborted at p1"


def test_an_ok_in_the_history_with_a_participant_abort_is_split() -> None:
    # The coordinator's own lines are missing (as if lost); its client was told ok, and the
    # history ties that ok to c0.5 through the requests client c0 sent while it waited.
    trace = [request(0.001, "p2", "h1", "c0", 5), request(0.003, "coord", "h2", "c0", 5),
             st(0.01, "p1", "c0.5", "ready"), st(0.01, "p2", "c0.5", "ready"),
             st(0.02, "p1", "c0.5", "committed"), st(0.6, "p2", "c0.5", "aborted"),
             request(0.7, "coord", "h3", "c0", 6)]
    hist = [*transfer(0, 0.0, 0.05, "ok"), *transfer(0, 0.69, 0.8, "ok")]
    data = RunData(scenario={"protocol": "threepc"}, trace=sorted(trace, key=lambda e: e["ts"]), history=hist)
    v = atomicity(data)
    assert v.verdict == VIOLATED
    assert v.detail == "3PC: transaction c0.5: committed at p1; ok to its client; aborted at p2"
    assert list(v.data["split"]) == ["c0.5"]              # c0.6's ok is tied to c0.6 alone
    # Only the client and one participant: still a split.
    alone = [e for e in trace if e.get("node") != "p1"]
    v = atomicity(dataclasses.replace(data, trace=alone))
    assert v.verdict == VIOLATED and v.detail == "3PC: transaction c0.5: ok to its client; aborted at p2"
    v = no_commit_after_abort(dataclasses.replace(data, trace=alone))
    assert v.verdict == VIOLATED and v.detail.startswith("3PC: its client was told ok for c0.5 at 0.050 s")
    # Without the ok it is blocked bookkeeping, not a split.
    quiet = dataclasses.replace(data, trace=alone, history=transfer(0, 0.0, 0.05, "info"))
    assert atomicity(quiet).verdict == HOLDS


def test_a_fail_to_the_client_after_a_commit_is_split() -> None:
    trace = [*GOOD[:6], request(0.0, "coord", "h1", "c3", 1)]
    trace = [{**e, "data": {**e["data"], "txn": "c3.1"}} if e["ev"] == "state" and e["data"]["txn"] == "t1"
             else e for e in trace]
    data = RunData(scenario={"protocol": "twopc"}, trace=sorted(trace, key=lambda e: e["ts"]),
                   history=transfer(3, 0.0, 0.05, "fail", error="aborted"))
    v = atomicity(data)
    assert v.verdict == VIOLATED and v.detail.endswith("aborted to its client")


def test_a_reply_in_the_trace_is_the_clients_answer() -> None:
    trace = [request(0.0, "coord", "h9", "c4", 2), st(0.0, "coord", "c4.2", "wait", "coordinator"),
             st(0.01, "p1", "c4.2", "ready"), reply(0.05, "coord", "h9", {"type": "ok"}),
             st(0.3, "p1", "c4.2", "aborted")]
    v = atomicity(run(trace, protocol="threepc"))
    assert v.verdict == VIOLATED and v.detail == "3PC: transaction c4.2: ok to its client; aborted at p1"
    # A not_leader answer (a participant sends the client on) says nothing of the outcome.
    hop = [request(0.0, "p1", "h1", "c4", 2), reply(0.0, "p1", "h1", {"type": "fail", "error": "not_leader"}),
           *trace[1:3], st(0.3, "p1", "c4.2", "aborted")]
    assert atomicity(run(hop)).verdict == HOLDS


BANK = [init("p1", {"0": 100, "2": 100}), init("p2", {"1": 100})]


def test_conservation_holds_when_money_only_moves() -> None:
    final = {"balances": {"0": 70, "1": 130, "2": 100}, "missing": []}
    v = conservation(run([*BANK, applied(1, "p1", "t", {"0": -30}), applied(1, "p2", "t", {"1": 30})], final))
    assert v.verdict == HOLDS and v.data["initial"] == v.data["final"] == 300


def test_conservation_catches_created_money_and_names_the_half_applied_txn() -> None:
    final = {"balances": {"0": 100, "1": 130, "2": 100}, "missing": []}
    v = conservation(run([*BANK, applied(1, "p2", "t9", {"1": 30})], final))
    assert v.verdict == VIOLATED
    assert "holds 330, it started with 300" in v.detail and "t9" in v.detail


def test_conservation_catches_a_negative_account() -> None:
    final = {"balances": {"0": -10, "1": 210, "2": 100}, "missing": []}
    v = conservation(run(BANK, final))
    assert v.verdict == VIOLATED and v.data["negative"] == {"0": -10}


def test_conservation_falls_back_to_final_initial_total() -> None:
    v = conservation(run([], {"balances": {"0": 150, "1": 40}, "missing": [], "initial_total": 200}))
    assert v.verdict == VIOLATED and v.data["initial"] == 200


@pytest.mark.parametrize("final", [{}, {"balances": {"0": 1}, "missing": ["p2"]}])
def test_conservation_unknown_without_every_balance(final: dict[str, Any]) -> None:
    assert conservation(run(BANK, final)).verdict == UNKNOWN


def test_nonblocking_holds_for_short_waits() -> None:
    v = nonblocking(run(GOOD))
    assert v.verdict == HOLDS and v.data["blocked_seconds"] == {}


def test_nonblocking_catches_participants_waiting_for_a_restarted_coordinator() -> None:
    trace = [st(0.0, "coord", "t1", "wait", "coordinator"),
             st(0.9, "p1", "t1", "prepared"), st(0.9, "p2", "t1", "prepared"), st(0.9, "p3", "t1", "prepared"),
             log(1.0, "coord", "started"), log(5.0, "coord", "recovered"),
             st(5.0, "coord", "t1", "aborted", "coordinator"),
             st(5.0, "p1", "t1", "aborted"), st(5.0, "p2", "t1", "aborted"), st(5.0, "p3", "t1", "aborted")]
    v = nonblocking(run(trace))
    assert v.verdict == VIOLATED
    assert v.detail == "2PC: 3 participants blocked 4.1 s holding locks until the coordinator restarted"
    assert v.data["blocked_seconds"] == {"p1": 4.1, "p2": 4.1, "p3": 4.1}


def test_nonblocking_catches_a_participant_still_blocked_at_the_end() -> None:
    trace = [st(0.0, "coord", "t1", "wait", "coordinator"), st(0.1, "p1", "t1", "prepared"),
             st(0.1, "p2", "t1", "aborted"), log(0.5, "p2", "idle")]
    v = nonblocking(run(trace))          # 0.4 s is short, but it never ends
    assert v.verdict == VIOLATED and v.data["blocked_at_end"] == {"p1": ["t1"]}
    assert "1 participant blocked 0.4 s" in v.detail and "1 transaction still blocked at the end" in v.detail


def test_nonblocking_threshold_is_a_parameter() -> None:
    trace = [st(0.0, "p1", "t1", "ready"), st(1.5, "p1", "t1", "committed")]
    assert nonblocking(with_params(run(trace), threshold=2.0)).verdict == HOLDS
    assert nonblocking(with_params(run(trace), threshold=1.0)).verdict == VIOLATED


def test_nonblocking_counts_overlapping_blocks_once() -> None:
    trace = [st(0.0, "p1", "a", "prepared"), st(1.0, "p1", "b", "prepared"),
             st(4.0, "p1", "a", "aborted"), st(5.0, "p1", "b", "aborted")]
    assert nonblocking(with_params(run(trace), threshold=2.0)).data["blocked_seconds"] == {"p1": 5.0}


# -- the transfer workload ------------------------------------------------------------------------

def _workload(params: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
              protocol: str = "twopc") -> TransferWorkload:
    s = Scenario(name="t", protocol=protocol,
                 nodes=[NodeSpec("coord", role="coordinator"), NodeSpec("p1", role="participant"),
                        NodeSpec("p2", role="participant")],
                 config=config or {}, workload=WorkloadSpec(kind="transfer", params=params or {}))
    return TransferWorkload(s.workload, s, Random(3))


def test_workload_takes_the_bank_from_the_protocol_config() -> None:
    w = _workload(config={"accounts": 4, "initial_balance": 50})
    assert (w.accounts, w.initial_balance) == (4, 50)
    ops = [w.next_op(0) for _ in range(200)]
    assert all(op["f"] == "transfer" and op["from"] != op["to"] and 1 <= op["amount"] <= 20 for op in ops)
    assert {op["from"] for op in ops} == {0, 1, 2, 3}


def test_workload_abort_probability_asks_for_more_than_the_bank() -> None:
    w = _workload({"abort_probability": "50%"}, {"accounts": 4, "initial_balance": 50})
    amounts = [w.next_op(0)["amount"] for _ in range(400)]
    assert 150 < sum(a > 200 for a in amounts) < 250


@pytest.mark.parametrize("params,field", [({"accounts": 7}, "accounts"), ({"amount": [5, 1]}, "amount"),
                                          ({"abort_probability": 2}, "abort_probability"),
                                          ({"keys": 3}, "keys")])
def test_workload_refuses_bad_params(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _workload(params)
    assert e.value.field == f"workload.{field}"


def test_workload_refuses_a_protocol_without_a_bank() -> None:
    with pytest.raises(ConfigError, match="no bank"):
        _workload(protocol="register")


def test_workload_final_reads_every_participant() -> None:
    w = _workload()
    assert w.final_ops() == [("p1", {"f": "balances"}), ("p2", {"f": "balances"})]
    final = w.record_final([{"type": "ok", "value": {"0": 90, "2": 100}}, {"type": "info"}])
    assert final["balances"] == {"0": 90, "2": 100} and final["missing"] == ["p2"]
    assert final["initial_total"] == 600
    assert conservation(run([], final)).verdict == UNKNOWN
