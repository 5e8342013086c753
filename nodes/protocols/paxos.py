"""Single-decree Paxos (Lamport, "Paxos Made Simple"; the tutorial's sections 2.2 to 2.5) as a sans-IO core.

One value is chosen, once. Each node plays the roles its spec names
(``role: [proposer, acceptor]``; a node that names none plays all three):

* a **proposer** takes a value (its own at start, ``<node>.<boot>``, or the
  first a client asks it to propose), picks a ballot ``(round, node)`` above
  every round it has seen, and runs phase 1 (Prepare/Promise) then phase 2
  (Accept/Accepted). If a promise carried an accepted value it proposes the
  value of the highest ballot instead of its own. Refused (an acceptor had
  promised a higher ballot, or its own node's acceptor just did) or without
  a quorum by ``retry_timeout``, it waits ``backoff`` and tries a higher ballot;
* an **acceptor** promises a ballot if it has promised none higher, accepts a
  value under a ballot if it has promised none higher, and writes both through
  ``storage`` before its answer leaves; it tells every learner what it accepted;
* a **learner** learns a value when a majority of acceptors accepted it in one
  ballot. One that has not learned asks the acceptors every ``retry_timeout``
  (so a lost message costs a round, never the decision). A node that knows the
  decision answers a prepare or a question with it.

The proposer is a transition table (``PROPOSER``); ``zlab protocols --diagram
paxos`` draws it. Clients: ``{f: propose, value: v}`` to a proposer is
answered ``{type: ok, value: <the chosen value>}`` once it is known;
``{f: read}`` to a learner answers the learned value (``fail undecided``
before). See docs/paxos.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodes.protocols import synod
from nodes.protocols.core import ConfigValueError, Context, Core, Tunables
from nodes.protocols.fsm import Table, to_mermaid
from nodes.protocols.synod import ACCEPTOR, LEARNER, PROPOSER, Ballot
from nodes.units import shown

MSG_PREPARE, MSG_PROMISE = "prepare", "promise"
MSG_ACCEPT, MSG_ACCEPTED = "accept", "accepted"
MSG_DECIDED, MSG_QUERY = "decided", "query"

TIMER_PHASE, TIMER_RETRY, TIMER_LEARN, TIMER_START = "phase", "retry", "learn", "start"
BOOTS = "boots"        # storage: how many times this node has started (names its own value)

IDLE, PREPARING, ACCEPTING, WAITING, DECIDED = "idle", "preparing", "accepting", "waiting", "decided"

PROPOSER_TABLE = Table("proposer", IDLE, [
    (IDLE, "propose", PREPARING, ("new_ballot", "send_prepare")),
    (PREPARING, "promised", ACCEPTING, ("send_accept",)),
    (PREPARING, "preempted", WAITING, ("back_off",)),
    (PREPARING, "timeout", WAITING, ("back_off",)),
    (ACCEPTING, "preempted", WAITING, ("back_off",)),
    (ACCEPTING, "timeout", WAITING, ("back_off",)),
    (WAITING, "retry", PREPARING, ("new_ballot", "send_prepare")),
    *((s, "learned", DECIDED, ("stop",)) for s in (IDLE, PREPARING, ACCEPTING, WAITING)),
], final=[DECIDED])


@dataclasses.dataclass(frozen=True)
class PaxosConfig(Tunables):
    retry_timeout: float = dataclasses.field(
        default=0.1,
        metadata={"unit": "s", "doc": (
            "a proposer without a quorum of answers this long tries again with a higher ballot; a "
            "learner that has not learned asks the acceptors this often. It must exceed a round trip "
            "(a phase needs one) or every phase times out. Shorter recovers from lost messages "
            "sooner but pre-empts slow rounds of other proposers (and itself) more often")},
    )
    backoff: str = dataclasses.field(
        default=synod.BACKOFF_EXPONENTIAL,
        metadata={"unit": "name", "doc": (
            "what a refused proposer waits before its next ballot: `none` retries at once (two "
            "proposers can then pre-empt each other forever: the livelock of the tutorial's 2.5), "
            "`exponential` a random time up to backoff_base * 2^attempt, so one of them finishes")},
    )
    backoff_base: float = dataclasses.field(
        default=0.01,
        metadata={"unit": "s", "doc": (
            "the first backoff's upper bound, doubled per failed attempt. About one round trip: "
            "shorter keeps the duel going longer, longer delays the decision after a conflict")},
    )
    backoff_max: float = dataclasses.field(
        default=0.5,
        metadata={"unit": "s", "doc": "the cap on a backoff: bounds how long a proposer may sit out"},
    )
    start_at: float = dataclasses.field(
        default=0.0,
        metadata={"unit": "s", "doc": (
            "when (since the run's start) proposers begin proposing their own values. On local and "
            "docker nodes come up one by one; a start time after they are all up makes proposers "
            "start together, as in a duel. A proposer restarted later begins at once")},
    )
    own_value: bool = dataclasses.field(
        default=True,
        metadata={"unit": "bool", "doc": (
            "each proposer starts proposing a value of its own (`<node>.<boot>`) at once; false: "
            "proposers wait until a client's `propose` gives them one")},
    )

    def __post_init__(self) -> None:
        if self.start_at < 0:
            raise ConfigValueError("start_at", f"must not be negative, got {self.start_at}s")
        if self.retry_timeout <= 0:
            raise ConfigValueError("retry_timeout", f"must be above 0, got {self.retry_timeout}s")
        if self.backoff not in synod.BACKOFFS:
            raise ConfigValueError("backoff", f"expected one of {', '.join(synod.BACKOFFS)}, "
                                   f"got {shown(self.backoff)}")
        if not 0 < self.backoff_base <= self.backoff_max:
            raise ConfigValueError("backoff_base", "must be above 0 and at most backoff_max")


def _value_ok(v: Any) -> bool:
    return isinstance(v, (str, int)) and not isinstance(v, bool)


def well_formed(type: str, body: Any) -> bool:
    """Whether a body has the fields its handler reads, with their types."""
    if not isinstance(body, dict):
        return False
    g = body.get
    if type == MSG_QUERY:
        return True
    if type == MSG_DECIDED:
        return _value_ok(g("value"))
    if not synod.is_ballot(g("ballot")):
        return False
    if type == MSG_PREPARE:
        return True
    if type == MSG_ACCEPT:
        return _value_ok(g("value"))
    if type == MSG_PROMISE:
        return (isinstance(g("ok"), bool) and synod.is_ballot(g("promised"))
                and synod.well_formed_entries(g("accepted")))
    if type == MSG_ACCEPTED:
        return isinstance(g("ok"), bool) and synod.is_ballot(g("promised")) and (
            not g("ok") or _value_ok(g("value")))
    return False


class Paxos(Core):
    """single-decree Paxos: proposers, acceptors and learners choose one value"""

    name = "paxos"
    message_types = frozenset({MSG_PREPARE, MSG_PROMISE, MSG_ACCEPT, MSG_ACCEPTED, MSG_DECIDED,
                               MSG_QUERY})
    tunables = PaxosConfig
    presets = {"lan": {}, "wan": {"retry_timeout": "1s", "backoff_base": "100ms", "backoff_max": "3s"}}
    bugs = synod.BUGS
    bug_breaks = synod.BUG_BREAKS
    default_checks = ("agreement", "validity", "decided")
    node_roles = synod.ROLES

    config: PaxosConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else PaxosConfig())
        self.roles = synod.roles_of(ctx.nodes.get(ctx.node))
        self.acceptors = synod.members(ctx.nodes, ACCEPTOR)
        self.learners = synod.members(ctx.nodes, LEARNER)
        self.proposers = synod.members(ctx.nodes, PROPOSER)
        self.quorum = len(self.acceptors) // 2 + 1
        self.state = IDLE
        self.own = ""                       # our own value, named at start()
        self.value: Any = None              # what this proposer proposes when free to choose
        self.proposing: Any = None          # what its current ballot proposes in phase 2
        self.ballot: Ballot = synod.ZERO
        self.attempt = 0                    # refusals and timeouts so far: the backoff's exponent
        self.accepts: set[str] = set()
        self.won = False                    # this proposer's own ballot got its value chosen
        self.learned: Any = None
        self.votes: dict[tuple[Ballot, Any], set[str]] = {}   # learner: (ballot, value) -> acceptors
        self.traced: set[tuple[Ballot | None, Any]] = set()   # decisions traced: (ballot, value)
        self.clients: list[str] = []        # waiting for the decision
        self.dropped = 0
        self.acceptor = synod.Acceptor(ctx, forget=self.has_bug("acceptor_forgets_promise"),
                                       below=self.has_bug("accept_below_promise"))
        self.ballots = synod.Ballots(ctx, forget=self.has_bug("reuse_ballot_after_restart"))
        self.phase1 = synod.Phase1(synod.ZERO, self.quorum, stale=self.has_bug("stale_promise_counted"),
                                   ignore=self.has_bug("ignore_accepted_value"))

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        if ACCEPTOR in self.roles:
            self.acceptor.load()
            if not self.ballots.forget:      # start above anything our own acceptor has seen
                self.ballots.observe(self.acceptor.promised)
        boots = self.ctx.storage.get(BOOTS, 0) + 1
        self.ctx.storage.put(BOOTS, boots)
        if LEARNER in self.roles:        # nothing to ask about before proposers start
            first = max(0.0, self.config.start_at - self.ctx.now()) + self.config.retry_timeout
            self.ctx.set_timer(TIMER_LEARN, first)
        self.own = f"{self.ctx.node}.{boots}"
        if PROPOSER in self.roles and self.config.own_value:
            wait = self.config.start_at - self.ctx.now()
            if wait > 0:
                self.ctx.set_timer(TIMER_START, wait)
            else:
                self.take_value(self.own)

    def take_value(self, value: Any) -> None:
        """Our value to propose (the first one given wins); start phase 1 if idle."""
        if self.value is None:
            self.value = value
            self.ctx.trace("state", data={"role": PROPOSER, "phase": "input", "value": value})
        if self.state == IDLE:
            self.step("propose")

    # -- the proposer's table --------------------------------------------------------------------
    def step(self, event: str) -> None:
        tr = PROPOSER_TABLE.step(self.state, event)
        self.state = tr.target
        for action in tr.actions:
            getattr(self, f"act_{action}")()

    def maybe_step(self, event: str) -> None:
        """Events that may come after the proposer moved on (a late answer, a stale timer)."""
        if PROPOSER_TABLE.allows(self.state, event):
            self.step(event)

    def act_new_ballot(self) -> None:
        self.ballot = self.ballots.next()
        self.phase1.renew(self.ballot)
        self.accepts = set()
        self._trace_phase()

    def act_send_prepare(self) -> None:
        self.ctx.set_timer(TIMER_PHASE, self.config.retry_timeout)
        self._to_all(self.acceptors, MSG_PREPARE, {"ballot": list(self.ballot)})

    def act_send_accept(self) -> None:
        self.proposing = self.phase1.choose(0, self.value)
        self._trace_phase()
        self.ctx.set_timer(TIMER_PHASE, self.config.retry_timeout)
        self._to_all(self.acceptors, MSG_ACCEPT, {"ballot": list(self.ballot), "value": self.proposing})

    def act_back_off(self) -> None:
        self.ctx.cancel_timer(TIMER_PHASE)
        delay = synod.backoff_delay(self.ctx.rng, self.config.backoff, self.config.backoff_base,
                                    self.config.backoff_max, self.attempt)
        self.attempt += 1
        self._trace_phase()
        if delay <= 0:
            self.step("retry")
        else:
            self.ctx.set_timer(TIMER_RETRY, delay)

    def act_stop(self) -> None:
        self.ctx.cancel_timer(TIMER_PHASE)
        self.ctx.cancel_timer(TIMER_RETRY)
        self._trace_phase()

    def _trace_phase(self) -> None:
        data: dict[str, Any] = {"role": PROPOSER, "phase": self.state, "ballot": list(self.ballot)}
        if self.state == ACCEPTING:
            data["value"] = self.proposing
        self.ctx.trace("state", data=data)

    def _preempt_if_above(self, b: Ballot) -> None:
        """Our own acceptor (or a peer's refusal) saw ``b``: if it beats our ballot, we lost."""
        self.ballots.observe(b)
        if b > self.ballot and self.state in (PREPARING, ACCEPTING):
            self.step("preempted")

    # -- entry points ------------------------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if src not in self.ctx.nodes or not well_formed(type, body):
            self.dropped += 1
            self.ctx.trace("drop", type=type, peer=src, data={"reason": "malformed"})
            return
        getattr(self, f"on_{type}")(src, body)

    def handle_timer(self, name: str) -> None:
        if name == TIMER_PHASE:
            self.maybe_step("timeout")
        elif name == TIMER_RETRY:
            self.maybe_step("retry")
        elif name == TIMER_START and self.learned is None:
            self.take_value(self.own)
        elif name == TIMER_LEARN and self.learned is None:
            self._to_all(self.acceptors, MSG_QUERY, {})
            self.ctx.set_timer(TIMER_LEARN, self.config.retry_timeout)

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        f = op.get("f")
        if f == "propose":
            if PROPOSER not in self.roles:
                self._redirect(client, self.proposers)
            elif not _value_ok(op.get("value")):
                self.ctx.reply(client, {"type": "fail", "error": "value must be a string or an integer"})
            elif self.learned is not None:
                self.ctx.reply(client, {"type": "ok", "value": self.learned})
            else:
                self.clients.append(client)
                self.take_value(op["value"])
        elif f == "read":
            if LEARNER not in self.roles:
                self._redirect(client, self.learners)
            elif self.learned is None:
                self.ctx.reply(client, {"type": "fail", "error": "undecided"})
            else:
                self.ctx.reply(client, {"type": "ok", "value": self.learned})
        else:
            self.ctx.reply(client, {"type": "fail", "error": f"unsupported op {f!r}"})

    def _redirect(self, client: str, who: list[str]) -> None:
        self.ctx.reply(client, {"type": "fail", "error": "not_leader", "leader": who[0] if who else None})

    def status(self) -> dict[str, Any]:
        leads = PROPOSER in self.roles and (self.state == ACCEPTING or self.won)
        role = "leader" if leads else next(r for r in (PROPOSER, ACCEPTOR, LEARNER) if r in self.roles)
        return {"role": role, "term": self.ballot[0], "ballot": list(self.ballot), "phase": self.state,
                "promised": list(self.acceptor.promised), "learned": self.learned}

    @classmethod
    def diagram(cls) -> str:
        """Mermaid text for the proposer's table."""
        return to_mermaid(PROPOSER_TABLE)

    def _to_all(self, nodes: list[str], type: str, body: dict[str, Any]) -> None:
        """Send to every one of ``nodes``; our own node's share is handled here, last."""
        for n in nodes:
            if n != self.ctx.node:
                self.ctx.send(n, type, body)
        if self.ctx.node in nodes:
            self.handle_message(self.ctx.node, type, body)

    def _to(self, dst: str, type: str, body: dict[str, Any]) -> None:
        if dst == self.ctx.node:
            self.handle_message(dst, type, body)
        else:
            self.ctx.send(dst, type, body)

    # -- acceptor ------------------------------------------------------------------------------
    def on_prepare(self, src: str, body: dict[str, Any]) -> None:
        if ACCEPTOR not in self.roles:
            return
        if self.learned is not None:
            self._to(src, MSG_DECIDED, {"value": self.learned})
            return
        b = synod.ballot(body["ballot"])
        ok, entries = self.acceptor.prepare(b)
        self._to(src, MSG_PROMISE, {"ballot": list(b), "ok": ok, "promised": list(self.acceptor.promised),
                                    "accepted": entries})
        if PROPOSER in self.roles:
            self._preempt_if_above(self.acceptor.promised)

    def on_accept(self, src: str, body: dict[str, Any]) -> None:
        if ACCEPTOR not in self.roles:
            return
        b = synod.ballot(body["ballot"])
        ok = self.acceptor.accept(b, [(0, body["value"])])
        answer: dict[str, Any] = {"ballot": list(b), "ok": ok, "promised": list(self.acceptor.promised)}
        if ok:
            answer["value"] = body["value"]
            self._to_all(sorted({*self.learners, src}), MSG_ACCEPTED, answer)
        else:
            self._to(src, MSG_ACCEPTED, answer)
        if PROPOSER in self.roles:
            self._preempt_if_above(self.acceptor.promised)

    def on_query(self, src: str, body: dict[str, Any]) -> None:
        if self.learned is not None:
            self._to(src, MSG_DECIDED, {"value": self.learned})
        elif ACCEPTOR in self.roles and 0 in self.acceptor.accepted:
            b, value = self.acceptor.accepted[0]
            self._to(src, MSG_ACCEPTED, {"ballot": list(b), "ok": True, "value": value,
                                         "promised": list(self.acceptor.promised)})

    # -- proposer ----------------------------------------------------------------------------------
    def on_promise(self, src: str, body: dict[str, Any]) -> None:
        if PROPOSER not in self.roles:
            return
        answering = synod.ballot(body["ballot"])
        self.ballots.observe(synod.ballot(body["promised"]))
        if self.state != PREPARING:
            return
        if body["ok"]:
            if self.phase1.add(src, answering, body["accepted"]) and self.phase1.reached:
                self.step("promised")
        elif answering == self.ballot:
            self.step("preempted")

    def on_accepted(self, src: str, body: dict[str, Any]) -> None:
        b = synod.ballot(body["ballot"])
        if body["ok"] and LEARNER in self.roles and src in self.acceptors:
            seen = self.votes.setdefault((b, body["value"]), set())
            seen.add(src)
            if len(seen) >= self.quorum:
                self.learn(body["value"], b)
        if PROPOSER not in self.roles or b != self.ballot or self.state != ACCEPTING:
            return
        if not body["ok"]:
            self._preempt_if_above(synod.ballot(body["promised"]))
            return
        self.accepts.add(src)
        if len(self.accepts) >= self.quorum:
            self.won = True
            self.learn(self.proposing, b)

    # -- learner -------------------------------------------------------------------------------------
    def on_decided(self, src: str, body: dict[str, Any]) -> None:
        if self.learned is None:
            self.learn(body["value"], None, via=src)

    def learn(self, value: Any, b: Ballot | None, via: str | None = None) -> None:
        """A value is chosen: in ballot ``b`` (a majority accepted it) or as ``via`` told us.
        Each (ballot, value) is traced once, so two values chosen would both show."""
        if (b, value) not in self.traced:
            self.traced.add((b, value))
            data: dict[str, Any] = {"slot": 0, "value": value}
            if b is not None:
                data["ballot"] = list(b)
            if via is not None:
                data["via"] = via
            self.ctx.trace("commit", data=data)
        if self.learned is not None:
            return
        self.learned = value
        self.ctx.cancel_timer(TIMER_LEARN)
        for client in self.clients:
            self.ctx.reply(client, {"type": "ok", "value": value})
        self.clients = []
        if PROPOSER in self.roles:
            self.maybe_step("learned")
