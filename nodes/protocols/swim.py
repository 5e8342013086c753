"""SWIM membership and failure detection, as hashicorp/memberlist does it, as a sans-IO core.

Das, Gupta and Motivala, "SWIM: Scalable Weakly-consistent Infection-style
Process Group Membership Protocol" (DSN 2002), with the Lifeguard extensions
(Dadgar, Phillips and Currey, arXiv 1707.00788) that memberlist ships. What
it implements (docs/swim.md has the long form):

* **Probing.** Every ``probe_interval`` a node pings the next member of a
  shuffled round-robin list (reshuffled at each wrap). No ack within
  ``probe_timeout``: it asks ``indirect_checks`` random members to ping the
  target for it (``ping_req``); they relay the ack, or send a ``nack`` when they
  hear nothing, which tells the prober that *they* are alive and listening.
  No ack by the end of the probe: the target becomes *suspect*.
* **Suspicion and incarnations.** Every member owns an incarnation number.
  ``suspect`` and ``dead`` messages name the incarnation they accuse; a member
  that hears it is accused answers with ``alive`` at a higher incarnation
  (refutation), and an alive message overrides suspicion or death only with a
  strictly higher incarnation. A suspicion that nobody refutes in time becomes
  *dead*. The timeout starts at ``suspicion_max_timeout_mult`` times the base
  and shrinks towards the base (``suspicion_mult * max(1, log10 n) *
  probe_interval``) as independent members confirm it (memberlist's
  suspicion.go: ``max - log(c+1)/log(k+1) * (max - min)`` after ``c`` of
  ``k = suspicion_mult - 2`` confirmations).
* **Local health (Lifeguard).** An awareness score in ``[0,
  awareness_max_multiplier)`` rises when this node's own probes fail without
  the nacks it expected, and when it must refute, and falls with each
  successful probe; the probe's whole window is ``probe_interval * (score +
  1)``. A node that is itself slow waits longer before accusing anyone.
* **Dissemination.** Membership changes queue as broadcasts, piggybacked on
  every message (pings, acks, ping-reqs, nacks) and sent to ``gossip_nodes``
  random members every ``gossip_interval``, each at most ``retransmit_mult *
  ceil(log10(n + 1))`` times, least-sent first; a newer update about a member
  replaces the older one in the queue. Every ``push_pull_interval`` a node
  exchanges its whole view with one random member.
* **Rejoin.** A node's own incarnation is durable; after a restart it comes
  back one above the last it ever announced (so above anything another member
  can hold about it), announces itself and pulls a full view from one member.

A core judges lateness by its clock, not by the order in which the runtime
hands it things: after a stall (SIGSTOP, a long GC pause, a starved CPU) every
timer and every message that came due during it arrive at once, and a real
process cannot tell which came first. So on every message and every timer the
core first settles what is overdue -- a probe past its window has failed, a
suspicion past its deadline is a death -- and only then reads the message. An
ack read after its probe's window counts for nothing, as in memberlist, whose
ack handlers are reaped by their own timers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from nodes.protocols.core import ConfigValueError, Context, Core, Tunables

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
STATUSES = (ALIVE, SUSPECT, DEAD)

MSG_PING = "ping"
MSG_ACK = "ack"
MSG_PING_REQ = "ping_req"
MSG_NACK = "nack"
MSG_GOSSIP = "gossip"
MSG_SYNC = "sync"

TIMER_PROBE = "probe"                  # the periodic probe tick
TIMER_PROBE_TIMEOUT = "probe_timeout"  # direct ping unanswered: go indirect
TIMER_PROBE_END = "probe_end"          # the probe's window (scaled by awareness) closes
TIMER_GOSSIP = "gossip"
TIMER_PUSH_PULL = "push_pull"
TIMER_SUSPECT = "suspect"              # wakes the core at the earliest suspicion deadline
TIMER_RELAY = "relay"                  # wakes an intermediary at its earliest nack deadline

INCARNATION = "incarnation"            # storage key: the highest incarnation this node announced
NACK_FRACTION = 0.8                    # an intermediary nacks after this share of probe_timeout
EPSILON = 1e-9                         # a deadline "has passed" at now >= deadline - EPSILON

# An update as it travels: [kind, member, incarnation, from]; kind is one of STATUSES.
Update = list[Any]


@dataclasses.dataclass(frozen=True)
class SwimConfig(Tunables):
    """memberlist's knobs, its ``DefaultLANConfig`` values as the defaults."""

    probe_interval: float = dataclasses.field(
        default=1.0,
        metadata={"unit": "s", "doc": (
            "time between probes of one member by this node (memberlist ProbeInterval). Each member "
            "is probed by someone about every interval, so a crash is first noticed within about one "
            "interval; shorter detects sooner and sends more pings. Also the unit of the suspicion "
            "timeout and, scaled by the awareness score, the whole window of one probe")},
    )
    probe_timeout: float = dataclasses.field(
        default=0.5,
        metadata={"unit": "s", "doc": (
            "how long the direct ping waits for its ack before asking indirect_checks members to "
            "ping the target (memberlist ProbeTimeout). Set it near the network's 99th-percentile "
            "round trip: shorter sends needless ping-reqs, longer leaves less of the probe window "
            "for the indirect pings. Must be below probe_interval")},
    )
    indirect_checks: int = dataclasses.field(
        default=3,
        metadata={"unit": "count", "doc": (
            "members asked to ping a target that missed its direct ack (memberlist IndirectChecks). "
            "One path through any of them clears the target, so more helpers make a false "
            "suspicion under loss or a one-link fault rarer, at k ping-reqs, pings and acks a "
            "failed probe")},
    )
    suspicion_mult: int = dataclasses.field(
        default=4,
        metadata={"unit": "count", "doc": (
            "the base suspicion timeout is suspicion_mult * max(1, log10 n) * probe_interval "
            "(memberlist SuspicionMult): the time a suspect member has, at least, to refute. "
            "Larger: fewer false deaths on a slow or lossy network, slower detection of real "
            "crashes. k = suspicion_mult - 2 independent confirmations bring the timeout down to "
            "this base")},
    )
    suspicion_max_timeout_mult: int = dataclasses.field(
        default=6,
        metadata={"unit": "count", "doc": (
            "a suspicion starts at this multiple of the base timeout and shrinks towards the base "
            "as other members confirm it (memberlist SuspicionMaxTimeoutMult; Lifeguard's local "
            "health aware suspicion). A lone accuser -- perhaps itself slow -- must wait the long "
            "timeout; a suspicion many members share ends quickly. 1 gives SWIM's fixed timeout")},
    )
    retransmit_mult: int = dataclasses.field(
        default=4,
        metadata={"unit": "count", "doc": (
            "each membership update is sent retransmit_mult * ceil(log10(n + 1)) times before this "
            "node stops spreading it (memberlist RetransmitMult). Higher: an update reaches every "
            "member with higher probability under loss, at more bytes on every message")},
    )
    gossip_interval: float = dataclasses.field(
        default=0.2,
        metadata={"unit": "s", "doc": (
            "how often queued updates are sent to gossip_nodes random members on top of the "
            "piggybacking on probes (memberlist GossipInterval). Shorter spreads news faster, more "
            "messages while there is news; nothing is sent when the queue is empty")},
    )
    gossip_nodes: int = dataclasses.field(
        default=3,
        metadata={"unit": "count", "doc": (
            "members each gossip round goes to (memberlist GossipNodes). 0 turns the gossip rounds "
            "off: updates then travel only piggybacked on probe traffic, as in the SWIM paper")},
    )
    gossip_to_the_dead_time: float = dataclasses.field(
        default=30.0,
        metadata={"unit": "s", "doc": (
            "for this long after a member is declared dead it still gets gossip (so a member that "
            "was wrongly declared dead hears it and refutes); after it, the member leaves the probe "
            "list and the cluster size estimate (memberlist GossipToTheDeadTime)")},
    )
    push_pull_interval: float = dataclasses.field(
        default=30.0,
        metadata={"unit": "s", "doc": (
            "how often a node exchanges its whole membership view with one random member "
            "(memberlist PushPullInterval): anti-entropy that repairs what gossip missed. 0 turns "
            "it off; a restarted node still pulls one full view as it rejoins. Each exchange "
            "costs two messages the size of the whole view")},
    )
    awareness_max_multiplier: int = dataclasses.field(
        default=8,
        metadata={"unit": "count", "doc": (
            "the awareness (local health) score stays below this; a probe's window is probe_interval "
            "* (score + 1) (memberlist AwarenessMaxMultiplier; Lifeguard's local health aware "
            "probe). Higher lets a struggling node back off further before it accuses anyone; "
            "1 turns local health awareness off")},
    )
    max_piggyback: int = dataclasses.field(
        default=16,
        metadata={"unit": "count", "doc": (
            "most updates carried on one message (memberlist fills a 1400-byte UDP packet, about "
            "this many updates). Fewer: smaller messages, slower dissemination when many members "
            "change at once")},
    )

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "gossip_interval"):
            if getattr(self, name) <= 0:
                raise ConfigValueError(name, f"must be above 0s, got {getattr(self, name)}s")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigValueError("probe_timeout", f"must be below probe_interval "
                                   f"({self.probe_interval}s), got {self.probe_timeout}s")
        for name in ("suspicion_mult", "suspicion_max_timeout_mult", "retransmit_mult",
                     "awareness_max_multiplier", "max_piggyback"):
            if getattr(self, name) < 1:
                raise ConfigValueError(name, "must be at least 1")


# -- the suspicion timeout (memberlist util.go and suspicion.go) ----------------------------

def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """The base (minimum) suspicion timeout: ``mult * max(1, log10 n) * interval``, the node
    scale truncated to thousandths as memberlist does."""
    scale = math.floor(1000.0 * max(1.0, math.log10(max(1.0, float(n))))) / 1000.0
    return mult * scale * interval


def retransmit_limit(mult: int, n: int) -> int:
    """How many times one update is sent: ``mult * ceil(log10(n + 1))``."""
    return mult * math.ceil(math.log10(n + 1))


def confirmed_timeout(confirmations: int, k: int, lo: float, hi: float) -> float:
    """The whole suspicion timeout after ``confirmations`` of the ``k`` wanted: from ``hi`` down
    to ``lo`` on a log scale, truncated to the millisecond as memberlist does."""
    if k < 1:
        return lo
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    return max(lo, math.floor(1000.0 * raw) / 1000.0)


class Suspicion:
    """One suspicion timer: its deadline moves closer with each new confirmer."""

    __slots__ = ("start", "k", "lo", "hi", "confirmers", "deadline")

    def __init__(self, accuser: str, k: int, lo: float, hi: float, now: float) -> None:
        self.start = now
        self.k = k
        self.lo, self.hi = lo, hi
        self.confirmers = [accuser]      # the accuser's own repeat is not a confirmation
        self.deadline = now + (hi if k >= 1 else lo)

    def confirm(self, accuser: str) -> bool:
        """A (possibly new) member also suspects; True if it was news (then it is re-gossiped)."""
        if len(self.confirmers) - 1 >= self.k or accuser in self.confirmers:
            return False
        self.confirmers.append(accuser)
        self.deadline = self.start + confirmed_timeout(len(self.confirmers) - 1, self.k, self.lo, self.hi)
        return True


class Member:
    """This node's view of one member."""

    __slots__ = ("name", "inc", "status", "changed")

    def __init__(self, name: str, inc: int = 0) -> None:
        self.name = name
        self.inc = inc
        self.status = ALIVE
        self.changed = 0.0          # when status last changed (for gossip to the dead)


class Probe:
    """The probe in flight."""

    __slots__ = ("seq", "target", "end", "indirect_due", "helpers", "nacks", "indirect_sent")

    def __init__(self, seq: int, target: str, end: float, indirect_due: float) -> None:
        self.seq = seq
        self.target = target
        self.end = end                  # the window closes: no ack by then is a failure
        self.indirect_due = indirect_due
        self.helpers = 0                # ping-reqs sent, each owing an ack or a nack
        self.nacks = 0
        self.indirect_sent = False


def well_formed(type: str, body: Any) -> bool:
    """Whether a message body has the fields and types its handler relies on."""
    if not isinstance(body, dict):
        return False
    updates = body.get("updates", [])
    if not isinstance(updates, list) or not all(_is_update(u) for u in updates):
        return False
    if type in (MSG_PING, MSG_ACK, MSG_NACK):
        return _is_int(body.get("seq"))
    if type == MSG_PING_REQ:
        return _is_int(body.get("seq")) and isinstance(body.get("target"), str)
    if type == MSG_SYNC:
        members = body.get("members")
        return (isinstance(body.get("reply"), bool) and isinstance(members, list)
                and all(_is_update(m) for m in members))
    return type == MSG_GOSSIP


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_update(u: Any) -> bool:
    return (isinstance(u, list) and len(u) == 4 and u[0] in STATUSES and isinstance(u[1], str)
            and _is_int(u[2]) and u[2] >= 0 and isinstance(u[3], str))


class Swim(Core):
    name = "swim"
    message_types = frozenset({MSG_PING, MSG_ACK, MSG_PING_REQ, MSG_NACK, MSG_GOSSIP, MSG_SYNC})
    tunables = SwimConfig
    presets = {
        "lan": {},
        # memberlist DefaultWANConfig
        "wan": {"probe_interval": "5s", "probe_timeout": "3s", "suspicion_mult": 6,
                "push_pull_interval": "60s", "gossip_nodes": 4, "gossip_interval": "500ms",
                "gossip_to_the_dead_time": "60s"},
        # memberlist DefaultLocalConfig: one host, loopback
        "local": {"indirect_checks": 1, "retransmit_mult": 2, "suspicion_mult": 3,
                  "push_pull_interval": "15s", "probe_timeout": "200ms", "gossip_interval": "100ms",
                  "gossip_to_the_dead_time": "15s"},
        # LAN timings ten times faster: quick demos and tests on a fast network
        "fast": {"probe_interval": "100ms", "probe_timeout": "50ms", "gossip_interval": "20ms",
                 "push_pull_interval": "3s", "gossip_to_the_dead_time": "3s"},
        # SWIM as the 2002 paper has it: no Lifeguard (a fixed suspicion timeout, no local health)
        "classic": {"suspicion_max_timeout_mult": 1, "awareness_max_multiplier": 1},
    }
    bugs = {
        "no_suspicion": "a failed probe declares the target dead at once, with no suspicion a "
                        "member could refute: every lost ping-and-ack becomes a death (accuracy)",
        "no_refutation": "a member that hears it is suspected or dead does not answer with a "
                         "higher incarnation, so every false suspicion runs out into a death "
                         "(accuracy)",
        "stale_alive_overrides_dead": "an alive message resurrects a dead member whatever its "
                                      "incarnation: an old alive still in flight or in a push-pull "
                                      "view brings a crashed member back (completeness)",
        "no_local_health": "the awareness score is kept but never applied: a node that is itself "
                           "slow probes on the base window and accuses healthy members it simply "
                           "did not hear in time (accuracy, with a slow member; plainest on SWIM's "
                           "fixed suspicion timeout, as a lone accuser's long suspicion also "
                           "shields the accused)",
    }
    default_checks = ("completeness", "accuracy")

    config: SwimConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else SwimConfig())
        self.me = ctx.node
        self.members: dict[str, Member] = {n: Member(n) for n in sorted(ctx.nodes)}
        self.others = [n for n in self.members if n != self.me]
        self.inc = 0
        self.awareness = 0
        # With no_local_health the score is still kept (and traced), only never applied.
        self._apply_health = not self.has_bug("no_local_health")
        self.seq = 0
        self.order: list[str] = []          # round-robin probe order
        self.probe_index = 0
        self.probe: Probe | None = None
        self.tick_pending = False           # a probe tick came while a probe was in flight
        self.suspicions: dict[str, Suspicion] = {}
        self.relays: dict[int, tuple[str, int, float]] = {}   # our seq -> (requester, its seq, nack due)
        self.reaped: set[str] = set()       # dead long enough to be out of the probe list
        # Broadcast queue: member -> [update, transmits, order]; one entry per member.
        self.queue: dict[str, list[Any]] = {}
        self.queued = 0
        self.dropped = 0

    # -- start and durable state ------------------------------------------------------------
    def start(self) -> None:
        rng = self.ctx.rng
        stored = self.ctx.storage.get(INCARNATION)
        self.seq = rng.randrange(1 << 30)
        me = self.members[self.me]
        if stored is not None:
            # Rejoin: above the last incarnation we ever announced, so above anything held about us.
            self.inc = int(stored) + 1
        self.ctx.storage.put(INCARNATION, self.inc)
        me.inc = self.inc
        self._trace_member(me, self.me)
        if stored is not None:
            self.queue_update([ALIVE, self.me, self.inc, self.me])
            self.send_sync(reply=True)
        self.ctx.set_timer(TIMER_PROBE, rng.uniform(0, self.config.probe_interval))
        if self.config.gossip_nodes > 0:
            self.ctx.set_timer(TIMER_GOSSIP, rng.uniform(0, self.config.gossip_interval))
        if self.config.push_pull_interval > 0:
            self.ctx.set_timer(TIMER_PUSH_PULL, rng.uniform(0, self.config.push_pull_interval))

    # -- entry points ---------------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if src not in self.members or src == self.me or not well_formed(type, body):
            self.dropped += 1
            self.ctx.trace("drop", type=type, peer=src, data={"reason": "malformed"})
            return
        self.settle_overdue()
        for update in body.get("updates", ()):
            self.handle_update(update)
        if type == MSG_PING:
            self.send(src, MSG_ACK, {"seq": body["seq"]})
        elif type == MSG_ACK:
            self.handle_ack(body["seq"])
        elif type == MSG_NACK:
            probe = self.probe
            if probe is not None and probe.seq == body["seq"]:
                probe.nacks += 1
        elif type == MSG_PING_REQ:
            self.handle_ping_req(src, body["seq"], body["target"])
        elif type == MSG_SYNC:
            if body["reply"]:
                self.send(src, MSG_SYNC, {"members": self.view(), "reply": False})
            self.merge(body["members"])

    def handle_timer(self, name: str) -> None:
        self.settle_overdue()
        if name == TIMER_PROBE:
            self.ctx.set_timer(TIMER_PROBE, self.config.probe_interval)
            if self.probe is not None:
                self.tick_pending = True
            else:
                self.start_probe()
        elif name == TIMER_PROBE_TIMEOUT:
            self.maybe_probe_indirect()
        elif name == TIMER_GOSSIP:
            self.ctx.set_timer(TIMER_GOSSIP, self.config.gossip_interval)
            self.broadcast_gossip()
        elif name == TIMER_PUSH_PULL:
            self.ctx.set_timer(TIMER_PUSH_PULL, self.config.push_pull_interval)
            self.send_sync(reply=True)
        # TIMER_PROBE_END, TIMER_SUSPECT, TIMER_RELAY: settle_overdue did the work.

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        """``{"f": "members"}``: this node's view, ``{member: [status, incarnation]}``."""
        if op.get("f") != "members":
            self.ctx.reply(client, {"type": "fail", "error": "unsupported"})
            return
        self.ctx.reply(client, {"type": "ok", "value": {
            m.name: [m.status, m.inc] for m in self.members.values()}})

    def status(self) -> dict[str, Any]:
        counts = {s: 0 for s in STATUSES}
        for m in self.members.values():
            counts[m.status] += 1
        return {"role": "member", "incarnation": self.inc, "awareness": self.awareness, **counts}

    # -- what is overdue ------------------------------------------------------------------
    def settle_overdue(self) -> None:
        """Conclude every deadline that has passed, before anything read now can count."""
        now = self.ctx.now() + EPSILON
        probe = self.probe
        if probe is not None and now >= probe.end:
            self.conclude_probe(success=False)
        if self.relays:
            for seq in sorted(self.relays):
                requester, their_seq, due = self.relays[seq]
                if now >= due:
                    del self.relays[seq]
                    self.send(requester, MSG_NACK, {"seq": their_seq})
            self._arm_earliest(TIMER_RELAY, [due for _, _, due in self.relays.values()])
        if self.suspicions:
            for name, s in sorted(self.suspicions.items(), key=lambda kv: (kv[1].deadline, kv[0])):
                if now < s.deadline:
                    break
                self.expire_suspicion(name, s)
            self._arm_earliest(TIMER_SUSPECT, [s.deadline for s in self.suspicions.values()])

    def _arm_earliest(self, timer: str, deadlines: list[float]) -> None:
        if deadlines:
            self.ctx.set_timer(timer, max(0.0, min(deadlines) - self.ctx.now()))
        else:
            self.ctx.cancel_timer(timer)

    # -- probing ------------------------------------------------------------------------------
    def next_target(self) -> str | None:
        """The next member to probe: round-robin over a shuffled list, skipping dead ones."""
        for _ in range(2 * len(self.others) + 1):
            if self.probe_index >= len(self.order):
                self._reshuffle()
                if not self.order:
                    return None
            name = self.order[self.probe_index]
            self.probe_index += 1
            if self.members[name].status != DEAD:
                return name
        return None

    def _reshuffle(self) -> None:
        # memberlist's resetNodes: reap members dead longer than gossip_to_the_dead_time.
        now = self.ctx.now()
        for name in self.others:
            m = self.members[name]
            if m.status == DEAD and now - m.changed > self.config.gossip_to_the_dead_time:
                self.reaped.add(name)
        self.order = [n for n in self.others if n not in self.reaped]
        self.ctx.rng.shuffle(self.order)
        self.probe_index = 0

    def start_probe(self) -> None:
        target = self.next_target()
        if target is None:
            return
        now = self.ctx.now()
        self.seq += 1
        window = self.config.probe_interval * (self.awareness + 1 if self._apply_health else 1)
        self.probe = probe = Probe(self.seq, target, now + window, now + self.config.probe_timeout)
        m = self.members[target]
        extra = None
        if m.status != ALIVE:
            # Lifeguard's buddy system: tell a suspect it is suspected, so it can refute at once.
            extra = [SUSPECT, target, m.inc, self.me]
        self.send(target, MSG_PING, {"seq": probe.seq}, first=extra)
        self.ctx.set_timer(TIMER_PROBE_TIMEOUT, self.config.probe_timeout)
        self.ctx.set_timer(TIMER_PROBE_END, window)

    def maybe_probe_indirect(self) -> None:
        probe = self.probe
        if probe is None or probe.indirect_sent:
            return
        probe.indirect_sent = True
        helpers = self.indirect_helpers(probe.target)
        probe.helpers = len(helpers)
        for h in helpers:
            self.send(h, MSG_PING_REQ, {"seq": probe.seq, "target": probe.target})

    def indirect_helpers(self, target: str) -> list[str]:
        candidates = [n for n in self.others
                      if n != target and self.members[n].status == ALIVE and n not in self.reaped]
        k = min(self.config.indirect_checks, len(candidates))
        return sorted(self.ctx.rng.sample(candidates, k)) if k else []

    def handle_ack(self, seq: int) -> None:
        relay = self.relays.pop(seq, None)
        if relay is not None:               # we pinged for someone: pass the ack on
            self.send(relay[0], MSG_ACK, {"seq": relay[1]})
            return
        probe = self.probe
        if probe is not None and probe.seq == seq:
            self.conclude_probe(success=True)

    def handle_ping_req(self, requester: str, their_seq: int, target: str) -> None:
        if target not in self.members or target == self.me:
            return
        self.seq += 1
        # Lifeguard: nack at 80% of the probe timeout, so that it reaches the prober inside its
        # window (memberlist waits the whole timeout and leans on its TCP fallback ping).
        due = self.ctx.now() + NACK_FRACTION * self.config.probe_timeout
        self.relays[self.seq] = (requester, their_seq, due)
        self.send(target, MSG_PING, {"seq": self.seq})
        self._arm_earliest(TIMER_RELAY, [d for _, _, d in self.relays.values()])

    def conclude_probe(self, success: bool) -> None:
        probe = self.probe
        assert probe is not None
        self.probe = None
        self.ctx.cancel_timer(TIMER_PROBE_TIMEOUT)
        self.ctx.cancel_timer(TIMER_PROBE_END)
        if success:
            self.apply_awareness(-1)
        else:
            if probe.indirect_sent:
                missed = probe.helpers - probe.nacks if probe.helpers else 1
            else:
                # The window closed before we even got to the indirect pings (we stalled):
                # as memberlist would, count every helper we would have asked as silent.
                missed = max(1, len(self.indirect_helpers(probe.target)))
            self.apply_awareness(missed)
            m = self.members.get(probe.target)
            if m is not None and m.status != DEAD:
                if self.has_bug("no_suspicion"):
                    self.handle_dead(probe.target, m.inc, self.me)
                else:
                    self.handle_suspect(probe.target, m.inc, self.me)
        if self.tick_pending:
            self.tick_pending = False
            self.start_probe()

    def apply_awareness(self, delta: int) -> None:
        score = min(max(self.awareness + delta, 0), self.config.awareness_max_multiplier - 1)
        if score != self.awareness:
            self.awareness = score
            self.ctx.trace("state", data={"awareness": score})

    # -- membership updates -----------------------------------------------------------------
    def handle_update(self, update: Update) -> None:
        kind, name, inc, accuser = update
        if kind == ALIVE:
            self.handle_alive(name, inc)
        elif kind == SUSPECT:
            self.handle_suspect(name, inc, accuser)
        else:
            self.handle_dead(name, inc, accuser)

    def handle_alive(self, name: str, inc: int) -> None:
        m = self.members.get(name)
        if m is None:
            return
        if name == self.me:
            if inc > self.inc:          # someone holds a newer incarnation of us: outbid it
                self.refute(inc)
            return
        stale_ok = m.status == DEAD and self.has_bug("stale_alive_overrides_dead")
        if inc <= m.inc and not stale_ok:
            return
        self.suspicions.pop(name, None)
        self.reaped.discard(name)
        self.queue_update([ALIVE, name, inc, name])
        m.inc = max(m.inc, inc) if stale_ok else inc
        self._set_status(m, ALIVE, name)

    def handle_suspect(self, name: str, inc: int, accuser: str) -> None:
        m = self.members.get(name)
        if m is None or inc < m.inc:
            return
        s = self.suspicions.get(name)
        if s is not None:
            if s.confirm(accuser):
                self.queue_update([SUSPECT, name, inc, accuser])
                self._arm_earliest(TIMER_SUSPECT, [x.deadline for x in self.suspicions.values()])
            return
        if m.status != ALIVE:
            return
        if name == self.me:
            if not self.has_bug("no_refutation"):
                self.refute(inc)
            return
        self.queue_update([SUSPECT, name, inc, accuser])
        m.inc = inc
        now = self.ctx.now()            # read once: the suspicion knows itself by this instant
        self._set_status(m, SUSPECT, accuser, now)
        n = self.cluster_size()
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(self.config.suspicion_mult, n, self.config.probe_interval)
        hi = self.config.suspicion_max_timeout_mult * lo
        self.suspicions[name] = Suspicion(accuser, k, lo, hi, now)
        self._arm_earliest(TIMER_SUSPECT, [x.deadline for x in self.suspicions.values()])

    def expire_suspicion(self, name: str, s: Suspicion) -> None:
        del self.suspicions[name]
        m = self.members[name]
        if m.status == SUSPECT and m.changed == s.start:
            self.handle_dead(name, m.inc, self.me)

    def handle_dead(self, name: str, inc: int, accuser: str) -> None:
        m = self.members.get(name)
        if m is None or inc < m.inc:
            return
        self.suspicions.pop(name, None)
        if m.status == DEAD:
            return
        if name == self.me:
            if not self.has_bug("no_refutation"):
                self.refute(inc)
            return
        self.queue_update([DEAD, name, inc, accuser])
        m.inc = inc
        self._set_status(m, DEAD, accuser)

    def refute(self, accused: int) -> None:
        """We are accused at incarnation ``accused``: announce ourselves above it."""
        inc = max(self.inc + 1, accused + 1)
        self.inc = inc
        self.ctx.storage.put(INCARNATION, inc)     # durable before the alive leaves
        me = self.members[self.me]
        me.inc = inc
        self.apply_awareness(1)                    # being accused is a sign we may be the slow one
        self._trace_member(me, self.me, refute=True)
        self.queue_update([ALIVE, self.me, inc, self.me])

    def merge(self, remote: list[Update]) -> None:
        """A push-pull view: alive as alive; suspect and dead only as our own suspicion
        (memberlist prefers to suspect rather than to kill on someone else's full view)."""
        for status, name, inc, _ in remote:
            if status == ALIVE:
                self.handle_alive(name, inc)
            else:
                self.handle_suspect(name, inc, self.me)

    def view(self) -> list[Update]:
        return [[m.status, m.name, m.inc, self.me] for m in self.members.values()]

    def _set_status(self, m: Member, status: str, by: str, now: float | None = None) -> None:
        m.status = status
        m.changed = self.ctx.now() if now is None else now
        self._trace_member(m, by)

    def _trace_member(self, m: Member, by: str, **extra: Any) -> None:
        self.ctx.trace("state", data={"member": m.name, "status": m.status, "inc": m.inc, "by": by, **extra})

    def cluster_size(self) -> int:
        """memberlist's estNumNodes: every member not yet reaped, ourselves included."""
        return len(self.members) - len(self.reaped)

    # -- dissemination ------------------------------------------------------------------------
    def queue_update(self, update: Update) -> None:
        """Queue a broadcast; it replaces any queued update about the same member."""
        self.queued += 1
        self.queue[update[1]] = [update, 0, self.queued]

    def take_updates(self, room: int) -> list[Update]:
        """Up to ``room`` queued updates, least-sent (then newest) first; each send counts."""
        if not self.queue or room <= 0:
            return []
        limit = retransmit_limit(self.config.retransmit_mult, self.cluster_size())
        chosen = sorted(self.queue.values(), key=lambda e: (e[1], -e[2]))[:room]
        out = []
        for entry in chosen:
            out.append(entry[0])
            entry[1] += 1
            if entry[1] >= limit:
                del self.queue[entry[0][1]]
        return out

    def send(self, dst: str, type: str, body: dict[str, Any], first: Update | None = None) -> None:
        """Send with as many queued updates piggybacked as fit (``first`` ahead of them)."""
        room = self.config.max_piggyback
        updates = [first] if first is not None else []
        updates += self.take_updates(room - len(updates))
        body["updates"] = updates
        self.ctx.send(dst, type, body)

    def broadcast_gossip(self) -> None:
        if not self.queue:
            return
        now = self.ctx.now()
        targets = [n for n in self.others if n not in self.reaped and (
            self.members[n].status != DEAD
            or now - self.members[n].changed <= self.config.gossip_to_the_dead_time)]
        k = min(self.config.gossip_nodes, len(targets))
        for dst in sorted(self.ctx.rng.sample(targets, k)) if k else []:
            updates = self.take_updates(self.config.max_piggyback)
            if not updates:
                return
            self.ctx.send(dst, MSG_GOSSIP, {"updates": updates})

    def send_sync(self, reply: bool) -> None:
        peers = [n for n in self.others if self.members[n].status == ALIVE and n not in self.reaped]
        if peers:
            self.send(self.ctx.rng.choice(peers), MSG_SYNC, {"members": self.view(), "reply": reply})
