"""What 2PC and 3PC share: roles, sharding, the bank, the write-ahead log, client handling,
table stepping, and the voting round (asking, voting, acks, questions about the outcome).
3PC is 2PC's tables and messages changed, not a second bank.

Roles come from the node specs: the node with ``role: coordinator`` runs
transactions; every ``role: participant`` node is a resource manager holding
accounts. (A lab without roles: the first node by name coordinates, the rest
participate.) Account ``i`` lives on participant ``i mod P``, participants
sorted by name, so every node computes the same owner without asking. Each
participant initialises its own accounts to ``initial_balance`` on its very
first start (``accounts`` and ``initial_balance`` are tunables, read from the
scenario's ``config``) and makes that durable before anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nodes.protocols.core import Core, NodesError, Tunables, role_names
from nodes.protocols.fsm import IllegalTransition, Table, combined_mermaid

COORDINATOR, PARTICIPANT = "coordinator", "participant"
INIT, WAIT, COMMITTED, ABORTED = "init", "wait", "committed", "aborted"
WAL = "wal"

Deltas = list[list[int]]     # [[account, signed amount], ...] (lists: they cross msgpack)


# -- who does what -----------------------------------------------------------------------------

def roles(nodes: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """(coordinator, participants sorted by name) from the lab's node specs."""
    names = sorted(nodes)
    coords = [n for n in names if COORDINATOR in role_names(nodes[n].get("role"))]
    parts = [n for n in names if PARTICIPANT in role_names(nodes[n].get("role"))]
    coordinator = coords[0] if coords else names[0]
    if not parts:
        parts = [n for n in names if n != coordinator]
    return coordinator, parts


def txn_id(op: Mapping[str, Any]) -> str | None:
    """The transaction a client's transfer runs as: ``<client>.<seq>``, so that a retried op
    finds its transaction again (and the checkers can tie a client's answer to it)."""
    if "client" in op and "seq" in op:
        return f"{op['client']}.{op['seq']}"
    return None


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
    pending_acks: set[str] | None = None    # elected: uncertain peers sent PreCommit, not yet acked

    @property
    def mine(self) -> Deltas:
        """A participant's own changes."""
        return next(iter(self.deltas.values()), [])


# -- tunables ------------------------------------------------------------------------------

def tunable(default: Any, unit: str, doc: str) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc})


@dataclass(frozen=True)
class BankTunables(Tunables):
    accounts: int = tunable(6, "count", "accounts in the bank, spread over the participants (account i on "
                       "participant i mod P); the transfer workload must use the same count")
    initial_balance: int = tunable(100, "count", "each account's balance on a participant's first start; "
                              "the conservation check expects accounts x initial_balance at the end")
    vote_timeout: float = tunable(1.0, "s", "coordinator: how long it waits for every vote before it aborts. "
                             "Shorter aborts sooner when a participant is slow or down; too short "
                             "aborts transactions a slow link would have committed")


# -- the shared core -----------------------------------------------------------------------

class CommitCore(Core):
    """Roles, bank, write-ahead log, client handling, table stepping, and the handling of the
    voting round and of outcomes that 2PC and 3PC share, for 2PC and 3PC.

    Subclasses give ``coordinator_table``, ``participant_table``, the message
    types, the names of the shared round's messages (``msg_*``), and
    ``act_<action>`` methods for the actions of their own.

    A message is handled by ``on_<role>_<type>`` when the core has one; otherwise,
    when its type is an event of this role's table, it simply steps the table
    (a DoCommit, say). Anything else is bad input: dropped, counted, traced.
    """

    coordinator_table: ClassVar[Table]
    participant_table: ClassVar[Table]
    # The shared round, per protocol: what the coordinator asks (2PC "prepare", 3PC
    # "can_commit"), a participant's yes and no, and the two outcomes as messages.
    msg_ask: ClassVar[str]
    msg_vote: ClassVar[str]
    msg_refuse: ClassVar[str]
    msg_commit: ClassVar[str]
    msg_abort: ClassVar[str]
    # Config fields (seconds) of the coordinator's ack timer and a participant's ask timer.
    ack_timer_field: ClassVar[str]
    ask_timer_field: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The shared round's handlers and actions, under the names of the protocol's own
        messages, so its tables read in its own words: 2PC's ``on_coordinator_vote_commit``
        and ``act_send_prepare``, 3PC's ``on_coordinator_yes`` and ``act_send_can_commit``."""
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "msg_ask"):
            return
        for name, fn in ((f"on_coordinator_{cls.msg_vote}", CommitCore.on_coordinator_vote),
                         (f"on_coordinator_{cls.msg_refuse}", CommitCore.on_coordinator_refusal),
                         (f"on_participant_{cls.msg_ask}", CommitCore.on_participant_ask),
                         (f"act_send_{cls.msg_ask}", CommitCore.act_send_ask),
                         (f"act_send_{cls.msg_vote}", CommitCore.act_send_vote),
                         (f"act_send_{cls.msg_refuse}", CommitCore.act_send_refusal)):
            if not hasattr(cls, name):
                setattr(cls, name, fn)
    # participant states that hold locks without knowing the outcome
    undecided: ClassVar[frozenset[str]] = frozenset()
    default_checks = ("atomicity", "conservation", "no_commit_after_abort", "nonblocking")
    node_roles = (COORDINATOR, PARTICIPANT)

    @classmethod
    def check_nodes(cls, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """One coordinator (named, or the first node when no node names a role) and at least
        one participant besides it; no node both."""
        super().check_nodes(nodes)
        named = [n for n in sorted(nodes) if role_names(nodes[n].get("role"))]
        coords = [n for n in sorted(nodes) if COORDINATOR in role_names(nodes[n].get("role"))]
        if named and len(coords) != 1:
            raise NodesError(f"{cls.name} needs exactly one node with role coordinator, "
                             f"found {len(coords)}" + (f" ({', '.join(coords)})" if coords else ""),
                             coords[1] if len(coords) > 1 else None)
        if coords and PARTICIPANT in role_names(nodes[coords[0]].get("role")):
            raise NodesError("a node is either the coordinator or a participant, not both", coords[0])
        if not roles(nodes)[1]:
            raise NodesError(f"{cls.name} needs at least one participant besides the coordinator")

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
        if handler is None and self.role != "none" and type in self.table().events:
            handler = self._step_on_message(type)
        if not isinstance(tid, str) or handler is None:
            self._bad_input(src, type, "malformed or not for this role")
            return
        try:
            handler(src, self.txn(tid), body)
        except IllegalTransition as e:
            self._bad_input(src, type, str(e), txn=tid, state=e.state, event=e.event)

    def _step_on_message(self, type: str) -> Callable[[str, Txn, dict[str, Any]], None]:
        def step(src: str, t: Txn, body: dict[str, Any]) -> None:
            self.step(t, type, src)
        return step

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
        tid = txn_id(op) or f"{self.ctx.node}.{len(self.txns) + 1}"
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

    # -- the voting round, both protocols ----------------------------------------------------------
    def on_coordinator_vote(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        """A participant's yes: the last one moves the table on."""
        if t.state == INIT:
            self.ctx.send(src, self.msg_abort, {"txn": t.id})   # never begun (or forgotten): presumed abort
            return
        t.votes.add(src)
        last = t.state == WAIT and t.votes >= set(t.participants)
        self.step(t, f"last_{self.msg_vote}" if last else self.msg_vote, src)

    def on_coordinator_refusal(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state != INIT:
            self.step(t, self.msg_refuse, src)

    def on_coordinator_ack(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT or t.ended:
            return
        t.acks.add(src)
        last = t.acks >= set(t.participants) and self.table().allows(t.state, "last_ack")
        self.step(t, "last_ack" if last else "ack", src)

    def on_coordinator_decision_req(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        if t.state == INIT:
            # Presumed abort: a transaction the log does not know never got a commit decision.
            self.ctx.send(src, self.msg_abort, {"txn": t.id})
            return
        self.step(t, "decision_req", src)

    def timer_vote(self, t: Txn) -> None:
        self.step(t, "vote_timeout")

    def timer_ack(self, t: Txn) -> None:
        self.step(t, "ack_timeout")

    def timer_ask(self, t: Txn) -> None:
        self.step(t, "ask_timeout")

    def act_send_ask(self, t: Txn, src: str | None) -> None:
        for p in t.participants:
            self.ctx.send(p, self.msg_ask, {"txn": t.id, "deltas": t.deltas[p],
                                            "participants": t.participants})

    def act_start_ack_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"ack:{t.id}", getattr(self.config, self.ack_timer_field))

    def act_cancel_ack_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.cancel_timer(f"ack:{t.id}")

    def act_answer(self, t: Txn, src: str | None) -> None:
        """Tell ``src`` the outcome we know."""
        if src is not None:
            self.ctx.send(src, self.msg_commit if t.state == COMMITTED else self.msg_abort, {"txn": t.id})

    def on_participant_ask(self, src: str, t: Txn, body: dict[str, Any]) -> None:
        """The coordinator asks for a vote: a first time takes the promise (or refuses it)."""
        if t.state != INIT:
            self.step(t, self.msg_ask, src)
            return
        t.coordinator, t.participants = src, list(body.get("participants", []))
        t.deltas = {self.ctx.node: body.get("deltas", [])}
        why = self.bank.refusal(t.id, t.mine)
        if why is not None:
            self.ctx.trace("log", msg=f"vote {self.msg_refuse.replace('vote_', '')}", txn=t.id, why=why)
        self.step(t, f"{self.msg_ask}_ok" if why is None else f"{self.msg_ask}_fail", src)

    def act_send_vote(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, self.msg_vote, {"txn": t.id})

    def act_send_refusal(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, self.msg_refuse, {"txn": t.id})

    def act_send_ack(self, t: Txn, src: str | None) -> None:
        self.ctx.send(t.coordinator or src, "ack", {"txn": t.id})

    def act_start_ask_timer(self, t: Txn, src: str | None) -> None:
        self.ctx.set_timer(f"ask:{t.id}", getattr(self.config, self.ask_timer_field))

    def asks_peers(self) -> bool:
        """Whether an undecided participant asks its peers too, not only the coordinator."""
        return True

    def act_ask_decision(self, t: Txn, src: str | None) -> None:
        peers = self.peers(t) if self.asks_peers() else []
        for dst in [t.coordinator or self.coordinator, *peers]:
            self.ctx.send(dst, "decision_req", {"txn": t.id})
