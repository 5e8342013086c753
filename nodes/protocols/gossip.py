"""Gossip (Demers et al., "Epidemic Algorithms for Replicated Database Maintenance"; Cassandra's
gossiper) as a sans-IO core.

Every node holds the same replicated state and spreads what it learns:

* **values** clients broadcast (Maelstrom's broadcast: a grow-only set of ints or strings),
  and **death certificates** that delete a value for good (a two-phase set: once dead, a
  value never comes back);
* per node, Cassandra's **endpoint state** (tutorial section 7.4): a heartbeat counter under
  a generation (bumped on every restart), a load figure (broadcasts the node accepted) and the
  schema version the node runs. A phi-accrual failure detector (Hayashibara et al.) watches
  each peer's heartbeat as it arrives, directly or through third parties.

Every value or certificate is an *update* with a dot ``(origin, seq)``: the node that took it
from a client numbers its updates 1, 2, 3... Per origin a node keeps what it holds as a
watermark ``w`` (it holds 1..w) plus the few it holds above (``extras``): rumors arrive out of
order, and this pair is the digest anti-entropy compares.

Two ways spread it:

* **rumor mongering**, every ``interval``: ``push`` sends the node's hot updates to ``fanout``
  random live peers; ``pull`` asks them for theirs; ``push_pull`` does both in one round trip.
  A rumor stops being hot by the ``stop`` rule: ``counter`` (after ``stop_k`` rounds, or in
  ``push_pull`` after ``stop_k`` peers that already knew it), ``coin`` (with probability
  1/``stop_k`` each time), or ``none`` (never: pure dissemination, "infect forever").
* **anti-entropy**, every ``anti_entropy``, Cassandra's three-way digest exchange with one
  random live peer: SYN carries the digest (per origin: generation, heartbeat, endpoint
  version, watermark, extras); ACK carries what the peer has that the initiator lacks plus
  the digest entries of what the peer lacks; ACK2 carries those. It repairs whatever rumor
  mongering missed (Demers' residue, a partition) and carries the endpoint states. Updates it
  brings are made hot again, so a repair spreads as fast as a rumor.

The verbs follow raft.py: ``handle_*`` react to a message, ``maybe_*`` act if a condition
holds, ``broadcast_*`` send to peers. The mode picks the round function once, as raft's
``become_*`` pick step handlers. Nothing here reads a clock or draws randomness of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from array import array
from collections.abc import Callable, Iterable
from typing import Any

from nodes.protocols.core import ConfigValueError, Context, Core, Tunables
from nodes.units import shown

MODES = ("push", "pull", "push_pull")
STOPS = ("none", "counter", "coin")

MSG_RUMOR = "rumor"            # {u: [update], hb: [gen, hb], r?: 1 (push_pull: answer me)}
MSG_RUMOR_REPLY = "rumor_reply"  # {u: [update], k: [[origin, seq] the pusher sent that I knew], hb}
MSG_PULL = "pull"              # {hb}: answer with your hot updates
MSG_SYN = "syn"                # {d: {origin: [gen, hb, ver, w]}, x: {origin: [extra seq]}}
MSG_ACK = "ack"                # {u: [update], e: {origin: endpoint}, d, x: what the sender lacks}
MSG_ACK2 = "ack2"              # {u: [update], e: {origin: endpoint}}

VALUE, CERT = "v", "d"         # an update's kind: a broadcast value, a death certificate
OWN = "own"                    # storage log of this node's own updates: [seq, kind, value]
DEAD = "dead"                  # storage log of values this node learnt are dead
GEN = "gen"                    # storage key: starts so far (the generation)
SCHEMA = "schema"              # storage key: the schema this node runs [version, value, by]

TIMER_GOSSIP, TIMER_SYNC, TIMER_HEARTBEAT = "gossip", "sync", "heartbeat"
LOG10_E = math.log10(math.e)

# An endpoint state as it travels: [generation, heartbeat, version, load, [schema version,
# schema value, set by]]. The version counts changes of load and schema, not heartbeats.
G, HB, VER, LOAD, SCH = range(5)
NO_SCHEMA: list[Any] = [0, None, ""]      # shared by endpoints: never change it in place


@dataclasses.dataclass(frozen=True)
class GossipConfig(Tunables):
    mode: str = dataclasses.field(
        default="push",
        metadata={"unit": "name", "doc": (
            "push: send hot rumors to peers (fast start, slow end); pull: ask peers for theirs "
            "(slow start, fast end; costs a request per contact even when all is quiet); "
            "push_pull: both in one round trip, and the answer tells the pusher which rumors "
            "the peer already knew (the feedback the counter stop rule counts). Twice the "
            "messages of push per contact")},
    )
    fanout: int = dataclasses.field(
        default=3,
        metadata={"unit": "count", "doc": (
            "peers contacted each round (memberlist's GossipNodes). More: fewer rounds to reach "
            "everyone and a smaller residue, but proportionally more messages. 0 turns rumor "
            "mongering off: only anti-entropy spreads state, as Cassandra's gossiper does")},
    )
    interval: float = dataclasses.field(
        default=0.2,
        metadata={"unit": "s", "doc": (
            "time between rounds (memberlist's GossipInterval). Shorter: faster spread, more "
            "messages per second (a round sends at most fanout messages however many rumors "
            "are hot, so under load a short interval also means smaller batches)")},
    )
    stop: str = dataclasses.field(
        default="counter",
        metadata={"unit": "name", "doc": (
            "when a node stops spreading a rumor (Demers' rumor mongering): counter, after "
            "stop_k strikes; coin, with probability 1/stop_k at each strike; none, never. A "
            "strike is a round that sent the rumor (push), a pull it answered (pull), or an "
            "answer saying the peer already knew it (push_pull: Demers' feedback). none is pure "
            "dissemination (every round carries every update ever learnt: for the models). A "
            "rumor that stops early leaves a residue of nodes that never heard it, which only "
            "anti-entropy repairs")},
    )
    stop_k: int = dataclasses.field(
        default=4,
        metadata={"unit": "count", "doc": (
            "the k of the stop rule. Larger: a smaller residue (with push and the counter, "
            "roughly e^-(k·fanout) of the nodes miss a rumor) at the price of longer rumors, so bigger batches and, at "
            "low load, more messages")},
    )
    anti_entropy: float = dataclasses.field(
        default=1.0,
        metadata={"unit": "s", "doc": (
            "time between anti-entropy exchanges a node starts (SYN/ACK/ACK2 digests with one "
            "random live peer, as Cassandra does every second). It repairs what rumors missed "
            "and spreads heartbeats, load and schema. Shorter: faster repair and failure "
            "detection, three more messages per node per period. 0 turns it off")},
    )
    heartbeat: float = dataclasses.field(
        default=1.0,
        metadata={"unit": "s", "doc": (
            "how often a node bumps its own heartbeat counter and checks its failure detector. "
            "The counter reaches peers through anti-entropy and on every rumor the node sends. "
            "0 turns heartbeats and failure detection off")},
    )
    phi_threshold: int = dataclasses.field(
        default=8,
        metadata={"unit": "count", "doc": (
            "phi above which a peer is convicted (Cassandra's phi_convict_threshold). phi is "
            "-log10 of the chance that a live peer's next heartbeat is still this late, given "
            "the mean gap between its heartbeats: 8 convicts after about 18 mean gaps. Lower: "
            "faster detection, more live peers convicted on a slow network")},
    )
    phi_window: int = dataclasses.field(
        default=100,
        metadata={"unit": "count", "doc": (
            "heartbeat gaps remembered per peer for the detector's mean. Longer: steadier, "
            "slower to follow a peer whose heartbeats speed up or slow down")},
    )
    max_batch: int = dataclasses.field(
        default=1000,
        metadata={"unit": "count", "doc": (
            "most updates in one message; the rest leave in later rounds or exchanges. Keeps a "
            "message below the wire's size limit when a restarted node catches up on a long "
            "history; smaller batches spread a backlog more slowly")},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigValueError("mode", f"expected one of {', '.join(MODES)}, got {shown(self.mode)}")
        if self.stop not in STOPS:
            raise ConfigValueError("stop", f"expected one of {', '.join(STOPS)}, got {shown(self.stop)}")
        if self.fanout and self.interval <= 0:
            raise ConfigValueError("interval", f"must be above 0 when fanout is set, got {self.interval}s")
        if self.stop != "none" and self.stop_k < 1:
            raise ConfigValueError("stop_k", "must be at least 1")
        for name in ("anti_entropy", "heartbeat"):
            if getattr(self, name) < 0:
                raise ConfigValueError(name, "must not be negative (0 turns it off)")
        if self.phi_threshold < 1:
            raise ConfigValueError("phi_threshold", "must be at least 1")
        if self.phi_window < 1:
            raise ConfigValueError("phi_window", "must be at least 1")
        if self.max_batch < 1:
            raise ConfigValueError("max_batch", "must be at least 1")


class Origin:
    """What a node holds of one origin's updates: seq -> update, as watermark plus extras."""

    __slots__ = ("held", "w", "extras")

    def __init__(self) -> None:
        self.held: dict[int, list[Any]] = {}
        self.w = 0                   # holds every seq 1..w
        self.extras: set[int] = set()  # seqs held above w + 1

    def add(self, seq: int, update: list[Any]) -> None:
        self.held[seq] = update
        if seq == self.w + 1:
            self.w = seq
            extras = self.extras
            while self.w + 1 in extras:
                self.w += 1
                extras.discard(self.w)
        else:
            self.extras.add(seq)

    def forget(self, seq: int) -> None:
        """Drop a held update (only the no_death_certificates bug does)."""
        del self.held[seq]
        if seq <= self.w:
            self.extras.update(range(seq + 1, self.w + 1))
            self.w = seq - 1
        else:
            self.extras.discard(seq)

    def above(self, w: int, skip: Iterable[int]) -> list[list[Any]]:
        """The held updates a node with watermark ``w`` and extras ``skip`` lacks, by seq."""
        skip = set(skip)
        out = [self.held[s] for s in range(w + 1, self.w + 1) if s not in skip]
        out += [self.held[s] for s in sorted(self.extras) if s > w and s not in skip]
        return out

    def lacks_any(self, w: int, extras: Iterable[int]) -> bool:
        """Whether a node holding 1..w plus ``extras`` holds something this one does not."""
        held = self.held
        return w > self.w or any(s not in held for s in extras)


NO_UPDATES = Origin()        # what a node holds of an origin it has heard nothing from (never mutated)


def _valid_value(v: Any) -> bool:
    return type(v) is str or type(v) is int


def value_order(v: Any) -> tuple[bool, Any]:
    """Ints before strings, each in natural order: a read's values, the same on every node."""
    return (type(v) is str, v)


def _ints(x: Any, n: int) -> bool:
    return type(x) is list and len(x) == n and all(type(i) is int for i in x)


def _valid_endpoint(e: Any) -> bool:
    if type(e) is not list or len(e) != 5:
        return False
    g, hb, ver, load, sch = e
    return (type(g) is int and type(hb) is int and type(ver) is int and type(load) is int
            and type(sch) is list and len(sch) == 3 and type(sch[0]) is int
            and (sch[1] is None or _valid_value(sch[1])) and type(sch[2]) is str)


def _valid_extras(x: Any) -> bool:
    return type(x) is dict and all(type(o) is str and type(s) is list and all(type(i) is int for i in s)
                                   for o, s in x.items())


def well_formed(kind: str, body: Any, members: int) -> bool:
    """Whether a body has the fields and types its handler relies on (drop it otherwise).
    ``members`` is the lab's size: a SYN's digest has four ints per member."""
    if type(body) is not dict:
        return False
    g = body.get
    if kind in (MSG_RUMOR, MSG_RUMOR_REPLY, MSG_PULL):
        if not _ints(g("hb"), 2):
            return False
        if kind == MSG_PULL:
            return True
        if type(g("u")) is not list:      # each update is checked as it is learnt
            return False
        k = g("k", [])
        return kind == MSG_RUMOR or (type(k) is list and all(
            type(i) is list and len(i) == 2 and type(i[0]) is str and type(i[1]) is int for i in k))
    if kind == MSG_SYN:
        d = g("d")
        return (type(d) is list and len(d) == 4 * members and all(type(i) is int for i in d)
                and _valid_extras(g("x")))
    if kind == MSG_ACK:
        d = g("d")
        if not (type(d) is dict and all(type(o) is str and _ints(e, 4) for o, e in d.items())
                and _valid_extras(g("x"))):
            return False
    if kind in (MSG_ACK, MSG_ACK2):
        e = g("e")
        return (type(g("u")) is list and type(e) is dict
                and all(type(o) is str and _valid_endpoint(v) for o, v in e.items()))
    return False


@functools.lru_cache(maxsize=8)
def _membership(nodes: tuple[str, ...]) -> tuple[list[str], frozenset[str], dict[str, int]]:
    """(members in name order, as a set, each one's place in a digest). Shared: never change them."""
    order = sorted(nodes)
    return order, frozenset(order), {n: i for i, n in enumerate(order)}


class Detector:
    """Phi-accrual failure detection over one peer's heartbeat arrivals (exponential model,
    as Cassandra's): phi(t) = (t - last arrival) / mean gap * log10(e). The time at which phi
    passes the threshold is worked out at each arrival, so a check is one comparison."""

    __slots__ = ("last", "gaps", "window", "oldest", "total", "span", "deadline")

    def __init__(self, now: float, bootstrap: float, window: int, threshold: float) -> None:
        self.last = now
        # One made-up gap so that a peer never heard from is judged on the expected cadence.
        # A ring of unboxed floats: a 1,000-node lab holds a million detectors, and a deque
        # costs 600 bytes before its first gap.
        self.gaps = array("d", (bootstrap,))
        self.window = window
        self.oldest = 0                          # where the next gap goes once the ring is full
        self.total = bootstrap
        self.span = threshold / LOG10_E          # mean gaps until phi passes the threshold
        self.deadline = now + self.span * bootstrap

    def arrive(self, now: float) -> None:
        gap = now - self.last
        gaps = self.gaps
        if len(gaps) < self.window:
            gaps.append(gap)
        else:
            i = self.oldest
            self.total -= gaps[i]
            gaps[i] = gap
            self.oldest = (i + 1) % self.window
        self.total += gap
        self.last = now
        self.deadline = now + self.span * self.total / len(gaps)

    def phi(self, now: float) -> float:
        mean = self.total / len(self.gaps)
        return (now - self.last) / mean * LOG10_E if mean > 0 else math.inf


class Gossip(Core):
    name = "gossip"
    message_types = frozenset({MSG_RUMOR, MSG_RUMOR_REPLY, MSG_PULL, MSG_SYN, MSG_ACK, MSG_ACK2})
    tunables = GossipConfig
    presets = {
        "lan": {},
        "wan": {"interval": "500ms", "anti_entropy": "5s", "heartbeat": "2s", "phi_threshold": 12},
        # Gossip Glomers 3d (25 nodes, 100 ms links, 100 broadcasts/s): short rounds to few peers,
        # rumors kept long enough that the residue is negligible, anti-entropy as the backstop.
        "efficient": {"fanout": 5, "interval": "60ms", "stop_k": 3},
        # Cassandra's gossiper: no rumor mongering; one anti-entropy exchange a second.
        "cassandra": {"fanout": 0},
        # Pure dissemination ("infect forever"): the model of Serf's convergence formula.
        "epidemic": {"stop": "none", "anti_entropy": "0s"},
    }
    bugs = {
        "no_anti_entropy": "anti-entropy never runs, whatever anti_entropy says: rumor mongering's "
                           "residue stays, and a node that missed a rumor (during a partition, "
                           "say) never learns it (eventual_delivery, convergence)",
        "no_death_certificates": "a delete just removes the value where it was asked, leaving no "
                                 "certificate: the delete never spreads, and anti-entropy brings "
                                 "the value back from a peer that still holds it "
                                 "(no_resurrection)",
    }
    bug_breaks = {"no_anti_entropy": ("eventual_delivery", "convergence"),
                  "no_death_certificates": ("no_resurrection",)}
    default_checks = ("eventual_delivery", "convergence", "no_resurrection")

    config: GossipConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else GossipConfig())
        cfg = self.config
        self.me = ctx.node
        self.peers = sorted(n for n in ctx.nodes if n != ctx.node)
        # The membership: static, so digests are positional. Never changed in place, and the
        # same on every node: made once per membership (a 1,000-node lab, 100 MB less).
        self.order, self.members, self.position = _membership(tuple(ctx.nodes))
        # Made on first use: a node of a 1,000-node lab knows few origins' updates at a time.
        self.origins: dict[str, Origin] = {}
        self.visible: set[Any] = set()          # values held and not dead
        self.dead: set[Any] = set()             # values with a death certificate
        self.dots: dict[Any, list[tuple[str, int]]] = {}   # value -> dots holding it
        # rumor -> [strikes so far (rounds that sent it, or peers that knew it), the update]
        self.hot: dict[tuple[str, int], list[Any]] = {}
        self.endpoints: dict[str, list[Any]] = {}
        self.detectors: dict[str, Detector] = {}        # made at a peer's first heartbeat
        self.first_deadline = math.inf                  # conviction of a peer never heard from
        self.started = 0.0
        self.bootstrap = 1.0
        self.down: set[str] = set()
        self.live: list[str] = list(self.peers)             # peers not convicted, sorted
        self.seq = 0
        self.gen = 0
        self.hb = 0
        self.ver = 0
        self.load = 0
        self.schema: list[Any] = list(NO_SCHEMA)
        self.dropped = 0
        self._bug_no_ae = self.has_bug("no_anti_entropy")
        self._bug_no_certs = self.has_bug("no_death_certificates")
        self._counting = cfg.stop != "none"
        self._feedback = cfg.mode == "push_pull"
        self._round: Callable[[list[str]], None] = {
            "push": self.broadcast_push, "pull": self.broadcast_pull,
            "push_pull": self.broadcast_push_pull}[cfg.mode]
        self._handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            MSG_RUMOR: self.handle_rumor, MSG_RUMOR_REPLY: self.handle_rumor_reply,
            MSG_PULL: self.handle_pull, MSG_SYN: self.handle_syn, MSG_ACK: self.handle_ack,
            MSG_ACK2: self.handle_ack2}

    # -- start and durable state ---------------------------------------------------------
    def start(self) -> None:
        storage, cfg, rng = self.ctx.storage, self.config, self.ctx.rng
        self.gen = storage.get(GEN, 0) + 1
        storage.put(GEN, self.gen)
        self.schema = storage.get(SCHEMA) or list(NO_SCHEMA)
        if not self._bug_no_certs:
            self.dead.update(storage.log_read(DEAD))
        for seq, kind, value in storage.log_read(OWN):
            self.seq = max(self.seq, seq)
            self.learn([self.me, seq, kind, value], "disk", persist=False)
            if kind == VALUE:
                self.load += 1
        self.touch()
        now = self.ctx.now()
        bootstrap = 2 * max(cfg.heartbeat, cfg.anti_entropy, cfg.interval if cfg.fanout else 0.0)
        self.started = now
        self.bootstrap = bootstrap
        self.first_deadline = now + cfg.phi_threshold / LOG10_E * bootstrap
        self.ctx.trace("state", data={"generation": self.gen, "values": len(self.visible)})
        # Random first ticks, so that the nodes' rounds do not fall into step (as memberlist).
        if cfg.fanout and self.peers:
            self.ctx.set_timer(TIMER_GOSSIP, rng.uniform(0, cfg.interval))
        if cfg.anti_entropy and not self._bug_no_ae and self.peers:
            self.ctx.set_timer(TIMER_SYNC, rng.uniform(0, cfg.anti_entropy))
        if cfg.heartbeat:
            self.ctx.set_timer(TIMER_HEARTBEAT, cfg.heartbeat)

    def touch(self) -> None:
        """Load or schema changed: a new version of this node's endpoint state."""
        self.ver += 1
        self.endpoints[self.me] = [self.gen, self.hb, self.ver, self.load, self.schema]

    # -- the replicated set ---------------------------------------------------------------
    def learn(self, update: list[Any], via: str, *, persist: bool = True) -> bool:
        """Hold ``update`` if new; True when it was. A value shows unless it is dead; a
        certificate kills its value. Traced as ``apply {f: add|del, value, via}``."""
        origin, seq, kind, value = update
        org = self.origins.get(origin)
        if org is None:
            if origin not in self.members:
                return False
            org = self.origins[origin] = Origin()
        elif seq in org.held:
            return False
        org.add(seq, update)
        if kind == VALUE:
            self.dots.setdefault(value, []).append((origin, seq))
            if value not in self.dead and value not in self.visible:
                self.visible.add(value)
                self.ctx.trace("apply", data={"f": "add", "value": value, "via": via})
        else:
            self.kill(value, via, persist=persist)
        return True

    def kill(self, value: Any, via: str, *, persist: bool = True) -> None:
        if value in self.dead:
            return
        self.dead.add(value)
        if persist:
            self.ctx.storage.log_append(DEAD, [value])
        self.visible.discard(value)
        self.ctx.trace("apply", data={"f": "del", "value": value, "via": via})

    def learn_all(self, updates: list[Any], via: str) -> list[tuple[str, int]] | None:
        """Learn each update; new ones become hot. Returns the dots that were known already,
        or None when an update is malformed (what came before it is kept; the rest dropped).

        The hot path of every round: most updates in a batch are known already, so that case
        is checked first, and a new update is validated before it is held."""
        known = []
        origins, hot, rumors = self.origins, self.hot, self.config.fanout > 0
        for u in updates:
            if type(u) is not list or len(u) != 4 or type(u[0]) is not str or type(u[1]) is not int:
                return None
            org = origins.get(u[0])
            if org is None:
                if u[0] not in self.members:
                    return None
            elif u[1] in org.held:
                known.append((u[0], u[1]))
                continue
            if u[1] < 1 or u[2] not in (VALUE, CERT) or not _valid_value(u[3]):
                return None
            self.learn(u, via)
            if rumors:
                hot[(u[0], u[1])] = [0, u]
        return known

    def originate(self, kind: str, value: Any) -> None:
        """A new update of our own: durable before the reply (the runtime's order), then hot."""
        self.seq += 1
        self.ctx.storage.log_append(OWN, [[self.seq, kind, value]])
        update = [self.me, self.seq, kind, value]
        self.learn(update, "client")
        if self.config.fanout:
            self.hot[(self.me, self.seq)] = [0, update]

    # -- client requests -------------------------------------------------------------------
    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        f, value = op.get("f"), op.get("value")
        if f == "read":
            result: dict[str, Any] = {"type": "ok", "value": sorted(self.visible, key=value_order)}
            if op.get("full"):
                result["state"] = self.snapshot()
            self.ctx.reply(client, result)
            return
        if f not in ("broadcast", "delete", "schema"):
            self.ctx.reply(client, {"type": "fail", "error": f"unsupported op {f!r}"})
            return
        if not _valid_value(value):
            self.ctx.reply(client, {"type": "fail", "error": "value must be an int or a string"})
            return
        if f == "broadcast":
            if value in self.dead:
                self.ctx.reply(client, {"type": "fail", "error": "deleted"})
                return
            if value not in self.visible:
                self.originate(VALUE, value)
                self.load += 1
                self.touch()
        elif f == "delete":
            if self._bug_no_certs:
                self.forget(value)
            else:
                if value not in self.dead:
                    self.originate(CERT, value)
        else:
            self.schema = [self.schema[0] + 1, value, self.me]
            self.ctx.storage.put(SCHEMA, self.schema)
            self.touch()
            self.ctx.trace("apply", data={"f": "schema", "value": value, "version": self.schema[0]})
        self.ctx.reply(client, {"type": "ok"})

    def forget(self, value: Any) -> None:
        """The no_death_certificates bug: remove the value here and nowhere else."""
        for origin, seq in self.dots.pop(value, []):
            self.origins[origin].forget(seq)
            self.hot.pop((origin, seq), None)
        if value in self.visible:
            self.visible.discard(value)
            self.ctx.trace("apply", data={"f": "del", "value": value, "via": "client"})

    def snapshot(self) -> dict[str, Any]:
        """What convergence compares: the set, the deaths, the schema, and this node's view of
        every endpoint's generation, load and schema (heartbeats move on, so they are left out)."""
        return {"values": sorted(self.visible, key=value_order),
                "dead": sorted(self.dead, key=value_order),
                "schema": self.schema,
                "endpoints": {o: [e[G], e[LOAD], e[SCH]] for o, e in sorted(self.endpoints.items())},
                "down": sorted(self.down)}

    def status(self) -> dict[str, Any]:
        return {"role": "gossip", "values": len(self.visible), "dead": len(self.dead),
                "hot": len(self.hot), "down": sorted(self.down), "generation": self.gen,
                "heartbeat": self.hb, "schema": self.schema[0]}

    # -- entry points -------------------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if src == self.me or src not in self.members or not well_formed(type, body, len(self.order)):
            self.malformed(src, type)
            return
        self._handlers[type](src, body)

    def handle_timer(self, name: str) -> None:
        cfg = self.config
        if name == TIMER_GOSSIP:
            self.ctx.set_timer(TIMER_GOSSIP, cfg.interval)
            self._round(self._targets(cfg.fanout))
        elif name == TIMER_SYNC:
            self.ctx.set_timer(TIMER_SYNC, cfg.anti_entropy)
            self.maybe_sync()
        elif name == TIMER_HEARTBEAT:
            self.ctx.set_timer(TIMER_HEARTBEAT, cfg.heartbeat)
            self.hb += 1
            self.endpoints[self.me][HB] = self.hb
            self.maybe_convict()

    def _targets(self, k: int) -> list[str]:
        pool = self.live or self.peers
        return self.ctx.rng.sample(pool, min(k, len(pool)))

    # -- rumor mongering --------------------------------------------------------------------
    def _hot_batch(self, exclude: set[tuple[str, int]] | None = None) -> list[list[Any]]:
        if exclude:
            batch = [h[1] for dot, h in self.hot.items() if dot not in exclude]
        else:
            batch = [h[1] for h in self.hot.values()]
        return batch[:self.config.max_batch]

    def broadcast_push(self, targets: list[str]) -> None:
        if not self.hot:
            return              # nothing to say: a quiet push node sends nothing
        batch = self._hot_batch()
        body = {"u": batch, "hb": [self.gen, self.hb]}
        for p in targets:
            self.ctx.send(p, MSG_RUMOR, body)
        if targets:
            self.spent(len(batch))

    def broadcast_pull(self, targets: list[str]) -> None:
        body = {"hb": [self.gen, self.hb]}
        for p in targets:
            self.ctx.send(p, MSG_PULL, body)

    def broadcast_push_pull(self, targets: list[str]) -> None:
        body = {"u": self._hot_batch(), "hb": [self.gen, self.hb], "r": 1}
        for p in targets:
            self.ctx.send(p, MSG_RUMOR, body)

    def spent(self, count: int) -> None:
        """Blind stop rule: the first ``count`` hot rumors (the batch just sent) went out once more."""
        if not self._counting or self._feedback:
            return
        if self.config.stop == "coin":
            for dot in list(itertools.islice(self.hot, count)):
                self.rebuffed(dot)
            return
        k, over = self.config.stop_k, []
        for dot, h in itertools.islice(self.hot.items(), count):
            h[0] += 1
            if h[0] >= k:
                over.append(dot)
        for dot in over:
            del self.hot[dot]

    def rebuffed(self, dot: tuple[str, int]) -> None:
        """One more strike against a rumor (a round that sent it, or a peer that knew it)."""
        h = self.hot.get(dot)
        if h is None:
            return
        cfg = self.config
        if cfg.stop == "counter":
            h[0] += 1
            if h[0] >= cfg.stop_k:
                del self.hot[dot]
        elif cfg.stop == "coin" and self.ctx.rng.random() < 1.0 / cfg.stop_k:
            del self.hot[dot]

    def malformed(self, src: str, type: str) -> None:
        self.dropped += 1
        self.ctx.trace("drop", type=type, peer=src, data={"reason": "malformed"})

    def handle_rumor(self, src: str, body: dict[str, Any]) -> None:
        self.heard(src, *body["hb"])
        known = self.learn_all(body["u"], "rumor")
        if known is None:
            self.malformed(src, MSG_RUMOR)
        elif body.get("r"):
            sent = {(u[0], u[1]) for u in body["u"]}
            batch = self._hot_batch(exclude=sent)
            if batch or known:
                self.ctx.send(src, MSG_RUMOR_REPLY, {"u": batch, "k": [list(d) for d in known],
                                                     "hb": [self.gen, self.hb]})

    def handle_rumor_reply(self, src: str, body: dict[str, Any]) -> None:
        self.heard(src, *body["hb"])
        if self.learn_all(body["u"], "rumor") is None:
            self.malformed(src, MSG_RUMOR_REPLY)
        elif self._counting:
            for origin, seq in body["k"]:
                self.rebuffed((origin, seq))

    def handle_pull(self, src: str, body: dict[str, Any]) -> None:
        self.heard(src, *body["hb"])
        if self.hot:
            batch = self._hot_batch()
            self.ctx.send(src, MSG_RUMOR, {"u": batch, "hb": [self.gen, self.hb]})
            self.spent(len(batch))

    # -- anti-entropy (Cassandra's SYN / ACK / ACK2) -------------------------------------------
    def maybe_sync(self) -> None:
        """Start an exchange with a random live peer and, as Cassandra does, with chance
        down/(live+1) also with a convicted one, so that a peer that came back is noticed."""
        body = {"d": self.digest(), "x": self.extras(self.order)}
        for p in self._targets(1):
            self.ctx.send(p, MSG_SYN, body)
        if self.down and self.live and self.ctx.rng.random() < len(self.down) / (len(self.live) + 1):
            self.ctx.send(self.ctx.rng.choice(sorted(self.down)), MSG_SYN, body)

    def digest(self) -> list[int]:
        """Per member, in name order: generation, heartbeat, endpoint version, watermark."""
        out: list[int] = []
        endpoints, origins = self.endpoints, self.origins
        for o in self.order:
            e, org = endpoints.get(o), origins.get(o)
            w = org.w if org is not None else 0
            out += (e[G], e[HB], e[VER], w) if e else (0, 0, 0, w)
        return out

    def entries(self, origins: Iterable[str]) -> dict[str, list[int]]:
        """Digest entries of some origins, by name (what an ACK asks for)."""
        out = {}
        for o in origins:
            e = self.endpoints.get(o) or (0, 0, 0)
            org = self.origins.get(o)
            out[o] = [e[G], e[HB], e[VER], org.w if org is not None else 0]
        return out

    def extras(self, origins: Iterable[str]) -> dict[str, list[int]]:
        out = {}
        for o in origins:
            org = self.origins.get(o)
            if org is not None and org.extras:
                out[o] = sorted(org.extras)
        return out

    def compare(self, entries: Iterable[tuple[str, int, int, int, int]], x: dict[str, list[int]],
                want: list[str] | None = None) -> tuple[list[list[Any]], dict[str, list[Any]]]:
        """Against a peer's digest ``entries`` (origin, generation, heartbeat, version,
        watermark) and extras ``x``: the updates and endpoint states the peer lacks; the
        origins of which the peer holds something we lack go into ``want``.

        Runs over every member on every exchange (Cassandra's digests are as long), so the
        common case, nothing to do for an origin, is a few integer comparisons."""
        updates: list[list[Any]] = []
        endpoints: dict[str, list[Any]] = {}
        mine, origins, limit, me = self.endpoints, self.origins, self.config.max_batch, self.me
        for o, gen, hb, ver, w in entries:
            org = origins.get(o)
            if org is not None:
                ow = org.w
                if (ow > w or org.extras) and len(updates) < limit:
                    updates += org.above(w, x.get(o, ()))
            else:
                ow = 0
            e = mine.get(o)
            if e is None:
                if want is not None and o in self.members and (gen or w > ow or o in x):
                    want.append(o)
                continue
            eg = e[0]
            if eg > gen or (eg == gen and (e[2] > ver or e[1] > hb)):
                endpoints[o] = list(e)
            if want is not None and o != me and (
                    gen > eg or (gen == eg and (ver > e[2] or hb > e[1])) or w > ow
                    or (o in x and (org or NO_UPDATES).lacks_any(w, x[o]))):
                want.append(o)
        return updates[:limit], endpoints

    def handle_syn(self, src: str, body: dict[str, Any]) -> None:
        d = body["d"]
        i = 4 * self.position[src]
        self.heard(src, d[i], d[i + 1])
        want: list[str] = []
        updates, endpoints = self.compare(zip(self.order, d[0::4], d[1::4], d[2::4], d[3::4],
                                              strict=True), body["x"], want)
        self.ctx.send(src, MSG_ACK, {"u": updates, "e": endpoints,
                                     "d": self.entries(want), "x": self.extras(want)})

    def handle_ack(self, src: str, body: dict[str, Any]) -> None:
        self.absorb(src, MSG_ACK, body)
        if body["d"]:
            updates, endpoints = self.compare(((o, *e) for o, e in body["d"].items()), body["x"])
            if updates or endpoints:
                self.ctx.send(src, MSG_ACK2, {"u": updates, "e": endpoints})

    def handle_ack2(self, src: str, body: dict[str, Any]) -> None:
        self.absorb(src, MSG_ACK2, body)

    def absorb(self, src: str, type: str, body: dict[str, Any]) -> None:
        if self.learn_all(body["u"], "sync") is None:
            self.malformed(src, type)
        for o, e in body["e"].items():
            self.merge_endpoint(o, e)

    # -- endpoint state and failure detection -------------------------------------------------
    def merge_endpoint(self, origin: str, e: list[Any]) -> None:
        mine = self.endpoints.get(origin)
        if mine is None or e[G] > mine[G] or (e[G] == mine[G] and e[VER] > mine[VER]):
            if origin == self.me or origin not in self.members:
                return          # ourselves, or not a member
            hb = mine[HB] if mine is not None and mine[G] == e[G] else 0
            sch = e[SCH]
            # Endpoints without a schema share one list (never changed in place): a
            # 1,000-node lab holds a million endpoint states.
            self.endpoints[origin] = [e[G], hb, e[VER], e[LOAD], NO_SCHEMA if sch == NO_SCHEMA else sch]
            if sch[0] > self.schema[0] or (sch[0] == self.schema[0] and sch[2] > self.schema[2]):
                self.adopt_schema(list(sch))
        elif e[G] < mine[G] or e[HB] <= mine[HB]:
            return              # nothing newer: the common case
        self.heard(origin, e[G], e[HB])

    def adopt_schema(self, schema: list[Any]) -> None:
        self.schema = schema
        self.ctx.storage.put(SCHEMA, schema)
        self.touch()
        self.ctx.trace("apply", data={"f": "schema", "value": schema[1], "version": schema[0]})

    def heard(self, origin: str, gen: int, hb: int) -> None:
        """A heartbeat of ``origin``; a newer one is an arrival for its detector."""
        mine = self.endpoints.get(origin)
        if mine is not None and (gen < mine[G] or (gen == mine[G] and hb <= mine[HB])):
            return
        det = self.detectors.get(origin)
        if det is None:
            if origin == self.me or origin not in self.members:
                return          # ourselves
            cfg = self.config
            det = self.detectors[origin] = Detector(self.started, self.bootstrap, cfg.phi_window,
                                                    cfg.phi_threshold)
        if mine is None or gen > mine[G]:
            # A generation we hold no attributes of yet: anti-entropy brings them.
            self.endpoints[origin] = [gen, hb, 0, 0, NO_SCHEMA]
        else:
            mine[HB] = hb
        det.arrive(self.ctx.now())
        if origin in self.down:
            self.down.discard(origin)
            self.live = [p for p in self.peers if p not in self.down]
            self.ctx.trace("state", data={"peer": origin, "up": True})

    def maybe_convict(self) -> None:
        now = self.ctx.now()
        detectors, first = self.detectors, self.first_deadline
        late = [p for p in self.live if now > (d.deadline if (d := detectors.get(p)) else first)]
        for p in late:
            d = detectors.get(p)
            phi = d.phi(now) if d else (now - self.started) / self.bootstrap * LOG10_E
            self.down.add(p)
            self.ctx.trace("state", data={"peer": p, "up": False, "phi": round(phi, 2)})
        if late:
            self.live = [p for p in self.peers if p not in self.down]
