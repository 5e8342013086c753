"""Two-phase commit over a sharded bank: the coordinator and its resource managers.

Roles come from the node specs: the node with ``role: coordinator`` runs
transactions; every ``role: participant`` node is a resource manager holding
accounts. (A lab without roles: the first node by name coordinates, the rest
participate.) Account ``i`` lives on participant ``i mod P``, participants
sorted by name, so every node computes the same owner without asking. Each
participant initialises its own accounts to ``initial_balance`` on its very
first start (``accounts`` and ``initial_balance`` are tunables, read from the
scenario's ``config``) and makes that durable before anything else.

A transfer ``{"f": "transfer", "from": a, "to": b, "amount": n}`` goes to the
coordinator. It sends PREPARE to the owners of ``a`` and ``b``; each votes
VOTE-COMMIT once its redo record is durable and the accounts are locked
(no-wait locking: an account locked by another transaction means VOTE-ABORT,
as does a balance that cannot pay), else VOTE-ABORT. All commit votes ->
GLOBAL-COMMIT, any abort or a vote timeout -> GLOBAL-ABORT; participants apply
or drop the change, release the locks and ACK. Every step recovery needs is in
a write-ahead log (``ctx.storage`` log ``wal``) before the message that
depends on it leaves.

This module also holds :class:`CommitCore`, the machinery 2PC and 3PC share
(roles, sharding, the bank, the log, client handling, table stepping): 3PC is
2PC's tables and messages changed, not a second bank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nodes.protocols.core import Core, Tunables
from nodes.protocols.fsm import IllegalTransition, Table, combined_mermaid

COORDINATOR, PARTICIPANT = "coordinator", "participant"
INIT, COMMITTED, ABORTED = "init", "committed", "aborted"
WAL = "wal"

Deltas = list[list[int]]     # [[account, signed amount], ...] (lists: they cross msgpack)


# -- who does what -----------------------------------------------------------------------------

def roles(nodes: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """(coordinator, participants sorted by name) from the lab's node specs."""
    names = sorted(nodes)
    coords = [n for n in names if nodes[n].get("role") == COORDINATOR]
    parts = [n for n in names if nodes[n].get("role") == PARTICIPANT]
    coordinator = coords[0] if coords else names[0]
    if not parts:
        parts = [n for n in names if n != coordinator]
    return coordinator, parts


def owner(account: int, participants: list[str]) -> str:
    """The participant holding ``account``: participant ``account mod P``."""
    return participants[account % len(participants)]


def split_transfer(op: Mapping[str, Any], participants: list[str], accounts: int) -> dict[str, Deltas]:
    """A transfer's changes, grouped by the participant that must make them.

    Raises ValueError for a transfer that is not well formed.
    """
    src, dst, amount = op.get("from"), op.get("to"), op.get("amount")
    for name, v in (("from", src), ("to", dst)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < accounts:
            raise ValueError(f"{name} must be an account 0..{accounts - 1}, got {v!r}")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a whole number > 0, got {amount!r}")
    if src == dst:
        raise ValueError("from and to are the same account")
    out: dict[str, Deltas] = {}
    for acct, delta in ((src, -amount), (dst, amount)):
        out.setdefault(owner(acct, participants), []).append([acct, delta])
    return dict(sorted(out.items()))


class Bank:
    """A participant's accounts and locks (volatile: rebuilt from the log on restart)."""

    def __init__(self, balances: Mapping[int, int]) -> None:
        self.balances = dict(balances)
        self.locks: dict[int, str] = {}         # account -> txn holding it

    def refusal(self, txn: str, deltas: Deltas) -> str | None:
        """Why ``txn`` cannot promise ``deltas`` now, or None if it can."""
        for acct, delta in deltas:
            if acct not in self.balances:
                return f"account {acct} is not here"
            holder = self.locks.get(acct)
            if holder is not None and holder != txn:
                return f"account {acct} is locked by {holder}"
            if self.balances[acct] + delta < 0:
                return f"insufficient balance in account {acct}"
        return None

    def lock(self, txn: str, deltas: Deltas) -> None:
        for acct, _ in deltas:
            self.locks[acct] = txn

    def unlock(self, txn: str) -> None:
        for acct in [a for a, t in self.locks.items() if t == txn]:
            del self.locks[acct]

    def apply(self, deltas: Deltas) -> None:
        for acct, delta in deltas:
            self.balances[acct] += delta

    def snapshot(self) -> dict[str, int]:
        """Balances with string keys, as final.json and the trace carry them."""
        return {str(a): b for a, b in sorted(self.balances.items())}


@dataclass
class Txn:
    """What one node knows of one transaction."""

    id: str
    state: str = INIT
    coordinator: str | None = None
    participants: list[str] = field(default_factory=list)
    deltas: dict[str, Deltas] = field(default_factory=dict)   # coordinator: all; participant: own only
    votes: set[str] = field(default_factory=set)
    acks: set[str] = field(default_factory=set)
    client: str | None = None               # the client to answer (volatile: lost on a crash)
    recovered: bool = False                 # restarted while undecided: may have missed messages
    ended: bool = False
    # 3PC termination protocol (volatile)
    reports: dict[str, tuple[str, bool]] = field(default_factory=dict)   # peer -> (state, recovered)
    terminating: bool = False
    awaiting: str | None = None             # the elected termination coordinator we wait for
    suspects: set[str] = field(default_factory=set)

    @property
    def mine(self) -> Deltas:
        """A participant's own changes."""
        return next(iter(self.deltas.values()), [])


# -- tunables ------------------------------------------------------------------------------

def _f(default: Any, unit: str, doc: str) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc})


@dataclass(frozen=True)
class BankTunables(Tunables):
    accounts: int = _f(6, "count", "accounts in the bank, spread over the participants (account i on "
                       "participant i mod P); the transfer workload must use the same count")
    initial_balance: int = _f(100, "count", "each account's balance on a participant's first start; "
                              "the conservation check expects accounts x initial_balance at the end")
    vote_timeout: float = _f(1.0, "s", "coordinator: how long it waits for every vote before it aborts. "
                             "Shorter aborts sooner when a participant is slow or down; too short "
                             "aborts transactions a slow link would have committed")


@dataclass(frozen=True)
class TwoPCTunables(BankTunables):
    resend_interval: float = _f(0.5, "s", "coordinator: how often it re-sends its decision to "
                                "participants that have not acknowledged it. Shorter finishes sooner "
                                "after a participant restarts; costs messages")
    decision_timeout: float = _f(0.5, "s", "participant: how long it waits in prepared before it asks "
                                 "for the decision, and then how often it asks again")
    cooperative_termination: bool = _f(False, "bool", "a prepared participant that gets no decision "
                                       "also asks its peers: one that has decided tells it, one that "
                                       "has not voted aborts and tells it. Shortens blocking when the "
                                       "coordinator reached some participants; cannot help when every "
                                       "participant is prepared and the coordinator is gone")
    flush_delay: float = _f(0.1, "s", "only with bug vote_before_durable: how long the redo record "
                            "stays in memory after the vote has been sent (a lazy group commit)")


# -- the shared core -----------------------------------------------------------------------

class CommitCore(Core):
    """Roles, bank, write-ahead log, client handling and table stepping for 2PC and 3PC.

    Subclasses give ``coordinator_table``, ``participant_table``, the message
    types, and ``act_<action>`` methods for their tables' actions.
    """

    coordinator_table: ClassVar[Table]
    participant_table: ClassVar[Table]
    # participant states that hold locks without knowing the outcome
    undecided: ClassVar[frozenset[str]] = frozenset()
    default_checks = ("atomicity", "conservation", "no_commit_after_abort", "nonblocking")

    # -- start and recovery ----------------------------------------------------------------
    def start(self) -> None:
        self.coordinator, self.participants = roles(self.ctx.nodes)
        self.role = COORDINATOR if self.ctx.node == self.coordinator else (
            PARTICIPANT if self.ctx.node in self.participants else "none")
        self.txns: dict[str, Txn] = {}
        self.illegal = 0            # bad input dropped (counted, per DESIGN.md rule 6)
        self.bank = Bank({})
        if self.role == PARTICIPANT:
            self.bank = Bank(self._initial_balances())
        self.replay(self.ctx.storage.log_read(WAL))
        for t in list(self.txns.values()):
            decided = t.state in (COMMITTED, ABORTED)
            if t.ended or t.state == INIT or (decided and not self.resends_decisions()):
                continue
            t.recovered = not decided
            self.trace_state(t, recovered=True)
            self.step(t, self.recover_event(t))

    def _initial_balances(self) -> dict[int, int]:
        stored = self.ctx.storage.get("initial")
        if stored is None:
            stored = {str(a): self.config.initial_balance for a in range(self.config.accounts)
                      if owner(a, self.participants) == self.ctx.node}
            self.ctx.storage.put("initial", stored)
            self.ctx.trace("apply", init=True, balances=stored)
        return {int(a): b for a, b in stored.items()}

    def replay(self, records: list[dict[str, Any]]) -> None:
        """Rebuild transactions and balances from the log (subclasses map record kinds)."""
        for rec in records:
            t = self.txns.get(rec["txn"])
            if t is None:
                t = self.txns[rec["txn"]] = Txn(rec["txn"])
            k = rec["k"]
            if "deltas" in rec:
                t.deltas = rec["deltas"]
                t.participants = rec.get("participants", [])
                t.coordinator = rec.get("coordinator")
            if k == "end":
                t.ended = True
            elif k == "commit" or (k == "decision" and rec["d"] == "commit"):
                t.state = COMMITTED
                if self.role == PARTICIPANT:
                    self.bank.apply(t.mine)
            elif k == "abort" or (k == "decision" and rec["d"] == "abort"):
                t.state = ABORTED
            else:
                t.state = self.replay_states[k]

    replay_states: ClassVar[Mapping[str, str]] = {}

    def resends_decisions(self) -> bool:
        """Whether a restarted node must push decisions it already made (2PC's coordinator)."""
        return False

    def recover_event(self, t: Txn) -> str:
        return "recover"

    def log(self, kind: str, t: Txn, **extra: Any) -> None:
        self.ctx.storage.log_append(WAL, [{"k": kind, "txn": t.id, **extra}])

    # -- table stepping -----------------------------------------------------------------------
    def table(self) -> Table:
        return self.coordinator_table if self.role == COORDINATOR else self.participant_table

    def step(self, t: Txn, event: str, src: str | None = None) -> None:
        """Take ``event`` through this role's table: change state, trace it, run the actions."""
        tr = self.table().step(t.state, event)
        if tr.target != t.state:
            t.state = tr.target
            self.trace_state(t)
        for action in tr.actions:
            getattr(self, f"act_{action}")(t, src)

    def trace_state(self, t: Txn, **extra: Any) -> None:
        self.ctx.trace("state", txn=t.id, role=self.role, state=t.state, **extra)

    def txn(self, tid: str) -> Txn:
        t = self.txns.get(tid)
        if t is None:
            t = self.txns[tid] = Txn(tid)
        return t

    # -- the world's entry points -----------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        tid = body.get("txn") if isinstance(body, dict) else None
        handler: Callable[[str, Txn, dict[str, Any]], None] | None = getattr(
            self, f"on_{self.role}_{type}", None)
        if not isinstance(tid, str) or handler is None:
            self._bad_input(src, type, "malformed or not for this role")
            return
        try:
            handler(src, self.txn(tid), body)
        except IllegalTransition as e:
            self._bad_input(src, type, str(e), txn=tid, state=e.state, event=e.event)

    def _bad_input(self, src: str, type: str, why: str, **extra: Any) -> None:
        self.illegal += 1
        self.ctx.trace("log", msg="dropped", why=why, peer=src, type=type, **extra)

    def handle_timer(self, name: str) -> None:
        kind, _, tid = name.partition(":")
        t = self.txns.get(tid)
        if t is None:
            return
        try:
            getattr(self, f"timer_{kind}")(t)
        except IllegalTransition as e:
            # A timer the state has outgrown (its cancel raced a transition): harmless.
            self.ctx.trace("log", msg="stale timer", timer=name, state=e.state)

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        f = op.get("f")
        if f == "balances" and self.role == PARTICIPANT:
            self.ctx.reply(client, {"type": "ok", "value": self.bank.snapshot()})
        elif f == "transfer" and self.role == COORDINATOR:
            self.begin_transfer(client, op)
        elif f == "transfer":
            self.ctx.reply(client, {"type": "fail", "error": "not_leader", "leader": self.coordinator})
        else:
            self.ctx.reply(client, {"type": "fail", "error": f"unsupported op {f!r} on a {self.role}"})

    def begin_transfer(self, client: str, op: dict[str, Any]) -> None:
        try:
            deltas = split_transfer(op, self.participants, self.config.accounts)
        except ValueError as e:
            self.ctx.reply(client, {"type": "fail", "error": f"bad transfer: {e}"})
            return
        if "client" in op and "seq" in op:
            tid = f"{op['client']}.{op['seq']}"     # a retried op finds its transaction again
        else:
            tid = f"{self.ctx.node}.{len(self.txns) + 1}"
        t = self.txn(tid)
        t.client = client
        if t.state == INIT:
            t.deltas, t.participants, t.coordinator = deltas, list(deltas), self.ctx.node
            self.step(t, "begin")
        elif t.state in (COMMITTED, ABORTED):
            self.act_reply_client(t, None)

    def status(self) -> dict[str, Any]:
        open_ = [t.id for t in self.txns.values() if t.state in self.undecided]
        return {"role": self.role, "coordinator": self.coordinator, "open": len(open_),
                "illegal": self.illegal}

    @classmethod
    def diagram(cls) -> str:
        """Mermaid text for both roles' tables."""
        return combined_mermaid([(COORDINATOR, cls.coordinator_table),
                                 (PARTICIPANT, cls.participant_table)])

    # -- actions both protocols use ------------------------------------------------------------
    def decision(self, t: Txn) -> str:
        return "commit" if t.state == COMMITTED else "abort"

    def act_log_begin(self, t: Txn, src: str | None) -> None:
        self.log("begin", t, deltas=t.deltas, participants=t.participants, coordinator=self.ctx.node)

    def act_log_decision(self, t: Txn, src: str | None) -> None:
        self.log("decision", t, d=self.decision(t))
        self.ctx.trace("commit", txn=t.id, role=self.role, decision=self.decision(t))

    def act_log_end(self, t: Txn, src: str | None) -> None:
        t.ended = True
        self.log("end", t)

    def act_reply_client(self, t: Txn, src: str | None) -> None:
        if t.client is None:
            return
        if t.state == COMMITTED:
            self.ctx.reply(t.client, {"type": "ok"})
        else:
            self.ctx.reply(t.client, {"type": "fail", "error": "aborted"})
        t.client = None

    def act_start_vote_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"vote:{t.id}", self.config.vote_timeout)

    def act_cancel_vote_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"vote:{t.id}")

    def act_lock(self, t: Txn, src: str | None) -> None:
        self.bank.lock(t.id, t.mine)

    def act_log_commit(self, t: Txn, src: str | None) -> None:
        """Participant: the outcome is durable, then applied and the locks let go."""
        self.log("commit", t)
        self.bank.apply(t.mine)
        self.bank.unlock(t.id)
        self.ctx.trace("commit", txn=t.id, role=self.role, decision="commit")
        self.ctx.trace("apply", txn=t.id, deltas={str(a): d for a, d in t.mine})

    def act_log_abort(self, t: Txn, src: str | None) -> None:
        self.log("abort", t)
        self.bank.unlock(t.id)
        self.ctx.trace("commit", txn=t.id, role=self.role, decision="abort")

    def peers(self, t: Txn) -> list[str]:
        return [p for p in t.participants if p != self.ctx.node]


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
    coordinator_table = COORDINATOR_TABLE
    participant_table = PARTICIPANT_TABLE
    undecided = frozenset({"prepared"})
    replay_states = {"begin": "wait", "prepared": "prepared"}

    def start(self) -> None:
        self.unflushed: dict[str, dict[str, Any]] = {}   # bug vote_before_durable: records not yet written
        super().start()

    # -- coordinator: messages and timers --------------------------------------------------
    def on_coordinator_vote_commit(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT:
            self.ctx.send(src, "global_abort", {"txn": t.id})   # forgotten or never begun: presumed abort
            return
        t.votes.add(src)
        last = t.state == "wait" and t.votes >= set(t.participants)
        self.step(t, "last_vote_commit" if last else "vote_commit", src)

    def on_coordinator_vote_abort(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state != INIT:
            self.step(t, "vote_abort", src)

    def on_coordinator_ack(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT or t.ended:
            return
        t.acks.add(src)
        self.step(t, "last_ack" if t.acks >= set(t.participants) else "ack", src)

    def on_coordinator_decision_req(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT:
            # Presumed abort: a transaction the log does not know never got a commit decision.
            self.ctx.send(src, "global_abort", {"txn": t.id})
            return
        self.step(t, "decision_req", src)

    def timer_vote(self, t: Txn) -> None:
        self.step(t, "vote_timeout")

    def timer_ack(self, t: Txn) -> None:
        self.step(t, "ack_timeout")

    # -- coordinator: actions ----------------------------------------------------------------
    def act_log_decision(self, t: Txn, src: str | None) -> None:
        if t.state == COMMITTED and self.has_bug("decision_not_logged"):
            self.ctx.trace("commit", txn=t.id, role=self.role, decision="commit")
            return
        super().act_log_decision(t, src)

    def act_send_prepare(self, t: Txn, src: str | None) -> None:
        for p in t.participants:
            self.ctx.send(p, "prepare", {"txn": t.id, "deltas": t.deltas[p],
                                         "participants": t.participants})

    def act_send_decision(self, t: Txn, src: str | None) -> None:
        for p in t.participants:
            if p not in t.acks:
                self.ctx.send(p, f"global_{self.decision(t)}", {"txn": t.id})

    def act_start_ack_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"ack:{t.id}", self.config.resend_interval)

    def act_cancel_ack_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"ack:{t.id}")

    def act_answer(self, t: Txn, src: str | None) -> None:
        """Tell ``src`` the outcome we know (coordinator, or a peer in cooperative termination)."""
        if src is not None:
            self.ctx.send(src, f"global_{self.decision(t)}", {"txn": t.id})

    # -- participant: messages and timers ------------------------------------------------------
    def on_participant_prepare(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT:
            t.coordinator, t.participants = src, list(body.get("participants", []))
            t.deltas = {self.ctx.node: body.get("deltas", [])}
            why = self.bank.refusal(t.id, t.mine)
            if why is not None:
                self.ctx.trace("log", msg="vote abort", txn=t.id, why=why)
            self.step(t, "prepare_ok" if why is None else "prepare_fail", src)
        else:
            self.step(t, "prepare", src)

    def on_participant_global_commit(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        self.step(t, "global_commit", src)

    def on_participant_global_abort(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        self.step(t, "global_abort", src)

    def on_participant_decision_req(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if self.config.cooperative_termination:
            self.step(t, "peer_query", src)

    def timer_ask(self, t: Txn) -> None:
        self.step(t, "ask_timeout")

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

    def act_send_vote_commit(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, "vote_commit", {"txn": t.id})

    def act_send_vote_abort(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, "vote_abort", {"txn": t.id})

    def act_send_ack(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, "ack", {"txn": t.id})

    def act_start_ask_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"ask:{t.id}", self.config.decision_timeout)

    def act_cancel_ask_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"ask:{t.id}")

    def act_ask_decision(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or self.coordinator, "decision_req", {"txn": t.id})
        if self.config.cooperative_termination:
            for p in self.peers(t):
                self.ctx.send(p, "decision_req", {"txn": t.id})

    def resends_decisions(self) -> bool:
        return self.role == COORDINATOR
