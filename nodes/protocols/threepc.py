"""Three-phase commit (Skeen) over the same sharded bank as 2PC.

CanCommit -> YES/NO (a YES is backed by a durable record and locks, as 2PC's
vote is: a promise a concurrent transfer could break is no promise), then
PreCommit -> ACK once every vote was YES, then DoCommit. The extra round
buys the rule that makes 3PC non-blocking when nodes only crash: *no one
commits while anyone is still uncertain*, so a participant's state tells the
survivors what the coordinator could have decided.

Timeouts, per state:

* coordinator in ``wait`` (votes): abort. In ``precommit`` (acks): commit --
  every participant voted YES; one that missed PreCommit learns on recovery.
* participant in ``ready`` (voted YES, uncertain) or ``precommitted``: the
  coordinator is lost; run the termination protocol. The new coordinator is
  the participant lowest by name among those that answer a STATE-REQ and did
  not restart since voting; it collects states and decides: any precommitted
  -> commit, all uncertain -> abort (any committed/aborted answer is simply
  adopted). Alone, that is the per-state rule: precommitted commits, ready
  aborts.
* a participant that restarted while undecided does not decide: it may have
  missed messages while it was down, so it asks the coordinator and its peers
  until one tells it the outcome.

Under a network partition the rule is unsafe, and that is the lesson of
``topologies/3pc-partition.yaml``: the side that saw PreCommit commits, the
side that did not aborts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodes.protocols.commit import (
    ABORTED,
    COMMITTED,
    COORDINATOR,
    INIT,
    WAIT,
    BankTunables,
    CommitCore,
    Txn,
    tunable,
)
from nodes.protocols.core import ConfigValueError
from nodes.protocols.fsm import Table

READY, PRECOMMITTED = "ready", "precommitted"


@dataclass(frozen=True)
class ThreePCTunables(BankTunables):
    vote_timeout: float = tunable(0.5, "s", "coordinator: how long it waits for every CanCommit answer "
                             "before it aborts. Must stay well below ready_timeout, or a participant "
                             "may give up on a coordinator that is about to send PreCommit")
    ack_timeout: float = tunable(0.5, "s", "coordinator: how long it waits for PreCommit acks before it "
                            "commits anyway (every vote was YES)")
    ready_timeout: float = tunable(1.0, "s", "participant: how long it waits, having voted YES, for "
                              "PreCommit or Abort before it starts the termination protocol. Shorter "
                              "unblocks sooner after a coordinator crash; too short terminates "
                              "transactions a slow coordinator would have finished")
    precommit_timeout: float = tunable(1.0, "s", "participant: how long it waits in precommitted for "
                                  "DoCommit before it starts the termination protocol")
    termination_timeout: float = tunable(0.2, "s", "termination protocol: how long a round collects peer "
                                    "states (and, for a non-elected participant, half the time it "
                                    "waits for the elected one's decision). Must exceed a round trip")
    ask_interval: float = tunable(0.5, "s", "a participant that restarted undecided asks the coordinator "
                             "and its peers for the outcome this often")

    def __post_init__(self) -> None:
        # Termination is safe only if a participant never gives up on a coordinator that is
        # still collecting votes: its PreCommit could then reach some participants and not others.
        if self.ready_timeout <= self.vote_timeout:
            raise ConfigValueError("ready_timeout", f"must be longer than vote_timeout "
                                   f"({self.ready_timeout:g}s <= {self.vote_timeout:g}s)")
        if self.termination_timeout <= 0:
            raise ConfigValueError("termination_timeout", "must be above 0")


COORDINATOR_TABLE = Table("3pc coordinator", INIT, [
    (INIT, "begin", WAIT, ("log_begin", "send_can_commit", "start_vote_timer")),
    (WAIT, "yes", WAIT, ()),
    (WAIT, "last_yes", "precommit", ("cancel_vote_timer", "log_precommit", "send_pre_commit",
                                     "start_ack_timer")),
    (WAIT, "no", ABORTED, ("cancel_vote_timer", "log_decision", "send_abort", "reply_client")),
    (WAIT, "vote_timeout", ABORTED, ("log_decision", "send_abort", "reply_client")),
    (WAIT, "recover", ABORTED, ("log_decision", "send_abort")),
    (WAIT, "decision_req", WAIT, ()),
    ("precommit", "ack", "precommit", ()),
    ("precommit", "last_ack", COMMITTED, ("cancel_ack_timer", "log_decision", "send_do_commit",
                                          "reply_client")),
    ("precommit", "ack_timeout", COMMITTED, ("log_decision", "send_do_commit", "reply_client")),
    # PreCommit may have died with the process, after its log record: the participants may
    # have terminated with abort since. Ask them; an outcome one of them knows is the outcome.
    ("precommit", "recover", "precommit", ("ask_outcome", "start_ask_timer")),
    ("precommit", "recover_unilateral", COMMITTED, ("log_decision", "send_do_commit")),  # bug only
    ("precommit", "ask_timeout", "precommit", ("ask_outcome", "start_ask_timer")),
    ("precommit", "learn_commit", COMMITTED, ("stop_asking", "log_decision", "send_do_commit",
                                              "reply_client")),
    ("precommit", "learn_abort", ABORTED, ("stop_asking", "log_decision", "send_abort", "reply_client")),
    ("precommit", "yes", "precommit", ()),
    ("precommit", "decision_req", "precommit", ()),
    (COMMITTED, "decision_req", COMMITTED, ("answer",)),
    (ABORTED, "decision_req", ABORTED, ("answer",)),
    (COMMITTED, "ack", COMMITTED, ()),
    (COMMITTED, "yes", COMMITTED, ()),
    (ABORTED, "yes", ABORTED, ("answer",)),
    (ABORTED, "no", ABORTED, ()),
], final=(COMMITTED, ABORTED))

_COMMIT = ("stop_timers", "log_commit")
_ABORT = ("stop_timers", "log_abort")
_ASK = ("ask_decision", "start_ask_timer")
_TERMINATE = ("start_termination",)

PARTICIPANT_TABLE = Table("3pc participant", INIT, [
    (INIT, "can_commit_ok", READY, ("log_ready", "lock", "send_yes", "start_wait_timer")),
    (INIT, "can_commit_fail", ABORTED, ("log_abort", "send_no")),
    (INIT, "abort", ABORTED, ("log_abort",)),
    # Asked by a peer about a transaction we never voted on: we are free to abort it.
    (INIT, "state_req", ABORTED, ("log_abort", "send_state")),
    (INIT, "decision_req", ABORTED, ("log_abort", "send_state")),
    (READY, "can_commit", READY, ("send_yes",)),
    # From the coordinator, or from a participant elected to terminate: ack whoever sent it.
    (READY, "pre_commit", PRECOMMITTED, ("log_precommitted", "ack_sender", "start_wait_timer")),
    (READY, "abort", ABORTED, _ABORT),
    (READY, "do_commit", COMMITTED, _COMMIT),
    (READY, "timeout", READY, _TERMINATE),
    (READY, "recovered_timeout", READY, _ASK),
    (READY, "ask_timeout", READY, _ASK),
    (READY, "recover", READY, ("lock", *_ASK)),
    (READY, "recover_unilateral", ABORTED, ("log_abort",)),    # only with bug abort_on_recovery
    (READY, "state_req", READY, ("send_state", "join_termination")),
    (READY, "decision_req", READY, ("send_state",)),
    # Elected with someone precommitted: first move the uncertain ones (itself too) to
    # precommitted, then commit (Skeen: nobody commits while anybody is uncertain).
    (READY, "elected_precommit", PRECOMMITTED, ("log_precommitted", "precommit_peers")),
    (READY, "elected_abort", ABORTED, (*_ABORT, "broadcast_decision")),
    (READY, "not_elected", READY, ("await_decision",)),
    (READY, "round_timeout", READY, _TERMINATE),
    (PRECOMMITTED, "pre_commit", PRECOMMITTED, ("ack_sender",)),
    (PRECOMMITTED, "do_commit", COMMITTED, _COMMIT),
    # Someone decided abort (possible only when messages were lost, or under a partition):
    # agreeing with it is the one way left to keep the outcome whole.
    (PRECOMMITTED, "abort", ABORTED, _ABORT),
    (PRECOMMITTED, "timeout", PRECOMMITTED, _TERMINATE),
    (PRECOMMITTED, "recovered_timeout", PRECOMMITTED, _ASK),
    (PRECOMMITTED, "ask_timeout", PRECOMMITTED, _ASK),
    (PRECOMMITTED, "recover", PRECOMMITTED, ("lock", *_ASK)),
    (PRECOMMITTED, "state_req", PRECOMMITTED, ("send_state", "join_termination")),
    (PRECOMMITTED, "decision_req", PRECOMMITTED, ("send_state",)),
    (PRECOMMITTED, "elected_precommit", PRECOMMITTED, ("precommit_peers",)),
    (PRECOMMITTED, "elected_commit", COMMITTED, (*_COMMIT, "broadcast_decision")),
    (PRECOMMITTED, "not_elected", PRECOMMITTED, ("await_decision",)),
    (PRECOMMITTED, "round_timeout", PRECOMMITTED, _TERMINATE),
    (COMMITTED, "do_commit", COMMITTED, ()),
    (COMMITTED, "pre_commit", COMMITTED, ("send_state",)),
    (COMMITTED, "can_commit", COMMITTED, ()),
    (COMMITTED, "state_req", COMMITTED, ("send_state",)),
    (COMMITTED, "decision_req", COMMITTED, ("send_state",)),
    (ABORTED, "can_commit", ABORTED, ("send_no",)),
    (ABORTED, "pre_commit", ABORTED, ("send_state",)),
    (ABORTED, "abort", ABORTED, ()),
    (ABORTED, "state_req", ABORTED, ("send_state",)),
    (ABORTED, "decision_req", ABORTED, ("send_state",)),
], final=(COMMITTED, ABORTED))


class ThreePC(CommitCore):
    """Three-phase commit with Skeen's termination protocol; see docs/threepc.md."""

    name = "threepc"
    message_types = frozenset({"can_commit", "yes", "no", "pre_commit", "ack", "do_commit", "abort",
                               "state_req", "decision_req", "state"})
    tunables = ThreePCTunables
    presets = {
        "wan": {"vote_timeout": "1s", "ack_timeout": "1s", "ready_timeout": "3s",
                "precommit_timeout": "3s", "termination_timeout": "500ms"},
    }
    bugs = {
        "abort_on_recovery": "a participant that restarts uncertain (voted YES, no outcome) aborts "
                             "on its own instead of asking: 3PC does not allow independent recovery, "
                             "and the others may have committed meanwhile",
        "commit_on_recovery": "a coordinator that restarts in precommit commits on its own, as if "
                              "its PreCommits had left with the log record; killed between the two, "
                              "it commits what the participants, never precommitted, terminated "
                              "with abort",
    }
    bug_breaks = {"abort_on_recovery": ("atomicity", "no_commit_after_abort", "conservation"),
                  "commit_on_recovery": ("atomicity", "no_commit_after_abort")}
    coordinator_table = COORDINATOR_TABLE
    participant_table = PARTICIPANT_TABLE
    msg_ask, msg_vote, msg_refuse = "can_commit", "yes", "no"
    msg_commit, msg_abort = "do_commit", "abort"
    ack_timer_field, ask_timer_field = "ack_timeout", "ask_interval"
    undecided = frozenset({READY, PRECOMMITTED})
    replay_states = {"begin": WAIT, "precommit": "precommit", "ready": READY,
                     "precommitted": PRECOMMITTED}

    def recover_event(self, t: Txn) -> str:
        if self.role != COORDINATOR and t.state == READY and self.has_bug("abort_on_recovery"):
            return "recover_unilateral"
        if self.role == COORDINATOR and t.state == "precommit" and self.has_bug("commit_on_recovery"):
            return "recover_unilateral"
        return "recover"

    # -- coordinator -------------------------------------------------------------------------
    def _to_all(self, t: Txn, type: str) -> None:
        for p in t.participants:
            self.ctx.send(p, type, {"txn": t.id})

    def act_log_precommit(self, t: Txn, src: str | None) -> None:
        self.log("precommit", t)

    def act_send_pre_commit(self, t: Txn, src: str | None) -> None:
        self._to_all(t, "pre_commit")

    def act_send_do_commit(self, t: Txn, src: str | None) -> None:
        self._to_all(t, "do_commit")

    def act_send_abort(self, t: Txn, src: str | None) -> None:
        self._to_all(t, "abort")

    def act_ask_outcome(self, t: Txn, src: str | None) -> None:
        self._to_all(t, "decision_req")

    def act_stop_asking(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"ask:{t.id}")
        self.ctx.cancel_timer(f"ack:{t.id}")

    def on_coordinator_state(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        """A participant's answer to DECISION-REQ (or to a PreCommit it can no longer take)."""
        if t.state == "precommit" and body.get("state") in (COMMITTED, ABORTED):
            self.step(t, "learn_commit" if body["state"] == COMMITTED else "learn_abort", src)

    # -- participant: messages ------------------------------------------------------------------
    def on_participant_state(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        """A peer's answer to STATE-REQ or DECISION-REQ: adopt an outcome, else note the state."""
        if t.state not in self.undecided:
            return
        state = body.get("state")
        if state == COMMITTED:
            self.step(t, "do_commit", src)
        elif state == ABORTED:
            self.step(t, "abort", src)
        elif state in self.undecided:
            t.reports[src] = (state, bool(body.get("recovered")))

    def on_participant_ack(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        """An uncertain peer took our PreCommit (we were elected): the last one lets us commit."""
        if t.pending_acks is None or t.state != PRECOMMITTED:
            return
        t.pending_acks.discard(src)
        if not t.pending_acks:
            t.pending_acks = None
            self.step(t, "elected_commit")

    # -- participant: timers ---------------------------------------------------------------------
    def timer_wait(self, t: Txn) -> None:
        self.step(t, "recovered_timeout" if t.recovered else "timeout")

    def timer_term(self, t: Txn) -> None:
        if t.pending_acks is not None:
            # An uncertain peer never took our PreCommit: a new round asks everyone again.
            t.pending_acks = None
            self.step(t, "round_timeout")
            return
        if t.awaiting is not None:
            # The elected participant said nothing: take it for dead and hold a new round.
            t.suspects.add(t.awaiting)
            t.awaiting = None
            self.step(t, "round_timeout")
            return
        me = self.ctx.node
        live = {p for p, (_, recovered) in t.reports.items() if not recovered} - t.suspects
        elected = min(live | {me})
        if elected != me:
            t.awaiting = elected
            self.step(t, "not_elected")
            return
        states = {t.state} | {s for s, _ in t.reports.values()}
        if PRECOMMITTED not in states:
            self.step(t, "elected_abort")
            return
        uncertain = sorted(p for p, (s, _) in t.reports.items() if s == READY)
        if t.state == READY or uncertain:
            t.pending_acks = set(uncertain)
            self.step(t, "elected_precommit")
        if not t.pending_acks:
            t.pending_acks = None
            self.step(t, "elected_commit")

    # -- participant: actions ---------------------------------------------------------------------
    def act_log_ready(self, t: Txn, src: str | None) -> None:
        self.log("ready", t, deltas=t.deltas, participants=t.participants, coordinator=t.coordinator)

    def act_log_precommitted(self, t: Txn, src: str | None) -> None:
        self.log("precommitted", t)

    def act_ack_sender(self, t: Txn, src: str | None) -> None:
        self.ctx.send(src or t.coordinator or self.coordinator, "ack", {"txn": t.id})

    def act_send_state(self, t: Txn, src: str | None) -> None:
        if src is not None:
            self.ctx.send(src, "state", {"txn": t.id, "state": t.state, "recovered": t.recovered})

    def act_start_wait_timer(self, t: Txn, src: str | None) -> None:
        after = self.config.ready_timeout if t.state == READY else self.config.precommit_timeout
        self.ctx.set_timer(f"wait:{t.id}", after)

    def act_stop_timers(self, t: Txn, src: str | None) -> None:
        for kind in ("wait", "ask", "term"):
            self.ctx.cancel_timer(f"{kind}:{t.id}")
        t.terminating, t.awaiting, t.pending_acks = False, None, None

    def act_start_termination(self, t: Txn, src: str | None) -> None:
        if t.recovered:
            self.act_ask_decision(t, src)
            self.act_start_ask_timer(t, src)
            return
        t.terminating, t.awaiting, t.reports = True, None, {}
        self.ctx.trace("log", msg="termination", txn=t.id, suspects=sorted(t.suspects))
        for p in self.peers(t):
            self.ctx.send(p, "state_req", {"txn": t.id})
        self.ctx.set_timer(f"term:{t.id}", self.config.termination_timeout)

    def act_join_termination(self, t: Txn, src: str | None) -> None:
        """A peer lost the coordinator too: join in now rather than at our own timeout."""
        if not t.terminating and not t.recovered:
            self.ctx.cancel_timer(f"wait:{t.id}")
            self.act_start_termination(t, src)

    def act_await_decision(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"term:{t.id}", 2 * self.config.termination_timeout)

    def act_precommit_peers(self, t: Txn, src: str | None) -> None:
        """Elected: PreCommit to the uncertain peers; their acks (or the round's end) follow."""
        self.ctx.trace("log", msg="termination precommit", txn=t.id, peers=sorted(t.pending_acks or ()))
        for p in sorted(t.pending_acks or ()):
            self.ctx.send(p, "pre_commit", {"txn": t.id})
        self.ctx.set_timer(f"term:{t.id}", self.config.termination_timeout)

    def act_broadcast_decision(self, t: Txn, src: str | None) -> None:
        self.ctx.trace("log", msg="termination decided", txn=t.id, decision=self.decision(t))
        for p in self.peers(t):
            self.ctx.send(p, "do_commit" if t.state == COMMITTED else "abort", {"txn": t.id})
