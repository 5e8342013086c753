"""Multi-Paxos replicating the key-value store of ``kv.py``, as a sans-IO core.

One synod (``synod.py``) per log slot, with a distinguished proposer, the
*leader*, shaped like ``raft.py``: ``become_follower`` / ``become_candidate`` /
``become_leader`` swap the ``_step`` and ``_tick`` handlers; the verbs are
``handle_*``, ``maybe_*`` and ``broadcast_*``. Every node plays every role.

* **Phase 1 once for all slots.** A follower that hears from no leader for
  ``election_timeout`` (drawn at random: the backoff that keeps candidates
  from duelling) becomes a candidate: a new ballot above every round it has
  seen, and Prepare(ballot, from) for every slot above its execute point.
  Each promise carries what that acceptor accepted there.
* **Taking over.** With a majority of promises the candidate leads: in each
  slot from its execute point up to the highest slot any promise named it
  proposes the value of the highest ballot accepted there, and a no-op where
  no one accepted anything (a hole), so that execution can pass it.
* **Phase 2 per slot, batched.** A client op takes the next free slot; at
  most ``MAX_INFLIGHT`` Accept messages are in flight per follower, and what
  accumulates meanwhile leaves in one message of up to ``max_batch`` slots.
  A slot is chosen when a majority (the leader included) accepted it.
* **Learning.** Every Accept and heartbeat carries the leader's execute point:
  a follower that accepted a slot under the leader's ballot knows it is
  chosen once the point passes it. A follower that cannot (it missed the
  Accept) says which slot it needs and gets the chosen commands (``chosen``),
  or the leader's state when the leader no longer holds them (``snapshot``).
* **Execution** in slot order, through ``kv.KV`` with exactly-once dedup.
  Reads go through the log too (answered when their own slot executes), so
  a leader deposed without knowing it never answers a stale read.
* **Durability.** The acceptor's promise and accepted values, and the round,
  through ``storage`` before the answer leaves; every ``snapshot_every``
  executed slots, a snapshot of the key-value state. A restarted node loads
  the snapshot and learns the rest from the leader.
* **Garbage collection.** The leader tracks each replica's snapshot point;
  slots at or below the lowest (every replica has them in a durable
  snapshot, so no leader will ever ask for them again) are dropped
  everywhere, acceptor state included. A replica that is down holds the
  point back, as in DSLabs' lab 3.
* **Heartbeats.** A leader sends an empty Accept to a follower that got
  nothing from it for ``heartbeat``; a follower answers one only when it has
  something to say (it is behind, its snapshot moved, or it refuses).

Every chosen slot is traced as ``commit {slot, hash}`` by each node that
learns it (``hash``: ``kv.command_hash`` of the command; a no-op's command
is null), so ``agreement`` compares hashes per slot. See docs/paxos.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nodes.protocols import kv, synod
from nodes.protocols.core import ConfigValueError, Context, Core, Tunables, check_timing
from nodes.protocols.fsm import Table, to_mermaid
from nodes.protocols.synod import Ballot

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"

MSG_PREPARE, MSG_PROMISE = "prepare", "promise"
MSG_ACCEPT, MSG_ACCEPTED = "accept", "accepted"
MSG_CHOSEN, MSG_SNAPSHOT = "chosen", "snapshot"

TIMER_ELECTION, TIMER_HEARTBEAT = "election", "heartbeat"
SNAP = "snap"            # storage: {slot, floor, kv} -- the key-value state after executing `slot`
MAX_INFLIGHT = 2         # Accepts with slots in flight per follower; more requests wait and batch
MAX_BATCH_BYTES = 256 * 1024   # command bytes in one message (the wire takes 1 MiB)
NOOP = None              # the command of a hole filled by a new leader

# The roles' table: which changes are allowed, and the picture `zlab protocols --diagram` draws.
ROLE_TABLE = Table("multipaxos", FOLLOWER, [
    (FOLLOWER, "election timeout", CANDIDATE, ("new ballot", "prepare slots above execute point")),
    (CANDIDATE, "election timeout", CANDIDATE, ("new ballot", "prepare slots above execute point")),
    (CANDIDATE, "majority promised", LEADER, ("re-propose highest accepted", "fill holes with no-ops")),
    (CANDIDATE, "higher ballot", FOLLOWER, ()),
    (LEADER, "higher ballot", FOLLOWER, ("answer pending ops info",)),
    (FOLLOWER, "higher ballot", FOLLOWER, ()),
])


@dataclasses.dataclass(frozen=True)
class MultiPaxosConfig(Tunables):
    election_timeout: tuple[float, float] = dataclasses.field(
        default=(0.15, 0.3),
        metadata={"unit": "s-range", "doc": (
            "a node that hears no leader for a time drawn uniformly from this range runs phase 1 "
            "with a higher ballot, and a candidate without a majority tries again after another "
            "draw. Shorter: faster failover, more needless takeovers on a slow network; a narrow "
            "range lets candidates pre-empt each other (the duel of single-decree Paxos)")},
    )
    heartbeat: float = dataclasses.field(
        default=0.05,
        metadata={"unit": "s", "doc": (
            "a leader sends an empty Accept to a follower it sent nothing else for this long; it "
            "carries the execute point and the collection point. Must be well below "
            "election_timeout; shorter costs messages, longer risks needless takeovers")},
    )
    max_batch: int = dataclasses.field(
        default=64,
        metadata={"unit": "count", "doc": (
            "most slots in one Accept (or one catch-up message). Larger batches raise throughput "
            "under load; smaller ones keep messages small")},
    )
    snapshot_every: int = dataclasses.field(
        default=512,
        metadata={"unit": "count", "doc": (
            "a node writes a snapshot of its key-value state every this many executed slots; "
            "slots below every node's snapshot are garbage-collected. Smaller: less memory and "
            "a shorter replay, but each snapshot writes the whole state")},
    )

    def __post_init__(self) -> None:
        check_timing(self.election_timeout, self.heartbeat)
        if self.max_batch < 1:
            raise ConfigValueError("max_batch", "must be at least 1")
        if self.snapshot_every < 1:
            raise ConfigValueError("snapshot_every", "must be at least 1")


class Progress:
    """The leader's view of one follower."""

    __slots__ = ("next", "inflight", "executed", "snap", "sent", "catchup")

    def __init__(self, next_slot: int) -> None:
        self.next = next_slot     # the next slot to send it
        self.inflight = 0         # Accepts with slots sent and not yet answered
        self.executed = -1        # its execute point, as it last said (-1: not heard)
        self.snap = -1            # its snapshot point, as it last said
        self.sent = False         # sent it something since the last heartbeat tick
        self.catchup = 0          # a catch-up from this slot on is in flight


def _capped(entries: list[list[Any]]) -> list[list[Any]]:
    """The first entries whose commands add up to at most ``MAX_BATCH_BYTES`` (at least one):
    a batch of large values must still fit the wire's message size limit."""
    total = 0
    for i, (_, command) in enumerate(entries):
        total += len(command) if command else 0
        if total > MAX_BATCH_BYTES and i:
            return entries[:i]
    return entries


def _is_int(v: Any) -> bool:
    return type(v) is int


def _entries_ok(entries: Any) -> bool:
    """``[[slot, command or null], ...]``"""
    return isinstance(entries, (list, tuple)) and all(
        isinstance(e, (list, tuple)) and len(e) == 2 and _is_int(e[0])
        and (e[1] is None or isinstance(e[1], str)) for e in entries)


def well_formed(type: str, body: Any) -> bool:
    """Whether a body has the fields its handler reads, with their types."""
    if not isinstance(body, dict) or not synod.is_ballot(body.get("ballot")):
        return False
    g = body.get
    if type == MSG_PREPARE:
        return _is_int(g("from"))
    if type == MSG_PROMISE:
        return (isinstance(g("ok"), bool) and synod.is_ballot(g("promised"))
                and synod.well_formed_entries(g("accepted")))
    if type == MSG_ACCEPT:
        return _entries_ok(g("entries")) and _is_int(g("commit")) and _is_int(g("floor"))
    if type == MSG_ACCEPTED:
        need = g("need")
        return (isinstance(g("ok"), bool) and synod.is_ballot(g("promised"))
                and isinstance(g("slots"), (list, tuple)) and all(_is_int(s) for s in g("slots"))
                and _is_int(g("executed")) and _is_int(g("snap")) and (need is None or _is_int(need)))
    if type == MSG_CHOSEN:
        return _entries_ok(g("entries")) and _is_int(g("commit"))
    if type == MSG_SNAPSHOT:
        state = g("state")
        return _is_int(g("slot")) and isinstance(state, dict) and all(
            isinstance(state.get(k), (list, tuple)) for k in ("data", "sessions", "floor"))
    return False


class MultiPaxos(Core):
    """Multi-Paxos: a leader's phase 1 covers every slot, phase 2 per slot; a replicated key-value store"""

    name = "multipaxos"
    message_types = frozenset({MSG_PREPARE, MSG_PROMISE, MSG_ACCEPT, MSG_ACCEPTED, MSG_CHOSEN,
                               MSG_SNAPSHOT})
    tunables = MultiPaxosConfig
    presets = {"lan": {}, "wan": {"election_timeout": ["1s", "2s"], "heartbeat": "200ms"}}
    bugs = synod.BUGS
    default_checks = ("agreement", "validity", "linearizable")

    config: MultiPaxosConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else MultiPaxosConfig())
        self.peers = sorted(n for n in ctx.nodes if n != ctx.node)
        self.quorum = (len(self.peers) + 1) // 2 + 1
        self.role = FOLLOWER
        self.leader: str | None = None
        self.ballot: Ballot = synod.ZERO              # the ballot we campaign or lead with
        self.acceptor = synod.Acceptor(ctx, forget=self.has_bug("acceptor_forgets_promise"),
                                       below=self.has_bug("accept_below_promise"))
        self.ballots = synod.Ballots(ctx, forget=self.has_bug("reuse_ballot_after_restart"))
        self.phase1 = synod.Phase1(synod.ZERO, self.quorum, stale=self.has_bug("stale_promise_counted"),
                                   ignore=self.has_bug("ignore_accepted_value"))
        self.kv = kv.KV()
        self.chosen: dict[int, str | None] = {}       # learned commands, slots above `base`
        self.executed = 0                             # slots 1..executed are applied
        self.base = 0                                 # slots <= base: only in the snapshot
        self.snap = 0                                 # our durable snapshot's slot
        self.floor = 0                                # collected: slots <= floor are gone everywhere
        self.need: int | None = None                  # a slot we know is chosen but cannot learn
        self.told = -1                                # the snapshot point we last told a leader
        # leader
        self.proposals: dict[int, str | None] = {}    # unchosen slots -> command, under self.ballot
        self.votes: dict[int, set[str]] = {}          # unchosen slots -> who accepted them
        self.next_slot = 1
        self.pending: dict[int, str] = {}             # slot -> client waiting for its result
        self.progress: dict[str, Progress] = {}
        self.dropped = 0
        self._step: Callable[[str, str, dict[str, Any]], None] = self._step_follower
        self._tick: Callable[[str], None] = self._tick_election

    # -- durable state -------------------------------------------------------------------------
    def start(self) -> None:
        self.acceptor.load()
        if not self.ballots.forget:
            self.ballots.observe(self.acceptor.promised)
        snap = self.ctx.storage.get(SNAP)
        if snap is not None:
            self.kv = kv.KV.load(snap["kv"])
            self.executed = self.base = self.snap = snap["slot"]
            self.floor = snap["floor"]
            self.acceptor.forget_below(self.floor)
        self.next_slot = self.executed + 1
        self.become_follower(None)

    def write_snapshot(self) -> None:
        self.ctx.storage.put(SNAP, {"slot": self.executed, "floor": self.floor, "kv": self.kv.dump()})
        self.snap = self.executed

    # -- roles ------------------------------------------------------------------------------------
    def _change(self, event: str) -> str:
        """Check ``event`` against the roles' table; the role it leads to."""
        return ROLE_TABLE.step(self.role, event).target

    def become_follower(self, leader: str | None) -> None:
        if self.role == LEADER:
            self._change("higher ballot")
            self._abandon_pending()
            self.ctx.cancel_timer(TIMER_HEARTBEAT)
            self.proposals, self.votes, self.progress = {}, {}, {}
        changed = self.role != FOLLOWER or self.leader != leader
        self.role, self.leader = FOLLOWER, leader
        self._step, self._tick = self._step_follower, self._tick_election
        self._reset_election_timer()
        if changed:
            self._trace_state()

    def become_candidate(self) -> None:
        self.role = self._change("election timeout")
        self.leader = None
        self.ballots.observe(self.acceptor.promised)
        self.ballot = self.ballots.next()
        self.phase1.renew(self.ballot)
        self._step, self._tick = self._step_candidate, self._tick_election
        self._reset_election_timer()
        self._trace_state()
        start = self.executed + 1
        ok, entries = self.acceptor.prepare(self.ballot, start)
        if ok:
            self.phase1.add(self.ctx.node, self.ballot, entries)
        body = {"ballot": list(self.ballot), "from": start}
        for p in self.peers:
            self.ctx.send(p, MSG_PREPARE, body)
        if self.phase1.reached:
            self.become_leader()

    def become_leader(self) -> None:
        self.role = self._change("majority promised")
        self.leader = self.ctx.node
        self._step, self._tick = self._step_leader, self._tick_leader
        self.ctx.cancel_timer(TIMER_ELECTION)
        start = self.executed + 1
        top = max([start - 1, *self.phase1.highest, *self.chosen])
        self.proposals, self.votes, self.pending = {}, {}, {}
        for s in range(start, top + 1):
            if s not in self.chosen:
                self.proposals[s] = self.phase1.choose(s, NOOP)
                self.votes[s] = {self.ctx.node}
        self.acceptor.accept(self.ballot, sorted(self.proposals.items()))
        self.next_slot = top + 1
        self.progress = {p: Progress(start) for p in self.peers}
        self._trace_state(start=start, top=top)
        self.ctx.set_timer(TIMER_HEARTBEAT, self.config.heartbeat)
        self.broadcast_accept()
        self.maybe_choose(sorted(self.votes))

    def _trace_state(self, **extra: Any) -> None:
        b = self.ballot if self.role != FOLLOWER else self.acceptor.promised
        self.ctx.trace("state", data={"role": self.role, "term": b[0], "ballot": list(b),
                                      "leader": self.leader, **extra})

    def _reset_election_timer(self) -> None:
        lo, hi = self.config.election_timeout
        self.ctx.set_timer(TIMER_ELECTION, self.ctx.rng.uniform(lo, hi))

    def _abandon_pending(self) -> None:
        # The slots may still be chosen under the next leader: the outcome is unknown, not failed.
        for slot in sorted(self.pending):
            self.ctx.reply(self.pending[slot], {"type": "info", "error": "leadership_lost"})
        self.pending = {}

    def _higher_ballot(self, leader: str | None) -> None:
        """Someone holds a ballot above ours: a leader or candidate steps down."""
        if self.role == CANDIDATE:
            self._change("higher ballot")
        self.become_follower(leader)

    # -- entry points ------------------------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if src not in self.peers or not well_formed(type, body):
            self.dropped += 1
            self.ctx.trace("drop", type=type, peer=src, data={"reason": "malformed"})
            return
        if type == MSG_PREPARE:
            self.handle_prepare(src, body)
        elif type == MSG_ACCEPT:
            self.handle_accept(src, body)
        elif type == MSG_CHOSEN:
            self.handle_chosen(src, body)
        elif type == MSG_SNAPSHOT:
            self.handle_snapshot(src, body)
        else:
            self._step(src, type, body)

    def handle_timer(self, name: str) -> None:
        self._tick(name)

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if self.role != LEADER:
            self.ctx.reply(client, {"type": "fail", "error": "not_leader", "leader": self.leader})
            return
        now = kv.answer_now(self.kv, op)
        if now is not None:         # invalid, or a retry of an op already applied
            self.ctx.reply(client, now)
            return
        slot = self.next_slot
        self.next_slot += 1
        command = kv.encode_command(op)
        self.proposals[slot] = command
        self.votes[slot] = {self.ctx.node}
        self.pending[slot] = client
        self.acceptor.accept(self.ballot, [(slot, command)])
        self.broadcast_accept()
        self.maybe_choose([slot])

    def status(self) -> dict[str, Any]:
        b = self.ballot if self.role == LEADER else self.acceptor.promised
        return {"role": self.role, "term": b[0], "ballot": list(b), "leader": self.leader,
                "executed": self.executed, "floor": self.floor,
                "slots": len(self.chosen) + len(self.acceptor.accepted)}

    @classmethod
    def diagram(cls) -> str:
        """Mermaid text for the roles' table."""
        return to_mermaid(ROLE_TABLE)

    # -- step and tick handlers, per role ------------------------------------------------------------
    def _step_follower(self, src: str, type: str, body: dict[str, Any]) -> None:
        pass            # promises and acceptances are answers to a campaign or a reign we do not run

    def _step_candidate(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == MSG_PROMISE:
            self.handle_promise(src, body)

    def _step_leader(self, src: str, type: str, body: dict[str, Any]) -> None:
        if type == MSG_ACCEPTED:
            self.handle_accepted(src, body)

    def _tick_election(self, name: str) -> None:
        if name == TIMER_ELECTION:
            self.become_candidate()

    def _tick_leader(self, name: str) -> None:
        if name == TIMER_HEARTBEAT:
            self.broadcast_heartbeat()
            self.maybe_collect()
            self.ctx.set_timer(TIMER_HEARTBEAT, self.config.heartbeat)

    # -- phase 1 -----------------------------------------------------------------------------------------
    def handle_prepare(self, src: str, body: dict[str, Any]) -> None:
        b = synod.ballot(body["ballot"])
        before = self.acceptor.promised
        ok, entries = self.acceptor.prepare(b, body["from"])
        if ok and b > before:                     # a new ballot (not a repeat of the one we follow)
            self.ballots.observe(b)
            if self.role != FOLLOWER or self.leader is not None:
                self._higher_ballot(None)
            else:
                self._reset_election_timer()      # give the candidate its chance
        self.ctx.send(src, MSG_PROMISE, {"ballot": list(b), "ok": ok,
                                         "promised": list(self.acceptor.promised), "accepted": entries})

    def handle_promise(self, src: str, body: dict[str, Any]) -> None:
        answering = synod.ballot(body["ballot"])
        if body["ok"]:
            if self.phase1.add(src, answering, body["accepted"]) and self.phase1.reached:
                self.become_leader()
            return
        promised = synod.ballot(body["promised"])
        self.ballots.observe(promised)
        if answering == self.ballot and promised > self.ballot:
            self._higher_ballot(None)

    # -- phase 2: leader ------------------------------------------------------------------------------------
    def broadcast_accept(self) -> None:
        for p in self.peers:
            self.maybe_send_accept(p)

    def maybe_send_accept(self, peer: str) -> None:
        pr = self.progress[peer]
        if pr.inflight < MAX_INFLIGHT and max(pr.next, self.base + 1) < self.next_slot:
            self.send_accept(peer)

    def send_accept(self, peer: str) -> None:
        """The next slots ``peer`` has not been sent (an empty list makes a heartbeat)."""
        pr = self.progress[peer]
        first = max(pr.next, self.base + 1)
        end = min(self.next_slot, first + self.config.max_batch)
        proposals, chosen = self.proposals, self.chosen
        entries = _capped([[s, proposals[s] if s in proposals else chosen.get(s)]
                           for s in range(first, end)])
        self.ctx.send(peer, MSG_ACCEPT, {"ballot": list(self.ballot), "entries": entries,
                                         "commit": self.executed, "floor": self.floor})
        pr.sent = True
        if entries:
            pr.next = entries[-1][0] + 1
            pr.inflight += 1

    def broadcast_heartbeat(self) -> None:
        """Resend what a follower has not acknowledged; an empty Accept to the quiet ones."""
        for p in self.peers:
            pr = self.progress[p]
            pr.inflight, pr.catchup = 0, 0
            missing = [s for s, who in self.votes.items() if p not in who]
            if missing:
                pr.next = min(pr.next, min(missing))
            if pr.next < self.next_slot or not pr.sent:
                self.send_accept(p)
            pr.sent = False

    def handle_accepted(self, src: str, body: dict[str, Any]) -> None:
        if synod.ballot(body["ballot"]) != self.ballot:
            return
        if not body["ok"]:
            promised = synod.ballot(body["promised"])
            self.ballots.observe(promised)
            if promised > self.ballot:
                self._higher_ballot(None)
            return
        pr = self.progress[src]
        slots = body["slots"]
        if slots and pr.inflight:
            pr.inflight -= 1
        pr.executed, pr.snap = body["executed"], body["snap"]
        for s in slots:
            who = self.votes.get(s)
            if who is not None:
                who.add(src)
        self.maybe_choose(slots)
        if body["need"] is not None:
            self.maybe_catch_up(src, body["need"])
        self.maybe_collect()
        self.maybe_send_accept(src)

    def maybe_choose(self, slots: list[int]) -> None:
        """Slots a majority accepted are chosen; execute what is now contiguous."""
        for s in slots:
            who = self.votes.get(s)
            if who is not None and len(who) >= self.quorum:
                del self.votes[s]
                self.learn(s, self.proposals.pop(s))
        self.execute()

    def maybe_catch_up(self, peer: str, need: int) -> None:
        """``peer`` cannot learn slot ``need``: send it the chosen commands from there, or our
        state when we no longer hold them. One catch-up at a time (a heartbeat resets it)."""
        pr = self.progress[peer]
        if need > self.executed or (pr.catchup and need < pr.catchup):
            return
        if need <= self.base:
            self.ctx.send(peer, MSG_SNAPSHOT, {"ballot": list(self.ballot), "slot": self.executed,
                                               "state": self.kv.dump()})
            pr.catchup = self.executed + 1
            return
        end = min(self.executed + 1, need + self.config.max_batch)
        entries = _capped([[s, self.chosen[s]] for s in range(need, end)])
        self.ctx.send(peer, MSG_CHOSEN, {"ballot": list(self.ballot), "entries": entries,
                                         "commit": self.executed})
        pr.catchup = entries[-1][0] + 1

    def maybe_collect(self) -> None:
        """Raise the collection point to the lowest snapshot of all replicas, once all have said."""
        low = min([self.snap, *(pr.snap for pr in self.progress.values())])
        if low > self.floor:
            self.collect(low)

    # -- phase 2: every node ---------------------------------------------------------------------------------
    def handle_accept(self, src: str, body: dict[str, Any]) -> None:
        b = synod.ballot(body["ballot"])
        entries = body["entries"]
        ok = self.acceptor.accept(b, [(e[0], e[1]) for e in entries])
        news = not ok           # a refusal tells a deposed leader to step down
        if ok:
            self.ballots.observe(b)
            if self.role != FOLLOWER or self.leader != src:
                self._higher_ballot(src)
                news = True
            else:
                self._reset_election_timer()
            self.learn_committed(b, body["commit"])
            if body["floor"] > self.floor:
                self.collect(body["floor"])
        if entries or news or self.need is not None or self.snap != self.told:
            self._answer(src, b, ok, [e[0] for e in entries] if ok else [])
        # else: a heartbeat we have nothing to say to

    def _answer(self, dst: str, b: Ballot, ok: bool, slots: list[int]) -> None:
        self.told = self.snap
        self.ctx.send(dst, MSG_ACCEPTED, {"ballot": list(b), "ok": ok,
                                          "promised": list(self.acceptor.promised), "slots": slots,
                                          "executed": self.executed, "snap": self.snap,
                                          "need": self.need})

    def learn_committed(self, b: Ballot, commit: int) -> None:
        """Every slot up to ``commit`` is chosen; those we accepted under ``b`` we now know."""
        self.need = None
        s = self.executed + 1
        accepted = self.acceptor.accepted
        while s <= commit:
            if s not in self.chosen:
                got = accepted.get(s)
                if got is None or got[0] != b:
                    self.need = s
                    break
                self.learn(s, got[1])
            s += 1
        self.execute()

    def handle_chosen(self, src: str, body: dict[str, Any]) -> None:
        for s, command in body["entries"]:
            self.learn(s, command)
        b = synod.ballot(body["ballot"])
        if b >= self.acceptor.promised:
            self.learn_committed(b, body["commit"])
        else:
            self.execute()
        self._answer(src, b, True, [])

    def handle_snapshot(self, src: str, body: dict[str, Any]) -> None:
        slot = body["slot"]
        if slot > self.executed:
            self.kv = kv.KV.load(body["state"])
            self.executed = self.base = slot
            self.chosen = {s: c for s, c in self.chosen.items() if s > slot}
            self.ctx.trace("apply", data={"snapshot": slot})
            self.write_snapshot()
            self.execute()
        b = synod.ballot(body["ballot"])
        self.need = None if self.need is None or self.need <= self.executed else self.need
        self._answer(src, b, True, [])

    # -- learning and execution -----------------------------------------------------------------------------
    def learn(self, slot: int, command: str | None) -> None:
        if slot <= self.executed or slot in self.chosen:
            return
        self.chosen[slot] = command
        self.ctx.trace("commit", data={"slot": slot, "hash": kv.command_hash(command)})

    def execute(self) -> None:
        chosen, trace = self.chosen, self.ctx.trace
        while self.executed + 1 in chosen:
            s = self.executed = self.executed + 1
            command = chosen[s]
            if command is not NOOP:
                op = kv.decode_command(command)
                result = self.kv.apply(op) if op else {"type": "fail", "error": "bad_command"}
                trace("apply", data={"slot": s, "f": op.get("f") if op else None,
                                     "key": op.get("key") if op else None})
                client = self.pending.pop(s, None)
                if client is not None:
                    self.ctx.reply(client, result)
            if s - self.snap >= self.config.snapshot_every:
                self.write_snapshot()
        if self.need is not None and self.need <= self.executed:
            self.need = None

    def collect(self, floor: int) -> None:
        """Slots <= ``floor`` are in every replica's durable snapshot: forget them."""
        self.floor = floor
        if floor > self.base:
            self.base = min(floor, self.executed)
        self.chosen = {s: c for s, c in self.chosen.items() if s > self.base}
        self.acceptor.forget_below(floor)
