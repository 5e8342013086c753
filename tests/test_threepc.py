"""3PC core: every table row, the per-state timeouts, the termination protocol, recovery, bugs."""

from __future__ import annotations

from typing import Any

import pytest
from test_twopc import FakeCtx, make

from nodes.protocols.commit import Txn
from nodes.protocols.fsm import Transition
from nodes.protocols.threepc import COORDINATOR_TABLE, PARTICIPANT_TABLE, ThreePC

NODES3 = {"coord": {"role": "coordinator"}, "p1": {"role": "participant"},
          "p2": {"role": "participant"}, "p3": {"role": "participant"}}
PARTS = ["p1", "p2", "p3"]
TXN = "c1.1"
TRANSFER = {"f": "transfer", "from": 0, "to": 1, "amount": 30, "client": "c1", "seq": 1}


def core(node: str, **config: Any) -> tuple[ThreePC, FakeCtx]:
    return make(ThreePC, node, config=config, nodes=NODES3)


def restart(c: ThreePC) -> tuple[ThreePC, FakeCtx]:
    return make(ThreePC, c.ctx.node, config={"bugs": list(c.config.bugs)}, storage=c.ctx.storage,
                nodes=NODES3)


def voted(node: str = "p2", **config: Any) -> tuple[ThreePC, FakeCtx]:
    """A participant that voted YES on TXN (account 1 lives on p2 with 3 participants)."""
    c, ctx = core(node, **config)
    acct = PARTS.index(node)
    c.handle_message("coord", "can_commit", {"txn": TXN, "deltas": [[acct, -10]], "participants": PARTS})
    ctx.took()
    return c, ctx


def types(sent: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return sorted((d, t) for d, t, _ in sent)


# -- table-driven -------------------------------------------------------------------------------

@pytest.mark.parametrize("row", COORDINATOR_TABLE.transitions, ids=lambda t: f"{t.source}-{t.event}")
def test_coordinator_row(row: Transition) -> None:
    c, ctx = core("coord")
    t = c.txns[TXN] = Txn(TXN, state=row.source, coordinator="coord", participants=["p1", "p2"],
                          deltas={"p1": [[0, -5]], "p2": [[1, 5]]})
    c.step(t, row.event, "p1")
    assert t.state == row.target


@pytest.mark.parametrize("row", PARTICIPANT_TABLE.transitions, ids=lambda t: f"{t.source}-{t.event}")
def test_participant_row(row: Transition) -> None:
    c, ctx = core("p1")
    t = c.txns[TXN] = Txn(TXN, state=row.source, coordinator="coord", participants=PARTS,
                          deltas={"p1": [[0, -5]]})
    c.step(t, row.event, "p2")
    assert t.state == row.target
    if row.target in ("committed", "aborted") and row.source != row.target:
        assert c.bank.locks == {} and not any(k.endswith(TXN) for k in ctx.timers)


# -- participant ------------------------------------------------------------------------------------

def test_can_commit_locks_logs_and_says_yes() -> None:
    c, ctx = core("p2")
    c.handle_message("coord", "can_commit", {"txn": TXN, "deltas": [[1, -10]], "participants": PARTS})
    assert ctx.took() == [("coord", "yes", {"txn": TXN})]
    assert c.txns[TXN].state == "ready" and c.bank.locks == {1: TXN}
    assert ctx.wal()[-1]["k"] == "ready" and ctx.timers[f"wait:{TXN}"] == c.config.ready_timeout


def test_can_commit_that_cannot_pay_says_no() -> None:
    c, ctx = core("p2")
    c.handle_message("coord", "can_commit", {"txn": TXN, "deltas": [[1, -1000]], "participants": PARTS})
    assert ctx.took() == [("coord", "no", {"txn": TXN})] and c.txns[TXN].state == "aborted"


def test_pre_commit_then_do_commit() -> None:
    c, ctx = voted()
    c.handle_message("coord", "pre_commit", {"txn": TXN})
    assert ctx.took() == [("coord", "ack", {"txn": TXN})] and c.txns[TXN].state == "precommitted"
    assert ctx.timers[f"wait:{TXN}"] == c.config.precommit_timeout
    c.handle_message("coord", "do_commit", {"txn": TXN})
    assert c.txns[TXN].state == "committed" and c.bank.snapshot() == {"1": 90}
    assert not any(k.endswith(TXN) for k in ctx.timers)


@pytest.mark.parametrize("precommitted,decision", [(False, "abort"), (True, "do_commit")])
def test_alone_after_a_timeout_the_per_state_rule_decides(precommitted: bool, decision: str) -> None:
    c, ctx = voted()
    if precommitted:
        c.handle_message("coord", "pre_commit", {"txn": TXN})
        ctx.took()
    c.handle_timer(f"wait:{TXN}")
    assert types(ctx.took()) == [("p1", "state_req"), ("p3", "state_req")]
    c.handle_timer(f"term:{TXN}")               # nobody answered: elected alone
    assert c.txns[TXN].state == ("committed" if precommitted else "aborted")
    assert types(ctx.took()) == [("p1", decision), ("p3", decision)]


def test_lowest_live_participant_is_elected_and_decides_for_all() -> None:
    c, ctx = voted("p1")
    c.handle_timer(f"wait:{TXN}")
    ctx.took()
    c.handle_message("p2", "state", {"txn": TXN, "state": "precommitted", "recovered": False})
    c.handle_message("p3", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    # Someone was precommitted: commit -- but first the uncertain (p1 itself, p3) precommit.
    t = c.txns[TXN]
    assert t.state == "precommitted" and ctx.wal()[-1]["k"] == "precommitted"
    assert types(ctx.took()) == [("p3", "pre_commit")]
    c.handle_message("p3", "ack", {"txn": TXN})
    assert t.state == "committed"
    assert types(ctx.took()) == [("p2", "do_commit"), ("p3", "do_commit")]


def test_elected_precommitted_with_nobody_uncertain_commits_at_once() -> None:
    c, ctx = voted("p1")
    c.handle_message("coord", "pre_commit", {"txn": TXN})
    c.handle_timer(f"wait:{TXN}")
    ctx.took()
    c.handle_message("p2", "state", {"txn": TXN, "state": "precommitted", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    assert c.txns[TXN].state == "committed"
    assert types(ctx.took()) == [("p2", "do_commit"), ("p3", "do_commit")]


def test_an_uncertain_peer_that_never_acks_gets_a_new_round() -> None:
    c, ctx = voted("p1")
    c.handle_timer(f"wait:{TXN}")
    c.handle_message("p2", "state", {"txn": TXN, "state": "precommitted", "recovered": False})
    c.handle_message("p3", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    ctx.took()
    c.handle_timer(f"term:{TXN}")               # p3's ack never came: ask everyone again
    assert c.txns[TXN].state == "precommitted"
    assert types(ctx.took()) == [("p2", "state_req"), ("p3", "state_req")]
    c.handle_message("p3", "state", {"txn": TXN, "state": "precommitted", "recovered": False})
    c.handle_timer(f"term:{TXN}")               # now nobody is uncertain
    assert c.txns[TXN].state == "committed"


def test_a_peers_pre_commit_is_acked_to_that_peer() -> None:
    c, ctx = voted("p2")
    c.handle_message("p1", "pre_commit", {"txn": TXN})
    assert c.txns[TXN].state == "precommitted" and ctx.took() == [("p1", "ack", {"txn": TXN})]


def test_all_uncertain_means_abort() -> None:
    c, ctx = voted("p1")
    c.handle_timer(f"wait:{TXN}")
    c.handle_message("p3", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    assert c.txns[TXN].state == "aborted"


def test_a_higher_participant_waits_for_the_elected_one_then_replaces_it() -> None:
    c, ctx = voted("p2")
    c.handle_timer(f"wait:{TXN}")
    c.handle_message("p1", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    assert c.txns[TXN].state == "ready" and c.txns[TXN].awaiting == "p1"
    ctx.took()
    c.handle_timer(f"term:{TXN}")               # p1 never decided: new round without it
    assert types(ctx.took()) == [("p1", "state_req"), ("p3", "state_req")]
    c.handle_message("p1", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"term:{TXN}")
    assert c.txns[TXN].state == "aborted"       # p1 is a suspect now: p2 decides


def test_an_answer_with_an_outcome_is_adopted() -> None:
    c, ctx = voted("p2")
    c.handle_timer(f"wait:{TXN}")
    c.handle_message("p3", "state", {"txn": TXN, "state": "committed", "recovered": False})
    assert c.txns[TXN].state == "committed"


def test_recovered_reporters_are_not_candidates() -> None:
    c, ctx = voted("p2")
    c.handle_timer(f"wait:{TXN}")
    c.handle_message("p1", "state", {"txn": TXN, "state": "ready", "recovered": True})
    c.handle_timer(f"term:{TXN}")
    assert c.txns[TXN].state == "aborted"       # p2 itself, not p1, was elected


def test_a_state_req_pulls_a_peer_into_the_termination() -> None:
    c, ctx = voted("p1")
    c.handle_message("p3", "state_req", {"txn": TXN})
    sent = ctx.took()
    assert ("p3", "state", {"txn": TXN, "state": "ready", "recovered": False}) in sent
    assert ("p2", "state_req") in types(sent) and f"term:{TXN}" in ctx.timers
    assert f"wait:{TXN}" not in ctx.timers


def test_a_peer_that_never_voted_aborts_when_asked() -> None:
    c, ctx = core("p1")
    c.handle_message("p3", "state_req", {"txn": TXN})
    assert c.txns[TXN].state == "aborted"
    assert ctx.took() == [("p3", "state", {"txn": TXN, "state": "aborted", "recovered": False})]
    c.handle_message("coord", "can_commit", {"txn": TXN, "deltas": [[0, -1]], "participants": PARTS})
    assert ctx.took() == [("coord", "no", {"txn": TXN})]


def test_restarted_uncertain_participant_asks_instead_of_deciding() -> None:
    c, ctx = voted("p2")
    c2, ctx2 = restart(c)
    t = c2.txns[TXN]
    assert t.state == "ready" and t.recovered and c2.bank.locks == {1: TXN}
    assert types(ctx2.took()) == [("coord", "decision_req"), ("p1", "decision_req"), ("p3", "decision_req")]
    c2.handle_message("coord", "pre_commit", {"txn": TXN})
    ctx2.took()
    c2.handle_timer(f"wait:{TXN}")              # still recovered: asks again, does not terminate
    assert {ty for _, ty, _ in ctx2.took()} == {"decision_req"} and t.state == "precommitted"
    c2.handle_message("p1", "state", {"txn": TXN, "state": "committed", "recovered": False})
    assert t.state == "committed"


def test_precommit_survives_a_restart() -> None:
    c, ctx = voted("p2")
    c.handle_message("coord", "pre_commit", {"txn": TXN})
    c2, _ = restart(c)
    assert c2.txns[TXN].state == "precommitted"


@pytest.mark.parametrize("state,msg", [("committed", "abort"), ("aborted", "do_commit")])
def test_contradictions_are_dropped(state: str, msg: str) -> None:
    c, ctx = voted("p2")
    t = c.txns[TXN]
    t.state = state
    c.handle_message("p1", msg, {"txn": TXN})
    assert t.state == state and c.illegal == 1


def test_an_abort_reaching_a_precommitted_participant_is_taken() -> None:
    """Only lost messages or a partition can get here; agreeing with whoever aborted is the
    one way left to keep the outcome whole (dropping it, the participant would commit alone)."""
    c, ctx = voted("p2")
    c.handle_message("coord", "pre_commit", {"txn": TXN})
    c.handle_message("p1", "abort", {"txn": TXN})
    assert c.txns[TXN].state == "aborted" and c.illegal == 0 and c.bank.locks == {}
    assert not any(k.endswith(TXN) for k in ctx.timers)


@pytest.mark.parametrize("state", ["aborted", "committed"])
def test_a_decided_participant_answers_a_pre_commit_with_its_outcome(state: str) -> None:
    c, ctx = voted("p2")
    c.txns[TXN].state = state
    c.handle_message("coord", "pre_commit", {"txn": TXN})
    assert ctx.took() == [("coord", "state", {"txn": TXN, "state": state, "recovered": False})]


# -- coordinator -----------------------------------------------------------------------------------

def begun() -> tuple[ThreePC, FakeCtx]:
    c, ctx = core("coord")
    c.handle_request("h1", dict(TRANSFER))
    assert types(ctx.took()) == [("p1", "can_commit"), ("p2", "can_commit")]
    return c, ctx


def test_three_phases_then_ok() -> None:
    c, ctx = begun()
    c.handle_message("p1", "yes", {"txn": TXN})
    assert ctx.took() == []
    c.handle_message("p2", "yes", {"txn": TXN})
    assert types(ctx.took()) == [("p1", "pre_commit"), ("p2", "pre_commit")]
    assert ctx.wal()[-1]["k"] == "precommit"
    c.handle_message("p1", "ack", {"txn": TXN})
    c.handle_message("p2", "ack", {"txn": TXN})
    assert types(ctx.took()) == [("p1", "do_commit"), ("p2", "do_commit")]
    assert ctx.replies == [("h1", {"type": "ok"})]


def test_missing_acks_still_commit() -> None:
    c, ctx = begun()
    for p in ("p1", "p2"):
        c.handle_message(p, "yes", {"txn": TXN})
    c.handle_message("p1", "ack", {"txn": TXN})
    c.handle_timer(f"ack:{TXN}")
    assert c.txns[TXN].state == "committed"


@pytest.mark.parametrize("how", ["no", "timeout"])
def test_no_or_missing_vote_aborts(how: str) -> None:
    c, ctx = begun()
    c.handle_message("p1", "yes", {"txn": TXN})
    if how == "no":
        c.handle_message("p2", "no", {"txn": TXN})
    else:
        c.handle_timer(f"vote:{TXN}")
    assert types(ctx.took()) == [("p1", "abort"), ("p2", "abort")]
    assert ctx.replies == [("h1", {"type": "fail", "error": "aborted"})]


def test_coordinator_recovery_in_wait_aborts() -> None:
    c, ctx = begun()
    c.handle_message("p1", "yes", {"txn": TXN})
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "aborted"
    assert types(ctx2.took()) == [("p1", "abort"), ("p2", "abort")]
    c3, ctx3 = restart(c2)                      # decided: a later restart stays quiet
    assert ctx3.took() == [] and c3.txns[TXN].state == "aborted"


def precommitted_then_restarted() -> tuple[ThreePC, FakeCtx]:
    c, ctx = begun()
    for p in ("p1", "p2"):
        c.handle_message(p, "yes", {"txn": TXN})
    c2, ctx2 = restart(c)                       # its PreCommits may have died with it
    assert c2.txns[TXN].state == "precommit"
    assert types(ctx2.took()) == [("p1", "decision_req"), ("p2", "decision_req")]
    return c2, ctx2


@pytest.mark.parametrize("answer,outcome,msg", [("aborted", "aborted", "abort"),
                                                ("committed", "committed", "do_commit")])
def test_coordinator_restarted_in_precommit_asks_and_takes_the_known_outcome(
        answer: str, outcome: str, msg: str) -> None:
    c, ctx = precommitted_then_restarted()
    c.handle_message("p1", "state", {"txn": TXN, "state": "ready", "recovered": False})
    c.handle_timer(f"ask:{TXN}")                # nobody knows yet: ask again, decide nothing
    assert c.txns[TXN].state == "precommit"
    assert types(ctx.took()) == [("p1", "decision_req"), ("p2", "decision_req")]
    c.handle_message("p2", "state", {"txn": TXN, "state": answer, "recovered": False})
    assert c.txns[TXN].state == outcome and ctx.wal()[-1] == {"k": "decision", "txn": TXN,
                                                              "d": msg.replace("do_", "")}
    assert types(ctx.took()) == [("p1", msg), ("p2", msg)]
    assert not any(k.endswith(TXN) for k in ctx.timers)
    c3, ctx3 = restart(c)
    assert ctx3.took() == [] and c3.txns[TXN].state == outcome


def test_coordinator_restarted_in_precommit_commits_once_every_participant_acks() -> None:
    c, ctx = precommitted_then_restarted()
    c.handle_message("p1", "ack", {"txn": TXN})
    c.handle_message("p2", "ack", {"txn": TXN})     # acks of PreCommits that did leave
    assert c.txns[TXN].state == "committed"


def test_coordinator_answers_questions() -> None:
    c, ctx = core("coord")
    c.handle_message("p1", "decision_req", {"txn": "ghost"})
    assert ctx.took() == [("p1", "abort", {"txn": "ghost"})]


def test_bug_abort_on_recovery() -> None:
    c, ctx = voted("p2", bugs=["abort_on_recovery"])
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "aborted" and ctx2.took() == []


def test_bug_commit_on_recovery() -> None:
    c, ctx = begun()
    for p in ("p1", "p2"):
        c.handle_message(p, "yes", {"txn": TXN})
    c2, ctx2 = make(ThreePC, "coord", config={"bugs": ["commit_on_recovery"]}, storage=c.ctx.storage,
                    nodes=NODES3)
    assert c2.txns[TXN].state == "committed"        # asked nobody
    assert types(ctx2.took()) == [("p1", "do_commit"), ("p2", "do_commit")]


def test_config_refuses_a_ready_timeout_below_the_vote_timeout() -> None:
    from nodes.protocols.core import ConfigValueError, build_config
    with pytest.raises(ConfigValueError) as e:
        build_config(ThreePC, {"vote_timeout": "1s", "ready_timeout": "500ms"})
    assert e.value.field == "ready_timeout"
