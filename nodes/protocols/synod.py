"""What single-decree Paxos (``paxos.py``) and Multi-Paxos (``multipaxos.py``) share.

Lamport calls the single-decree core of Paxos "the synod"; Multi-Paxos runs one
synod per log slot with phase 1 done once for all of them. Both cores are built
from the pieces here, so a fix (or a named bug) lands in both at once:

* **Ballots** ``(round, node)``: totally ordered (round first, the node's name
  breaks ties), so two proposers never share one. :class:`Ballots` hands out a
  proposer's ballots, each above every round it has seen, and makes the round
  durable before the ballot's first message leaves, so a restarted proposer
  never reuses one.
* **The acceptor** (:class:`Acceptor`): a promised ballot and, per slot, the
  accepted ``(ballot, value)``. Both go through ``storage`` in the handler that
  changes them, so before the promise or the acceptance leaves the node.
  Single-decree Paxos is slot 0.
* **Phase 1** (:class:`Phase1`): promises for one ballot from distinct
  acceptors and, per slot, the value of the highest ballot any of them
  accepted: what the new ballot must propose.
* **Roles** from the node specs: ``role`` names any of ``proposer``,
  ``acceptor``, ``learner``; a node that names none plays all three.
* **Backoff** after a proposer is pre-empted: none (the livelock of the
  tutorial's section 2.5) or randomized exponential.
* The **named bugs** (:data:`BUGS`), each the mistake real implementations made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nodes.protocols.core import Context, Random, role_names

Ballot = tuple[int, str]          # (round, node)
ZERO: Ballot = (0, "")            # below every real ballot: nothing promised, nothing accepted

PROPOSER, ACCEPTOR, LEARNER = "proposer", "acceptor", "learner"
ROLES = (PROPOSER, ACCEPTOR, LEARNER)

BACKOFF_NONE, BACKOFF_EXPONENTIAL = "none", "exponential"
BACKOFFS = (BACKOFF_NONE, BACKOFF_EXPONENTIAL)

# Storage keys and logs of the acceptor and the ballot counter.
PROMISED = "promised"             # [round, node]
ACC_ACTIVE = "acc_log"            # which of ACC_LOGS holds the accepted entries
ACC_LOGS = ("acc.0", "acc.1")     # entries [slot, round, node, value]; a later entry of a slot wins
ROUND = "round"                   # the highest round this node's proposer has used

BUGS = {
    "acceptor_forgets_promise": "the acceptor keeps its promise and accepted value in memory only: "
                                "restarted, it promises and accepts what it had refused, and two "
                                "values are chosen (agreement)",
    "ignore_accepted_value": "the proposer sends its own value although a promise carried an "
                             "accepted one: a later ballot overrides a value already chosen "
                             "(agreement)",
    "accept_below_promise": "an acceptor accepts a ballot lower than the one it promised: an old "
                            "proposer's value is chosen behind the back of a newer one that "
                            "proposes its own (agreement)",
    "stale_promise_counted": "promises answering an earlier ballot of the proposer count toward "
                             "the quorum of its new one: values accepted since are missed "
                             "(agreement)",
    "reuse_ballot_after_restart": "the proposer's round is kept in memory only: restarted, it "
                                  "reuses a ballot it had already sent with another value, and "
                                  "acceptors take both (agreement)",
}


# -- ballots ------------------------------------------------------------------------------------

def is_ballot(v: Any) -> bool:
    """Whether ``v`` is a ballot as it arrives from the wire: ``[round, node]``."""
    return (isinstance(v, (list, tuple)) and len(v) == 2 and type(v[0]) is int and v[0] >= 0
            and isinstance(v[1], str))


def ballot(v: Any) -> Ballot:
    """A wire ballot (``is_ballot`` already checked) as a tuple."""
    return (v[0], v[1])


class Ballots:
    """One proposer's ballots: each above every round the node has seen, never reused.

    The round is written to storage before it is returned, and so before the
    ballot's prepare leaves the node: a restarted proposer starts above it.
    """

    def __init__(self, ctx: Context, forget: bool) -> None:
        self.ctx = ctx
        self.forget = forget                   # reuse_ballot_after_restart: the round is not durable
        self.seen = 0 if forget else ctx.storage.get(ROUND, 0)

    def observe(self, b: Ballot) -> None:
        """A ballot seen anywhere (a refusal, a promise, our own acceptor's): go above it next."""
        if b[0] > self.seen:
            self.seen = b[0]

    def next(self) -> Ballot:
        self.seen += 1
        if not self.forget:
            self.ctx.storage.put(ROUND, self.seen)
        return (self.seen, self.ctx.node)


# -- the acceptor -------------------------------------------------------------------------------

class Acceptor:
    """Promised ballot and accepted ``(ballot, value)`` per slot; durable before any answer leaves.

    Accepted entries are appended to one of two storage logs. Forgetting the
    slots below a point (Multi-Paxos's garbage collection) rewrites the live
    entries into the other log and only then switches to it, so a crash at any
    point leaves one complete log.
    """

    def __init__(self, ctx: Context, *, forget: bool = False, below: bool = False) -> None:
        self.ctx = ctx
        self.forget = forget       # acceptor_forgets_promise: nothing goes to storage
        self.below = below         # accept_below_promise: accept whatever ballot comes
        self.promised: Ballot = ZERO
        self.accepted: dict[int, tuple[Ballot, Any]] = {}
        self.active = ACC_LOGS[0]
        self.logged = 0            # entries in the active log, live or not

    def load(self) -> None:
        """Rebuild from storage (first start or restart)."""
        storage = self.ctx.storage
        p = storage.get(PROMISED)
        if is_ballot(p):
            self.promised = ballot(p)
        self.active = storage.get(ACC_ACTIVE, ACC_LOGS[0])
        entries = storage.log_read(self.active)
        self.logged = len(entries)
        for slot, rnd, node, value in entries:
            self.accepted[slot] = ((rnd, node), value)

    def _promise(self, b: Ballot) -> None:
        if b != self.promised:
            self.promised = b
            if not self.forget:
                self.ctx.storage.put(PROMISED, list(b))

    def prepare(self, b: Ballot, from_slot: int = 0) -> tuple[bool, list[list[Any]]]:
        """Phase 1b: promise ``b`` if no higher ballot was promised. Returns (promised?, the
        accepted entries ``[slot, ballot, value]`` of every slot >= ``from_slot``).
        An equal ballot is promised again: ballots are never reused, so it is the same
        proposer asking again (a retransmission)."""
        if b < self.promised:
            return False, []
        self._promise(b)
        return True, [[s, list(bv[0]), bv[1]] for s, bv in sorted(self.accepted.items()) if s >= from_slot]

    def accept(self, b: Ballot, entries: Iterable[tuple[int, Any]]) -> bool:
        """Phase 2b: accept ``value`` in each ``(slot, value)`` under ``b`` unless a higher
        ballot was promised; accepting raises the promise to ``b``."""
        if b < self.promised and not self.below:
            return False
        if b > self.promised:
            self._promise(b)
        rows = []
        for slot, value in entries:
            self.accepted[slot] = (b, value)
            rows.append([slot, b[0], b[1], value])
        if rows and not self.forget:
            self.ctx.storage.log_append(self.active, rows)
            self.logged += len(rows)
        return True

    def forget_below(self, floor: int) -> None:
        """Drop the slots <= ``floor`` (chosen and executed everywhere); compact the log
        once most of it is dead."""
        dead = [s for s in self.accepted if s <= floor]
        for s in dead:
            del self.accepted[s]
        if self.forget or self.logged <= 2 * len(self.accepted) + 64:
            return
        other = ACC_LOGS[1] if self.active == ACC_LOGS[0] else ACC_LOGS[0]
        rows = [[s, bv[0][0], bv[0][1], bv[1]] for s, bv in sorted(self.accepted.items())]
        storage = self.ctx.storage
        storage.log_truncate(other, 0)
        if rows:
            storage.log_append(other, rows)
        storage.put(ACC_ACTIVE, other)        # the switch: after the new log is complete
        self.active, self.logged = other, len(rows)


# -- phase 1 ---------------------------------------------------------------------------------------

class Phase1:
    """The promises one ballot has gathered, and what they say was accepted.

    ``stale`` (the stale_promise_counted bug) keeps the promisers of the
    proposer's earlier ballots, and takes promises that answer them, as if
    they had promised the new one.
    """

    def __init__(self, b: Ballot, quorum: int, *, stale: bool = False, ignore: bool = False) -> None:
        self.ballot = b
        self.quorum = quorum
        self.stale = stale
        self.ignore = ignore                  # ignore_accepted_value: choose() proposes our own
        self.promisers: set[str] = set()
        self.highest: dict[int, tuple[Ballot, Any]] = {}   # slot -> highest accepted (ballot, value)

    def renew(self, b: Ballot) -> None:
        """A new ballot: start counting again (the bug keeps what the old one gathered)."""
        self.ballot = b
        if not self.stale:
            self.promisers = set()
            self.highest = {}

    def add(self, src: str, answering: Ballot, entries: Iterable[Any]) -> bool:
        """A promise from ``src`` answering ballot ``answering``; returns whether it counted."""
        if answering != self.ballot and not (self.stale and answering < self.ballot):
            return False
        self.promisers.add(src)
        for slot, b, value in entries:
            bt = ballot(b)
            seen = self.highest.get(slot)
            if seen is None or bt > seen[0]:
                self.highest[slot] = (bt, value)
        return True

    @property
    def reached(self) -> bool:
        return len(self.promisers) >= self.quorum

    def choose(self, slot: int, own: Any) -> Any:
        """The value phase 2 must propose in ``slot``: the highest ballot's accepted value,
        else ``own``."""
        seen = self.highest.get(slot)
        return own if seen is None or self.ignore else seen[1]


def well_formed_entries(entries: Any) -> bool:
    """``[[slot, ballot, value], ...]`` as a promise carries them."""
    return isinstance(entries, (list, tuple)) and all(
        isinstance(e, (list, tuple)) and len(e) == 3 and type(e[0]) is int and is_ballot(e[1])
        for e in entries)


# -- roles and backoff -----------------------------------------------------------------------------

def roles_of(spec: Mapping[str, Any] | None) -> frozenset[str]:
    """The Paxos roles a node plays: what its spec names, or all three when it names none
    (other names, such as 2PC's, are not Paxos roles and are ignored)."""
    named = [r for r in role_names((spec or {}).get("role")) if r in ROLES]
    return frozenset(named or ROLES)


def members(nodes: Mapping[str, Mapping[str, Any]], role: str) -> list[str]:
    """The nodes that play ``role``, by name."""
    return sorted(n for n in nodes if role in roles_of(nodes[n]))


def backoff_delay(rng: Random, kind: str, base: float, cap: float, attempt: int) -> float:
    """How long a pre-empted proposer waits before its next ballot: nothing without backoff,
    else a uniform draw from ``[0, min(cap, base * 2**attempt)]`` (randomized exponential)."""
    if kind == BACKOFF_NONE:
        return 0.0
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))
