"""Two-phase commit over a sharded bank: the coordinator and its resource managers.

A transfer ``{"f": "transfer", "from": a, "to": b, "amount": n}`` goes to the
coordinator. It sends PREPARE to the owners of ``a`` and ``b``; each votes
VOTE-COMMIT once its redo record is durable and the accounts are locked
(no-wait locking: an account locked by another transaction means VOTE-ABORT,
as does a balance that cannot pay), else VOTE-ABORT. All commit votes ->
GLOBAL-COMMIT, any abort or a vote timeout -> GLOBAL-ABORT; participants apply
or drop the change, release the locks and ACK. Every step recovery needs is in
a write-ahead log (``ctx.storage`` log ``wal``) before the message that
depends on it leaves.

The shared machinery (roles, bank, log, table stepping, the voting round and the
answers to outcomes) is in ``commit.py``, under 2PC's message names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodes.protocols.commit import (
    ABORTED,
    COMMITTED,
    COORDINATOR,
    INIT,
    BankTunables,
    CommitCore,
    Txn,
    tunable,
)
from nodes.protocols.fsm import Table


@dataclass(frozen=True)
class TwoPCTunables(BankTunables):
    resend_interval: float = tunable(0.5, "s", "coordinator: how often it re-sends its decision to "
                                "participants that have not acknowledged it. Shorter finishes sooner "
                                "after a participant restarts; costs messages")
    decision_timeout: float = tunable(0.5, "s", "participant: how long it waits in prepared before it asks "
                                 "for the decision, and then how often it asks again")
    cooperative_termination: bool = tunable(False, "bool", "a prepared participant that gets no decision "
                                       "also asks its peers: one that has decided tells it, one that "
                                       "has not voted aborts and tells it. Shortens blocking when the "
                                       "coordinator reached some participants; cannot help when every "
                                       "participant is prepared and the coordinator is gone")
    flush_delay: float = tunable(0.1, "s", "only with bug vote_before_durable: how long the redo record "
                            "stays in memory after the vote has been sent (a lazy group commit)")


# -- 2PC -----------------------------------------------------------------------------------

_DECIDE_COMMIT = ("cancel_vote_timer", "log_decision", "send_decision", "reply_client", "start_ack_timer")
_DECIDE_ABORT = _DECIDE_COMMIT

COORDINATOR_TABLE = Table("2pc coordinator", INIT, [
    (INIT, "begin", "wait", ("log_begin", "send_prepare", "start_vote_timer")),
    ("wait", "vote_commit", "wait", ()),
    ("wait", "last_vote_commit", COMMITTED, _DECIDE_COMMIT),
    ("wait", "vote_abort", ABORTED, _DECIDE_ABORT),
    ("wait", "vote_timeout", ABORTED, _DECIDE_ABORT),
    ("wait", "decision_req", "wait", ()),              # still deciding: the answer comes anyway
    ("wait", "recover", ABORTED, ("log_decision", "send_decision", "start_ack_timer")),
    (COMMITTED, "recover", COMMITTED, ("send_decision", "start_ack_timer")),
    (ABORTED, "recover", ABORTED, ("send_decision", "start_ack_timer")),
    (COMMITTED, "ack", COMMITTED, ()),
    (ABORTED, "ack", ABORTED, ()),
    (COMMITTED, "last_ack", COMMITTED, ("cancel_ack_timer", "log_end")),
    (ABORTED, "last_ack", ABORTED, ("cancel_ack_timer", "log_end")),
    (COMMITTED, "ack_timeout", COMMITTED, ("send_decision", "start_ack_timer")),
    (ABORTED, "ack_timeout", ABORTED, ("send_decision", "start_ack_timer")),
    (COMMITTED, "decision_req", COMMITTED, ("answer",)),
    (ABORTED, "decision_req", ABORTED, ("answer",)),
    (COMMITTED, "vote_commit", COMMITTED, ()),          # a duplicate, or a vote after a restart
    (ABORTED, "vote_commit", ABORTED, ("answer",)),     # late: it is prepared, tell it now
    (ABORTED, "vote_abort", ABORTED, ()),
], final=(COMMITTED, ABORTED))

_APPLY = ("cancel_ask_timer", "log_commit", "send_ack")
_ROLLBACK = ("cancel_ask_timer", "log_abort", "send_ack")

PARTICIPANT_TABLE = Table("2pc participant", INIT, [
    (INIT, "prepare_ok", "prepared", ("log_prepared", "lock", "send_vote_commit", "start_ask_timer")),
    (INIT, "prepare_fail", ABORTED, ("log_abort", "send_vote_abort")),
    (INIT, "global_abort", ABORTED, ("log_abort", "send_ack")),
    (INIT, "peer_query", ABORTED, ("log_abort", "answer")),   # never voted: free to abort
    ("prepared", "prepare", "prepared", ("send_vote_commit",)),
    ("prepared", "global_commit", COMMITTED, _APPLY),
    ("prepared", "global_abort", ABORTED, _ROLLBACK),
    ("prepared", "ask_timeout", "prepared", ("ask_decision", "start_ask_timer")),
    ("prepared", "recover", "prepared", ("lock", "ask_decision", "start_ask_timer")),
    ("prepared", "peer_query", "prepared", ()),                # uncertain too: cannot help
    ("prepared", "flush", "prepared", ("flush_prepared",)),
    (COMMITTED, "global_commit", COMMITTED, ("send_ack",)),
    (COMMITTED, "prepare", COMMITTED, ()),
    (COMMITTED, "peer_query", COMMITTED, ("answer",)),
    (COMMITTED, "recover", COMMITTED, ()),
    (ABORTED, "global_abort", ABORTED, ("send_ack",)),
    (ABORTED, "prepare", ABORTED, ("send_vote_abort",)),
    (ABORTED, "peer_query", ABORTED, ("answer",)),
    (ABORTED, "recover", ABORTED, ()),
    (ABORTED, "flush", ABORTED, ("flush_prepared",)),
    (COMMITTED, "flush", COMMITTED, ("flush_prepared",)),
], final=(COMMITTED, ABORTED))


class TwoPC(CommitCore):
    """Two-phase commit; see the module docstring and docs/twopc.md."""

    name = "twopc"
    message_types = frozenset({"prepare", "vote_commit", "vote_abort", "global_commit",
                               "global_abort", "ack", "decision_req"})
    tunables = TwoPCTunables
    presets = {
        "cooperative": {"cooperative_termination": True},
        "wan": {"vote_timeout": "3s", "resend_interval": "1s", "decision_timeout": "1s"},
    }
    bugs = {
        "decision_not_logged": "the coordinator sends GLOBAL-COMMIT without logging it first; "
                               "after a crash and restart it finds the transaction undecided and "
                               "aborts what participants may already have committed",
        "vote_before_durable": "a participant votes VOTE-COMMIT before its redo record is durable "
                               "(the write follows flush_delay later); a crash in that window loses "
                               "the record and the participant cannot apply the commit",
    }
    bug_breaks = {
        "decision_not_logged": ("no_commit_after_abort", "atomicity", "conservation"),
        "vote_before_durable": ("conservation", "nonblocking"),
    }
    coordinator_table = COORDINATOR_TABLE
    participant_table = PARTICIPANT_TABLE
    msg_ask, msg_vote, msg_refuse = "prepare", "vote_commit", "vote_abort"
    msg_commit, msg_abort = "global_commit", "global_abort"
    ack_timer_field, ask_timer_field = "resend_interval", "decision_timeout"
    undecided = frozenset({"prepared"})
    replay_states = {"begin": "wait", "prepared": "prepared"}

    def start(self) -> None:
        self.unflushed: dict[str, dict[str, Any]] = {}   # bug vote_before_durable: records not yet written
        super().start()

    # -- coordinator -------------------------------------------------------------------------
    def act_log_decision(self, t: Txn, src: str | None) -> None:
        if t.state == COMMITTED and self.has_bug("decision_not_logged"):
            self.ctx.trace("commit", txn=t.id, role=self.role, decision="commit")
            return
        super().act_log_decision(t, src)

    def act_send_decision(self, t: Txn, src: str | None) -> None:
        for p in t.participants:
            if p not in t.acks:
                self.ctx.send(p, f"global_{self.decision(t)}", {"txn": t.id})

    # -- participant ------------------------------------------------------------------------------
    def on_participant_decision_req(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if self.config.cooperative_termination:
            self.step(t, "peer_query", src)

    def timer_flush(self, t: Txn) -> None:
        self.step(t, "flush")

    # -- participant: actions ------------------------------------------------------------------
    def act_log_prepared(self, t: Txn, src: str | None) -> None:
        rec = {"deltas": t.deltas, "participants": t.participants, "coordinator": t.coordinator}
        if self.has_bug("vote_before_durable"):
            # The bug: the record waits in memory for a later flush; the vote leaves now.
            self.unflushed[t.id] = rec
            self.ctx.set_timer(f"flush:{t.id}", self.config.flush_delay)
        else:
            self.log("prepared", t, **rec)

    def act_flush_prepared(self, t: Txn, src: str | None) -> None:
        rec = self.unflushed.pop(t.id, None)
        if rec is None:
            return
        # Written late, the record must still come before the outcome in the log order a
        # replay reads, so a late flush re-writes the outcome after it.
        self.log("prepared", t, **rec)
        if t.state in (COMMITTED, ABORTED):
            self.log("commit" if t.state == COMMITTED else "abort", t)

    def act_cancel_ask_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"ask:{t.id}")

    def resends_decisions(self) -> bool:
        return self.role == COORDINATOR

    def asks_peers(self) -> bool:
        return self.config.cooperative_termination
