"""What 2PC and 3PC share: roles, sharding, the bank, the write-ahead log, client handling
and table stepping. 3PC is 2PC's tables and messages changed, not a second bank.

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

from nodes.protocols.core import Core, Tunables, role_names
from nodes.protocols.fsm import IllegalTransition, Table, combined_mermaid

COORDINATOR, PARTICIPANT = "coordinator", "participant"
INIT, COMMITTED, ABORTED = "init", "committed", "aborted"
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
