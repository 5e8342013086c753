"""2PC core: every table row, the messages it answers with, recovery from the log, named bugs.

The harness is a recording context (no simulator): each test drives one core
by hand, restarts it on the same storage, and reads what it sent, logged and
traced. tests/test_commit_scenarios.py runs the same cores in the simulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from nodes.protocols.commit import Bank, Txn, owner, roles, split_transfer
from nodes.protocols.core import build_config
from nodes.protocols.fsm import Transition
from nodes.protocols.twopc import COORDINATOR_TABLE, PARTICIPANT_TABLE, TwoPC
from nodes.storage import MemoryStorage

NODES = {"coord": {"role": "coordinator"}, "p1": {"role": "participant"},
         "p2": {"role": "participant"}}


class FakeCtx:
    """A Context that records instead of acting."""

    def __init__(self, node: str, nodes: dict[str, dict[str, Any]] | None = None,
                 storage: MemoryStorage | None = None) -> None:
        self.node = node
        self.nodes = nodes or NODES
        self.storage = storage or MemoryStorage()
        self.rng = None
        self.t = 0.0
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.timers: dict[str, float] = {}
        self.replies: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def now(self) -> float:
        return self.t

    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        self.sent.append((dst, type, dict(body)))

    def set_timer(self, name: str, after: float) -> None:
        self.timers[name] = after

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def reply(self, client: str, result: dict[str, Any]) -> None:
        self.replies.append((client, result))

    def trace(self, ev: str, **fields: Any) -> None:
        self.events.append((ev, fields))

    # -- reading what happened --
    def took(self) -> list[tuple[str, str, dict[str, Any]]]:
        out, self.sent = self.sent, []
        return out

    def states(self) -> list[str]:
        return [f["state"] for ev, f in self.events if ev == "state"]

    def wal(self) -> list[dict[str, Any]]:
        return self.storage.log_read("wal")


def make(core: type = TwoPC, node: str = "coord", config: dict[str, Any] | None = None,
         storage: MemoryStorage | None = None, nodes: dict[str, Any] | None = None) -> tuple[Any, FakeCtx]:
    ctx = FakeCtx(node, nodes, storage)
    c = core(ctx, build_config(core, {"accounts": 2, "initial_balance": 100, **(config or {})}))
    c.start()
    return c, ctx


def restart(c: Any, core: type = TwoPC) -> tuple[Any, FakeCtx]:
    return make(core, c.ctx.node, config={"bugs": list(c.config.bugs)}, storage=c.ctx.storage,
                nodes=c.ctx.nodes)


TRANSFER = {"f": "transfer", "from": 0, "to": 1, "amount": 30, "client": "c1", "seq": 1}
TXN = "c1.1"


# -- sharding and the bank -----------------------------------------------------------------

def test_roles_from_specs_and_fallback_without_roles() -> None:
    assert roles(NODES) == ("coord", ["p1", "p2"])
    assert roles({"n2": {}, "n1": {}, "n3": {}}) == ("n1", ["n2", "n3"])


def test_account_i_lives_on_participant_i_mod_p() -> None:
    parts = ["p1", "p2", "p3"]
    assert [owner(a, parts) for a in range(7)] == ["p1", "p2", "p3", "p1", "p2", "p3", "p1"]
    assert split_transfer({"from": 0, "to": 3, "amount": 5}, parts, 6) == {"p1": [[0, -5], [3, 5]]}
    assert split_transfer({"from": 4, "to": 0, "amount": 5}, parts, 6) == {"p1": [[0, 5]], "p2": [[4, -5]]}


@pytest.mark.parametrize("op", [{"from": 0, "to": 0, "amount": 1}, {"from": 0, "to": 9, "amount": 1},
                                {"from": 0, "to": 1, "amount": 0}, {"from": "0", "to": 1, "amount": 1},
                                {"from": 0, "to": 1, "amount": True}])
def test_malformed_transfers_are_refused(op: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        split_transfer(op, ["p1", "p2"], 2)


def test_bank_refuses_overdraft_and_foreign_locks() -> None:
    b = Bank({0: 10, 2: 5})
    assert b.refusal("t1", [[0, -10]]) is None
    assert "insufficient" in b.refusal("t1", [[0, -11]])
    assert "not here" in b.refusal("t1", [[1, 1]])
    b.lock("t1", [[0, -10]])
    assert "locked by t1" in b.refusal("t2", [[0, 1]])
    assert b.refusal("t1", [[0, -1]]) is None       # its own lock does not stop it
    b.unlock("t1")
    assert b.locks == {}


# -- table-driven: every row of both tables ----------------------------------------------------

def _txn_for(role: str, state: str) -> Txn:
    t = Txn(TXN, state=state, coordinator="coord", participants=["p1", "p2"])
    t.deltas = {"p1": [[0, -30]], "p2": [[1, 30]]} if role == "coordinator" else {"p1": [[0, -30]]}
    return t


@pytest.mark.parametrize("row", COORDINATOR_TABLE.transitions, ids=lambda t: f"{t.source}-{t.event}")
def test_coordinator_row(row: Transition) -> None:
    c, ctx = make(node="coord")
    t = c.txns[TXN] = _txn_for("coordinator", row.source)
    c.step(t, row.event, "p1")
    assert t.state == row.target
    if row.target != row.source:
        assert ctx.states()[-1] == row.target


@pytest.mark.parametrize("row", PARTICIPANT_TABLE.transitions, ids=lambda t: f"{t.source}-{t.event}")
def test_participant_row(row: Transition) -> None:
    c, ctx = make(node="p1")
    t = c.txns[TXN] = _txn_for("participant", row.source)
    c.step(t, row.event, "coord")
    assert t.state == row.target
    if "lock" in row.actions:
        assert c.bank.locks == {0: TXN}
    if row.target in ("committed", "aborted") and row.source != row.target:
        assert c.bank.locks == {}


# -- participant ------------------------------------------------------------------------------

def test_participant_creates_its_accounts_once() -> None:
    c, ctx = make(node="p2", config={"accounts": 5})
    assert c.bank.snapshot() == {"1": 100, "3": 100}
    assert ("apply", {"init": True, "balances": {"1": 100, "3": 100}}) in ctx.events
    c2, ctx2 = restart(c)
    assert c2.bank.snapshot() == {"1": 100, "3": 100}
    assert not [e for e in ctx2.events if e[0] == "apply"]


def test_prepare_locks_logs_and_votes_commit() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    assert ctx.took() == [("coord", "vote_commit", {"txn": TXN})]
    assert c.txns[TXN].state == "prepared" and c.bank.locks == {0: TXN}
    assert ctx.wal()[-1]["k"] == "prepared"
    assert f"ask:{TXN}" in ctx.timers


@pytest.mark.parametrize("deltas", [[[0, -101]], [[1, 5]]])
def test_prepare_that_cannot_be_kept_votes_abort(deltas: list[list[int]]) -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": deltas, "participants": ["p1"]})
    assert ctx.took() == [("coord", "vote_abort", {"txn": TXN})]
    assert c.txns[TXN].state == "aborted" and c.bank.locks == {}


def test_lock_conflict_votes_abort() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": "a", "deltas": [[0, -1]], "participants": ["p1"]})
    c.handle_message("coord", "prepare", {"txn": "b", "deltas": [[0, 1]], "participants": ["p1"]})
    assert [m[1] for m in ctx.took()] == ["vote_commit", "vote_abort"]


def test_global_commit_applies_releases_and_acks() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    ctx.took()
    c.handle_message("coord", "global_commit", {"txn": TXN})
    assert ctx.took() == [("coord", "ack", {"txn": TXN})]
    assert c.bank.snapshot() == {"0": 70} and c.bank.locks == {}
    assert ("apply", {"txn": TXN, "deltas": {"0": -30}}) in ctx.events
    assert ("commit", {"txn": TXN, "role": "participant", "decision": "commit"}) in ctx.events
    c.handle_message("coord", "global_commit", {"txn": TXN})      # duplicate: ack again, apply once
    assert ctx.took() == [("coord", "ack", {"txn": TXN})] and c.bank.snapshot() == {"0": 70}


def test_global_abort_rolls_back() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    c.handle_message("coord", "global_abort", {"txn": TXN})
    assert c.txns[TXN].state == "aborted" and c.bank.snapshot() == {"0": 100} and c.bank.locks == {}


@pytest.mark.parametrize("first,then", [("global_commit", "global_abort"), ("global_abort", "global_commit")])
def test_contradicting_decision_is_dropped_and_traced(first: str, then: str) -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1"]})
    c.handle_message("coord", first, {"txn": TXN})
    state = c.txns[TXN].state
    c.handle_message("coord", then, {"txn": TXN})          # must not raise
    assert c.txns[TXN].state == state and c.illegal == 1
    assert any(ev == "log" and f.get("msg") == "dropped" for ev, f in ctx.events)


@pytest.mark.parametrize("type,body", [("global_commit", {"txn": "never-prepared"}),
                                       ("prepare", {"no": "txn"}), ("vote_commit", {"txn": "x"}),
                                       ("global_commit", [1, 2])])
def test_bad_input_never_raises(type: str, body: Any) -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", type, body)
    assert c.illegal == 1


def test_prepared_participant_asks_and_keeps_asking() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    ctx.took()
    for _ in range(3):
        c.handle_timer(f"ask:{TXN}")
        assert ctx.took() == [("coord", "decision_req", {"txn": TXN})]
        assert f"ask:{TXN}" in ctx.timers
    assert c.txns[TXN].state == "prepared" and c.bank.locks == {0: TXN}     # blocked


def test_prepared_participant_recovers_locks_and_asks() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "prepared" and c2.bank.locks == {0: TXN}
    assert ctx2.took() == [("coord", "decision_req", {"txn": TXN})]
    c2.handle_message("coord", "global_commit", {"txn": TXN})
    c3, _ = restart(c2)
    assert c3.bank.snapshot() == {"0": 70} and c3.bank.locks == {}      # the commit survives too


def test_cooperative_termination_asks_peers_and_peers_answer() -> None:
    coop = {"cooperative_termination": True}
    p1, ctx1 = make(node="p1", config=coop)
    p1.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    ctx1.took()
    p1.handle_timer(f"ask:{TXN}")
    assert sorted(d for d, _, _ in ctx1.took()) == ["coord", "p2"]
    # A peer that never voted aborts on the spot and says so; the asker aborts.
    p2, ctx2 = make(node="p2", config=coop)
    p2.handle_message("p1", "decision_req", {"txn": TXN})
    assert p2.txns[TXN].state == "aborted" and ctx2.took() == [("p1", "global_abort", {"txn": TXN})]
    p2.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[1, 30]], "participants": ["p1", "p2"]})
    assert ctx2.took() == [("coord", "vote_abort", {"txn": TXN})]    # too late to vote yes
    p1.handle_message("p2", "global_abort", {"txn": TXN})
    assert p1.txns[TXN].state == "aborted"


def test_without_cooperation_peers_ignore_questions() -> None:
    p2, ctx2 = make(node="p2")
    p2.handle_message("p1", "decision_req", {"txn": TXN})
    assert ctx2.took() == [] and p2.txns[TXN].state == "init"


# -- coordinator ---------------------------------------------------------------------------------

def _begin() -> tuple[Any, FakeCtx]:
    c, ctx = make(node="coord")
    c.handle_request("h1", dict(TRANSFER))
    return c, ctx


def test_transfer_sends_prepare_to_the_owners() -> None:
    c, ctx = _begin()
    assert ctx.took() == [
        ("p1", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]}),
        ("p2", "prepare", {"txn": TXN, "deltas": [[1, 30]], "participants": ["p1", "p2"]})]
    assert ctx.wal()[0]["k"] == "begin" and f"vote:{TXN}" in ctx.timers


def test_all_votes_commit_then_reply_ok_and_finish_on_acks() -> None:
    c, ctx = _begin()
    ctx.took()
    c.handle_message("p1", "vote_commit", {"txn": TXN})
    assert ctx.took() == [] and ctx.replies == []
    c.handle_message("p2", "vote_commit", {"txn": TXN})
    assert [(d, ty) for d, ty, _ in ctx.took()] == [("p1", "global_commit"), ("p2", "global_commit")]
    assert ctx.replies == [("h1", {"type": "ok"})]
    assert [r["k"] for r in ctx.wal()] == ["begin", "decision"]
    c.handle_message("p1", "ack", {"txn": TXN})
    c.handle_timer(f"ack:{TXN}")                       # resend only to who has not acked
    assert [d for d, _, _ in ctx.took()] == ["p2"]
    c.handle_message("p2", "ack", {"txn": TXN})
    assert ctx.wal()[-1]["k"] == "end" and f"ack:{TXN}" not in ctx.timers


@pytest.mark.parametrize("how", ["vote_abort", "timeout"])
def test_abort_on_a_no_vote_or_a_timeout(how: str) -> None:
    c, ctx = _begin()
    ctx.took()
    c.handle_message("p1", "vote_commit", {"txn": TXN})
    if how == "timeout":
        c.handle_timer(f"vote:{TXN}")
    else:
        c.handle_message("p2", "vote_abort", {"txn": TXN})
    assert {ty for _, ty, _ in ctx.took()} == {"global_abort"}
    assert ctx.replies == [("h1", {"type": "fail", "error": "aborted"})]


def test_retried_transfer_gets_the_known_outcome() -> None:
    c, ctx = _begin()
    c.handle_message("p1", "vote_commit", {"txn": TXN})
    c.handle_message("p2", "vote_commit", {"txn": TXN})
    ctx.took()
    c.handle_request("h2", dict(TRANSFER))
    assert ctx.took() == [] and ctx.replies[-1] == ("h2", {"type": "ok"})


def test_presumed_abort_for_unknown_transactions() -> None:
    c, ctx = make(node="coord")
    c.handle_message("p1", "decision_req", {"txn": "ghost"})
    assert ctx.took() == [("p1", "global_abort", {"txn": "ghost"})]


def test_requests_go_to_the_right_role() -> None:
    p, pctx = make(node="p1")
    p.handle_request("h", dict(TRANSFER))
    assert pctx.replies[-1] == ("h", {"type": "fail", "error": "not_leader", "leader": "coord"})
    p.handle_request("h", {"f": "balances"})
    assert pctx.replies[-1] == ("h", {"type": "ok", "value": {"0": 100}})
    c, ctx = make(node="coord")
    c.handle_request("h", {"f": "transfer", "from": 0, "to": 0, "amount": 1})
    assert ctx.replies[-1][1]["type"] == "fail" and "bad transfer" in ctx.replies[-1][1]["error"]


def test_coordinator_recovery_aborts_undecided() -> None:
    c, ctx = _begin()
    c.handle_message("p1", "vote_commit", {"txn": TXN})
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "aborted"
    assert {ty for _, ty, _ in ctx2.took()} == {"global_abort"}
    assert ctx2.wal()[-1] == {"k": "decision", "txn": TXN, "d": "abort"}


def test_coordinator_recovery_resends_a_logged_commit() -> None:
    c, ctx = _begin()
    c.handle_message("p1", "vote_commit", {"txn": TXN})
    c.handle_message("p2", "vote_commit", {"txn": TXN})
    c.handle_message("p1", "ack", {"txn": TXN})
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "committed"
    # Acks are volatile: a restarted coordinator tells everyone again.
    assert sorted((d, ty) for d, ty, _ in ctx2.took()) == [("p1", "global_commit"), ("p2", "global_commit")]


def test_finished_transactions_stay_quiet_after_restart() -> None:
    c, ctx = _begin()
    for p in ("p1", "p2"):
        c.handle_message(p, "vote_commit", {"txn": TXN})
    for p in ("p1", "p2"):
        c.handle_message(p, "ack", {"txn": TXN})
    c2, ctx2 = restart(c)
    assert ctx2.took() == [] and ctx2.states() == []


# -- named bugs ---------------------------------------------------------------------------------

def test_bug_decision_not_logged_turns_commit_into_abort_after_restart() -> None:
    c, ctx = make(node="coord", config={"bugs": ["decision_not_logged"]})
    c.handle_request("h1", dict(TRANSFER))
    for p in ("p1", "p2"):
        c.handle_message(p, "vote_commit", {"txn": TXN})
    assert ctx.replies == [("h1", {"type": "ok"})]            # the client was told: committed
    assert [r["k"] for r in ctx.wal()] == ["begin"]
    c2, ctx2 = restart(c)
    assert c2.txns[TXN].state == "aborted"


def test_bug_vote_before_durable_leaves_a_window_without_the_record() -> None:
    c, ctx = make(node="p1", config={"bugs": ["vote_before_durable"]})
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1", "p2"]})
    assert ctx.took() == [("coord", "vote_commit", {"txn": TXN})]
    assert ctx.wal() == []                                   # voted, nothing durable yet
    lost, _ = restart(c)                                     # a crash now forgets the promise
    assert TXN not in lost.txns and lost.bank.locks == {}
    c.handle_timer(f"flush:{TXN}")
    assert ctx.wal()[-1]["k"] == "prepared"
    kept, _ = restart(c)
    assert kept.txns[TXN].state == "prepared"


def test_late_flush_keeps_the_outcome_last_in_the_log() -> None:
    c, ctx = make(node="p1", config={"bugs": ["vote_before_durable"]})
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1"]})
    c.handle_message("coord", "global_commit", {"txn": TXN})
    c.handle_timer(f"flush:{TXN}")
    c2, _ = restart(c)
    assert c2.txns[TXN].state == "committed" and c2.bank.snapshot() == {"0": 70}


def test_status_reports_role_and_open_transactions() -> None:
    c, ctx = make(node="p1")
    c.handle_message("coord", "prepare", {"txn": TXN, "deltas": [[0, -30]], "participants": ["p1"]})
    assert c.status() == {"role": "participant", "coordinator": "coord", "open": 1, "illegal": 0}
