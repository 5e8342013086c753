"""PBFT (Castro & Liskov, "Practical Byzantine Fault Tolerance", OSDI'99) as a sans-IO core.

n replicas tolerate f = (n-1)//3 Byzantine ones. The primary of view v is the (v mod n)-th
node in the scenario's order. What it implements (docs/pbft.md has the long form):

* Normal case: the primary orders batches of client requests with PRE-PREPARE (v, n, d);
  backups accept one per (v, n) inside the watermarks h < n <= h+L, and PREPARE; a replica
  is *prepared* with the pre-prepare and 2f matching prepares from distinct backups, then
  COMMITs; it is *committed-local* with 2f+1 matching commits, and executes in sequence
  order on the key-value store of kv.py (exactly-once by client and seq), replying to the
  client. Quorums are ``(n+f)//2 + 1`` (2f+1 when n = 3f+1).
* Signatures: every message is signed with the replica's ed25519 key (``ctx.keys``, owned by
  the runtime) and checked on receipt; client requests carry the clients' signature, so a
  primary cannot invent operations. Bad signatures are dropped, counted and traced.
* Clients: :meth:`PBFT.client_rule` asks the runner's clients for f+1 matching replies from
  distinct replicas, a request sent first to the primary they believe current (replies name
  it) and f more replicas, re-sent to every replica on a timer.
* Checkpoints every ``checkpoint_interval`` sequence numbers, stable with 2f+1 signed
  CHECKPOINTs; the log below the stable checkpoint is dropped. A replica that fell behind
  fetches committed certificates (a batch and 2f+1 commits) or, below the stable checkpoint,
  the state itself, checked against the certified digest.
* View change: a backup that waits too long for a request forwards it to the primary, then
  sends VIEW-CHANGE (stable checkpoint with its proof, prepared certificates); the new
  primary's NEW-VIEW carries 2f+1 of them and the pre-prepares they imply, which every backup
  recomputes and rejects if they differ. f+1 VIEW-CHANGEs for higher views make a replica
  join; a NEW-VIEW that does not come doubles the wait and moves to the next view.
* Durability: view, accepted pre-prepares, prepared and committed certificates and the stable
  checkpoint (with the state) go through ``storage`` before the messages that depend on them.
* Byzantine behaviours (``byzantine: [...]`` on a node in YAML) are the code of a faulty
  replica, in pbft_byzantine.py; every message the core sends passes through it.

The replica is one class in three files: this one (the normal case, execution, durability),
pbft_checkpoint.py (checkpoints, catching up) and pbft_viewchange.py (view change); message
formats and the checks that need no replica state are in pbft_msgs.py.
"""

from __future__ import annotations

import dataclasses
from itertools import islice
from typing import Any

from nodes.protocols import kv
from nodes.protocols import pbft_msgs as m
from nodes.protocols.core import ClientRule, ConfigValueError, Context, Core, Tunables
from nodes.protocols.pbft_byzantine import BEHAVIOURS, Faulty
from nodes.protocols.pbft_checkpoint import TIMER_FETCH, Checkpoints
from nodes.protocols.pbft_viewchange import TIMER_REQUEST, TIMER_VIEW_CHANGE, ViewChange
from nodes.signing import request_bytes

HARD = "view"              # storage key of {"view", "active"}
CKPT = "checkpoint"        # storage key of the stable checkpoint {"n", "d", "proof", "state"}
LOG = "pbft"               # storage log of ["pp"|"prepared"|"committed", ...] records above it
FUTURE_MAX = 256           # messages of a view not yet installed, kept until its NEW-VIEW comes
TIMER_PROPOSE = "propose"  # primary: a partial batch leaves once the handlers due now have run

PRIMARY, BACKUP, VIEW_CHANGING = "primary", "backup", "view_change"


@dataclasses.dataclass(frozen=True)
class PBFTConfig(Tunables):
    batch_size: int = dataclasses.field(
        default=16,
        metadata={"unit": "count", "doc": (
            "most client requests in one pre-prepare. Batching amortises the three phases and "
            "their signatures over many requests (higher throughput under load); 1 turns it "
            "off. Larger batches make VIEW-CHANGE and NEW-VIEW messages larger")},
    )
    pipeline: int = dataclasses.field(
        default=64,
        metadata={"unit": "count", "doc": (
            "sequence numbers the primary has in flight beyond the last one it executed (the "
            "high watermark, log_window above the stable checkpoint, bounds them too); "
            "requests that arrive meanwhile wait and leave in one batch (a full batch at once, "
            "a partial one after the handlers due at that moment). More: more concurrency, "
            "so less idle time between phases under load; fewer: bigger batches under "
            "moderate load, and less for a view change to carry")},
    )
    checkpoint_interval: int = dataclasses.field(
        default=32,
        metadata={"unit": "count", "doc": (
            "a checkpoint every K sequence numbers (PBFT's K): its state digest is signed and "
            "becomes stable with 2f+1 matching ones, and the log below it is dropped. Smaller: "
            "less memory and shorter catch-up, more checkpoint messages and state hashing")},
    )
    log_window: int = dataclasses.field(
        default=64,
        metadata={"unit": "count", "doc": (
            "L: a replica accepts sequence numbers h < n <= h+L above its stable checkpoint h "
            "(the high watermark stops a faulty primary from exhausting sequence numbers). Must "
            "exceed checkpoint_interval, or the primary stalls before a checkpoint can form")},
    )
    request_timeout: float = dataclasses.field(
        default=1.0,
        metadata={"unit": "s", "doc": (
            "a backup that has waited this long for a client request to execute starts a view "
            "change (at half of it, it forwards the request to the primary). Shorter: a faulty "
            "primary is replaced sooner; too short and a slow network changes views needlessly")},
    )
    view_change_timeout: float = dataclasses.field(
        default=1.0,
        metadata={"unit": "s", "doc": (
            "how long a replica waits for the NEW-VIEW of a view it asked for before it moves "
            "to the next view; doubles with each view that fails in a row (so that, with a "
            "faulty new primary, the views eventually last long enough to finish)")},
    )
    fetch_timeout: float = dataclasses.field(
        default=0.1,
        metadata={"unit": "s", "doc": (
            "a replica that has seen others commit beyond what it could execute, and made no "
            "progress for this long, asks a peer for the committed certificates it lacks (or "
            "for the state, below a stable checkpoint). Shorter: faster catch-up, more "
            "fetches while merely reordered messages are on their way")},
    )
    client_retry: float = dataclasses.field(
        default=0.3,
        metadata={"unit": "s", "doc": (
            "clients send a request to the primary they believe current and f more replicas, "
            "then, after this long at least (longer while requests take longer) and until f+1 "
            "replicas answered alike, to every replica. Shorter: a silent primary or a lost "
            "request costs less; more traffic while a view change runs")},
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "pipeline", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ConfigValueError(name, "must be at least 1")
        if self.log_window <= self.checkpoint_interval:
            raise ConfigValueError("log_window", f"must exceed checkpoint_interval "
                                   f"({self.checkpoint_interval}), got {self.log_window}")
        for name in ("request_timeout", "view_change_timeout", "fetch_timeout", "client_retry"):
            if getattr(self, name) <= 0:
                raise ConfigValueError(name, "must be above 0s")


class Slot:
    """Everything a replica holds about one sequence number above its stable checkpoint."""

    __slots__ = ("pp", "prep", "comm", "cert", "done", "mine")

    def __init__(self) -> None:
        self.pp: dict[int, tuple[str, list[Any], bytes]] = {}      # view -> (digest, batch, sig)
        # view -> replica -> (digest, sig): one vote per replica and view; a second is equivocation
        self.prep: dict[int, dict[str, tuple[str, bytes]]] = {}
        self.comm: dict[int, dict[str, tuple[str, bytes]]] = {}
        self.cert: list[Any] | None = None   # prepared, highest view: [v, n, d, ppsig, prepares, batch]
        self.done: list[Any] | None = None   # committed: [v, n, d, batch, commits]
        self.mine: list[bytes] = []          # request digests of the current view's pre-prepare


class Waiting:
    """A client request this replica received and has not executed yet."""

    __slots__ = ("op", "handle", "since", "forwarded")

    def __init__(self, op: dict[str, Any], handle: str | None, since: float) -> None:
        self.op = op
        self.handle = handle
        self.since = since
        self.forwarded = False


class PBFT(ViewChange, Checkpoints, Core):
    """Practical Byzantine Fault Tolerance: 3f+1 replicas, f of them may lie."""

    name = "pbft"
    message_types = m.TYPES
    tunables = PBFTConfig
    signs = True
    presets = {"lan": {}, "wan": {"request_timeout": "4s", "view_change_timeout": "4s",
                                  "fetch_timeout": "500ms", "client_retry": "1s"}}
    behaviours = BEHAVIOURS
    bugs = {
        "prepared_with_f_plus_1": "a replica is prepared after f+1 matching prepares instead of 2f "
                                  "(and takes such certificates in a view change): with n >= 7, an "
                                  "equivocating primary and a colluding backup prepare two requests "
                                  "at one sequence number, and a view change re-proposes the one "
                                  "that did not commit (agreement)",
        "no_signature_check": "messages and client requests are taken without checking signatures: "
                              "a `forge` replica commits, in the other replicas' names, a write no "
                              "client sent (linearizable)",
        "view_change_without_prepared": "VIEW-CHANGE leaves out the prepared certificates: the new "
                                        "primary reuses sequence numbers already committed "
                                        "(committed_survives_view_change)",
        "no_watermark_check": "pre-prepares are taken outside h < n <= h+L: a `replay` primary "
                              "re-proposes old batches below the stable checkpoint, where the log "
                              "that would show the conflict is gone (agreement)",
        "client_accepts_first_reply": "clients accept the first reply instead of f+1 matching "
                                      "ones: a `wrong_reply` replica's made-up results are "
                                      "taken (linearizable)",
    }
    bug_breaks = {
        "prepared_with_f_plus_1": ("agreement", "committed_survives_view_change"),
        "no_signature_check": ("linearizable",),
        "view_change_without_prepared": ("committed_survives_view_change",),
        "no_watermark_check": ("agreement",),
        "client_accepts_first_reply": ("linearizable",),
    }
    default_checks = ("agreement", "committed_survives_view_change", "linearizable")
    optional_checks = ("progress",)

    config: PBFTConfig

    def __init__(self, ctx: Context, config: Tunables | None = None) -> None:
        super().__init__(ctx, config if config is not None else PBFTConfig())
        self.me = ctx.node
        self.replicas = list(ctx.nodes)
        self.peers = [r for r in self.replicas if r != self.me]
        n = len(self.replicas)
        self.f = (n - 1) // 3
        self.quorum = (n + self.f) // 2 + 1
        self.prepared_need = self.f + 1 if self.has_bug("prepared_with_f_plus_1") else self.quorum - 1
        if ctx.keys is None:
            raise ValueError("pbft needs signing keys (ctx.keys): the runtime makes them")
        self.keys = ctx.keys
        # Bug switches, read once: they sit on hot paths.
        self.check_sigs = not self.has_bug("no_signature_check")
        self.watermarks = not self.has_bug("no_watermark_check")
        self.vc_prepared = not self.has_bug("view_change_without_prepared")
        self.K, self.L = self.config.checkpoint_interval, self.config.log_window
        self.view = 0
        self.active = True                   # normal operation in self.view (not changing views)
        self.kv = kv.KV()
        genesis = self._state_bytes()
        self.h = 0                           # low watermark: the stable checkpoint's seq
        self.stable_d = m.state_digest(genesis)
        self.genesis_d = self.stable_d
        self.stable_proof: list[list[Any]] = []
        self.stable_state: bytes | None = genesis
        self.last_exec = 0
        self.progress_at = 0.0               # when a client request was last executed here
        self.next_seq = 1                    # primary: the next sequence number it assigns
        self.slots: dict[int, Slot] = {}
        self.waiting: dict[bytes, Waiting] = {}    # request digest -> request, in arrival order
        self.known: dict[bytes, tuple[bytes, dict[str, Any]]] = {}   # their signatures -> (digest, op)
        self.queue: dict[bytes, dict[str, Any]] = {}   # primary: requests not yet in a pre-prepare
        self.ordered: set[bytes] = set()             # requests in a pre-prepare of this view
        self.own_ckpt: dict[int, tuple[str, bytes]] = {}    # seq -> (state digest, state)
        self.ckpt_votes: dict[int, dict[str, tuple[str, bytes]]] = {}   # seq -> replica -> vote
        self.far_ckpts: dict[str, tuple[int, str, bytes]] = {}   # replica -> newest vote beyond h+L
        self.vcs: dict[int, dict[str, dict[str, Any]]] = {}     # view -> replica -> VIEW-CHANGE
        self.vc_view: dict[str, int] = {}            # replica -> view of its newest VIEW-CHANGE
        self.last_nv: dict[str, Any] | None = None   # the NEW-VIEW this replica installed last
        self.vc_round = 0                            # view changes in a row without a NEW-VIEW
        self.asked_nv: set[int] = set()
        self.early: list[tuple[str, dict[str, Any]]] = []   # messages of views not yet installed
        self.ahead: dict[str, int] = {}              # replica -> highest seq it was seen voting on
        self.timers: set[str] = set()                # armed timers this core tracks
        self.fetch_mark = -1
        self.fetch_turn = 0
        self.dropped: dict[str, int] = {}
        self.faulty: Faulty | None = None
        behaviours = ctx.nodes.get(self.me, {}).get("byzantine") or []
        if behaviours:
            self.faulty = Faulty(self, behaviours)
        self._on = {m.PRE_PREPARE: self.handle_pre_prepare, m.PREPARE: self.handle_prepare,
                    m.COMMIT: self.handle_commit, m.CHECKPOINT: self.handle_checkpoint,
                    m.VIEW_CHANGE: self.handle_view_change, m.NEW_VIEW: self.handle_new_view,
                    m.FETCH: self.handle_fetch, m.CERTS: self.handle_certs,
                    m.STATE: self.handle_state, m.REQUEST: self.handle_forwarded}

    @classmethod
    def client_rule(cls, config: Tunables, nodes: list[str]) -> ClientRule:
        f = (len(nodes) - 1) // 3
        first = "client_accepts_first_reply" in config.bugs
        # First to the primary and f more replicas: f+1 answer, and the other backups learn
        # the requests from the pre-prepare; then to every replica (Castro & Liskov 4.1).
        return ClientRule(replies=1 if first else f + 1, broadcast=True, sign=True,
                          retry=getattr(config, "client_retry", PBFTConfig.client_retry),
                          first=f + 1)

    # -- small helpers -----------------------------------------------------------------------
    def primary(self, view: int) -> str:
        return self.replicas[view % len(self.replicas)]

    @property
    def is_primary(self) -> bool:
        return self.active and self.primary(self.view) == self.me

    def in_window(self, n: int) -> bool:
        return not self.watermarks or self.h < n <= self.h + self.L

    def valid(self, signer: str, data: bytes, sig: Any) -> bool:
        return not self.check_sigs or self.keys.verify(signer, data, sig)

    def valid_client(self, data: bytes, sig: Any) -> bool:
        return not self.check_sigs or self.keys.verify_client(data, sig)

    def sign(self, type: str, body: dict[str, Any]) -> dict[str, Any]:
        body["i"] = self.me
        body["sig"] = self.keys.sign(m.signed_bytes(type, body))
        return body

    def vote(self, type: str, v: int, n: int, d: str) -> dict[str, Any]:
        return {"v": v, "n": n, "d": d, "i": self.me,
                "sig": self.keys.sign(m.vote_bytes(type, v, n, d, self.me))}

    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        """Every message leaves here; a faulty replica's pass through its behaviours."""
        if self.faulty is None:
            self.ctx.send(dst, type, body)
        else:
            self.faulty.send(dst, type, body)

    def broadcast(self, type: str, body: dict[str, Any]) -> None:
        for p in self.peers:
            self.send(p, type, body)

    def reply(self, handle: str, result: dict[str, Any]) -> None:
        """Answer a client; ``primary`` names the primary of our view, where a client sends its
        next requests first (lab/clientrule.py ``Targets``; the paper's reply carries the view)."""
        if self.faulty is None or self.faulty.may_reply():
            self.ctx.reply(handle, {**result, "primary": self.primary(self.view)})

    def drop(self, type: str, src: str, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.ctx.trace("drop", type=type, peer=src, data={"reason": reason})

    def out_of_window(self, type: str, src: str, body: dict[str, Any]) -> None:
        n = body["n"]
        if n <= self.h and type != m.PRE_PREPARE:
            # Late for a checkpoint already stable: nothing to say. (A pre-prepare down there
            # is a primary reusing a sequence number: traced.)
            self.dropped["below_h"] = self.dropped.get("below_h", 0) + 1
            return
        self.drop(type, src, "watermark")
        if n > self.h:
            self.saw_vote(body["i"], n)

    def slot(self, n: int) -> Slot:
        s = self.slots.get(n)
        if s is None:
            s = self.slots[n] = Slot()
        return s

    def arm(self, name: str, after: float) -> None:
        if name not in self.timers:
            self.timers.add(name)
            self.ctx.set_timer(name, after)

    def disarm(self, name: str) -> None:
        if name in self.timers:
            self.timers.discard(name)
            self.ctx.cancel_timer(name)

    def _state_bytes(self) -> bytes:
        # Dicts keep insertion order, which every honest replica builds alike (same ops, same
        # order; state transfer and restarts copy it), so the bytes are canonical.
        return m.pack([self.kv.data, self.kv.sessions, self.kv.floor])

    def _load_state(self, state: bytes) -> None:
        data, sessions, floor = m.unpack_state(state)
        self.kv = kv.KV()
        self.kv.data, self.kv.sessions, self.kv.floor = data, sessions, floor

    def _trace_state(self, **extra: Any) -> None:
        role = PRIMARY if self.is_primary else BACKUP if self.active else VIEW_CHANGING
        self.ctx.trace("state", data={"role": role, "view": self.view, **extra})

    # -- durability ---------------------------------------------------------------------------
    def start(self) -> None:
        st = self.ctx.storage
        ck = st.get(CKPT)
        if ck:
            self._load_state(ck["state"])
            self.h = self.last_exec = ck["n"]
            self.stable_d, self.stable_proof, self.stable_state = ck["d"], ck["proof"], ck["state"]
        hard = st.get(HARD) or {}
        self.view, self.active = hard.get("view", 0), hard.get("active", True)
        for rec in st.log_read(LOG):
            self._replay(rec)
        self.next_seq = max([self.h, self.last_exec,
                             *(n for n, s in self.slots.items() if self.view in s.pp)]) + 1
        self._execute_ready(replay=True)
        byz = sorted(self.faulty.behaviours) if self.faulty else []
        self._trace_state(f=self.f, byzantine=byz, h=self.h, last_exec=self.last_exec)
        if not self.active:
            self.start_view_change(self.view, again=True)

    def _replay(self, rec: list[Any]) -> None:
        kind, v, n = rec[0], rec[1], rec[2]
        if n <= self.h:
            return
        s = self.slot(n)
        if kind == "pp":
            s.pp[v] = (rec[3], rec[4], rec[5])
        elif kind == "prepared":
            s.cert = rec[1:]
        elif kind == "committed":
            s.done = rec[1:]

    def _log(self, rec: list[Any]) -> None:
        self.ctx.storage.log_append(LOG, [rec])

    def _persist_view(self) -> None:
        self.ctx.storage.put(HARD, {"view": self.view, "active": self.active})

    def _persist_checkpoint(self) -> None:
        """The stable checkpoint with its state, and the log rewritten to hold only what is above."""
        st = self.ctx.storage
        st.put(CKPT, {"n": self.h, "d": self.stable_d, "proof": self.stable_proof,
                      "state": self.stable_state})
        recs: list[list[Any]] = []
        for n in sorted(self.slots):
            s = self.slots[n]
            recs += [["pp", v, n, d, batch, sig] for v, (d, batch, sig) in sorted(s.pp.items())]
            if s.cert is not None:
                recs.append(["prepared", *s.cert])
            if s.done is not None:
                recs.append(["committed", *s.done])
        st.log_truncate(LOG, 0)
        if recs:
            st.log_append(LOG, recs)

    # -- entry points --------------------------------------------------------------------------
    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        if not m.well_formed(type, body) or body["i"] not in self.replicas:
            self.drop(type, src, "malformed")
            return
        if self.faulty is not None:
            self.faulty.on_message(src, type, body)
        self._on[type](src, body)

    def handle_timer(self, name: str) -> None:
        self.timers.discard(name)
        if name == TIMER_REQUEST:
            self.on_request_timer()
        elif name == TIMER_VIEW_CHANGE:
            if not self.active:
                self.start_view_change(self.view + 1)
        elif name == TIMER_FETCH:
            self.on_fetch_timer()
        elif name == TIMER_PROPOSE:
            self.maybe_propose(partial=True)
        elif self.faulty is not None:
            self.faulty.on_timer(name)

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        if self.faulty is not None:
            self.faulty.on_request(client, op)
        error = kv.validate(op)
        if error is not None:
            self.reply(client, {"type": "fail", "error": error})
            return
        done = self.kv.answered(op)
        if done is not None:             # a retry of a request already executed
            self.reply(client, done)
            return
        rd = self.known_rd(op)
        if rd is not None:
            self.waiting[rd].handle = client     # a retry: answer this attempt
            return
        data = request_bytes(op)
        rd = m.digest_bytes(data)
        if not self.valid_client(data, op.get("sig")):
            self.drop("request", client, "bad_signature")
            self.reply(client, {"type": "fail", "error": "bad_signature"})
            return
        self.take_request(rd, op, client)

    def take_request(self, rd: bytes, op: dict[str, Any], handle: str | None) -> None:
        """A verified request joins the waiting set; the primary orders it, a backup watches it."""
        w = self.waiting.get(rd)
        if w is None:
            self.waiting[rd] = Waiting(op, handle, self.ctx.now())
            if type(op.get("sig")) is bytes:
                self.known[op["sig"]] = (rd, op)
        elif handle is not None:
            w.handle = handle
        if self.is_primary:
            if rd not in self.ordered and rd not in self.queue:
                self.queue[rd] = op
                self.maybe_propose()
        elif self.active:
            self.arm_request_timer()

    def status(self) -> dict[str, Any]:
        role = PRIMARY if self.is_primary else BACKUP if self.active else VIEW_CHANGING
        return {"role": role, "view": self.view, "term": self.view, "primary": self.primary(self.view),
                "h": self.h, "last_exec": self.last_exec, "waiting": len(self.waiting),
                "log": len(self.slots), "verified": self.keys.verified, "signed": self.keys.signed,
                "dropped": dict(self.dropped)}

    # -- normal case: primary --------------------------------------------------------------------
    def maybe_propose(self, partial: bool = False) -> None:
        """Pre-prepare what the queue holds while the pipeline has room. A full batch leaves at
        once; a partial one only with nothing else in flight, or ``partial`` (the zero-delay
        TIMER_PROPOSE, which a runtime fires after the messages and requests already there):
        under load a handler's request would otherwise leave alone, before the next ones, and
        fill a sequence number of the pipeline with a batch of one."""
        queue, cfg = self.queue, self.config
        while (queue and self.is_primary and self.next_seq - 1 - self.last_exec < cfg.pipeline
               and (not self.watermarks or self.next_seq <= self.h + self.L)):
            if len(queue) < cfg.batch_size and not partial and self.next_seq - 1 > self.last_exec:
                self.arm(TIMER_PROPOSE, 0.0)
                return
            rds = list(islice(queue, cfg.batch_size))
            batch = [queue.pop(rd) for rd in rds]
            n, v = self.next_seq, self.view
            self.next_seq += 1
            d = m.batch_digest(rds)
            body = self.vote(m.PRE_PREPARE, v, n, d)
            body["batch"] = batch
            s = self.slot(n)
            s.pp[v] = (d, batch, body["sig"])
            s.mine = rds
            self.ordered.update(rds)
            self._log(["pp", v, n, d, batch, body["sig"]])
            self.broadcast(m.PRE_PREPARE, body)
            if self.faulty is not None:
                self.faulty.proposed(n, batch)
            self.maybe_prepared(n, s, v, d)

    # -- normal case: every replica -------------------------------------------------------------
    def other_view(self, type: str, body: dict[str, Any]) -> None:
        """A message of a view this replica is not running: an old one is dropped; a newer one
        means we missed a NEW-VIEW, so we ask its sender for it (once per view)."""
        v = body["v"]
        if v < self.view:
            # A view we left (maybe alone, cut off): we take no part, but f+1 replicas voting
            # beyond what we executed tell us to catch up.
            self.dropped["old_view"] = self.dropped.get("old_view", 0) + 1
            if type != m.PRE_PREPARE:
                self.saw_vote(body["i"], body["n"])
            return
        # Often the NEW-VIEW is merely overtaken by the new primary's first messages: keep
        # them (bounded) for when it comes.
        self.early.append((type, body))
        if len(self.early) > FUTURE_MAX:
            del self.early[0]
        if v not in self.asked_nv:
            self.asked_nv.add(v)
            self.send(body["i"], m.FETCH, self.sign(m.FETCH, {"what": "new_view", "n": v}))

    def handle_pre_prepare(self, src: str, b: dict[str, Any]) -> None:
        v, n, d, i = b["v"], b["n"], b["d"], b["i"]
        if v != self.view or not self.active:
            self.other_view(m.PRE_PREPARE, b)
            return
        if i != self.primary(v) or i == self.me:
            self.drop(m.PRE_PREPARE, src, "not_primary")
            return
        if not self.in_window(n):
            self.out_of_window(m.PRE_PREPARE, src, b)
            return
        s = self.slots.get(n)
        if s is not None and v in s.pp:
            if s.pp[v][0] != d:
                self.drop(m.PRE_PREPARE, src, "conflict")      # an equivocating primary, or a forger
            return
        if not self.valid(i, m.vote_bytes(m.PRE_PREPARE, v, n, d, i), b["sig"]):
            self.drop(m.PRE_PREPARE, src, "bad_signature")
            return
        batch = b["batch"]
        rds = self.request_digests(batch)
        if rds is None:
            self.drop(m.PRE_PREPARE, src, "bad_request")
            return
        if m.batch_digest(rds) != d:
            self.drop(m.PRE_PREPARE, src, "bad_digest")
            return
        self.accept_pre_prepare(v, n, d, batch, b["sig"], rds)

    def known_rd(self, op: Any) -> bytes | None:
        """The digest of a request this replica verified and holds waiting, if ``op`` is it
        (found by its signature, then compared whole): no need to hash or verify it again."""
        sig = op.get("sig")
        hit = self.known.get(sig) if type(sig) is bytes else None
        # Mostly the very object: a request in our own batch, or one the pre-prepare brought.
        return hit[0] if hit is not None and (hit[1] is op or hit[1] == op) else None

    def request_digests(self, batch: list[Any]) -> list[bytes] | None:
        """The digests of a batch's requests, None if one is not a client's signed request."""
        out = []
        now = None          # read once a batch: the requests of one pre-prepare came together
        waiting, known = self.waiting, self.known
        ok = True
        for op in batch:
            rd = self.known_rd(op)
            if rd is None:
                data = request_bytes(op)
                sig = op.get("sig")
                if not self.valid_client(data, sig):
                    ok = False
                    break
                rd = m.digest_bytes(data)
                # The client's own copy may still be on its way (or, sent first to the primary
                # and f others, never come): when it comes, it is known; until the request is
                # executed, our request timer watches the primary.
                if now is None:
                    now = self.ctx.now()
                if rd not in waiting:
                    waiting[rd] = Waiting(op, None, now)
                if type(sig) is bytes:
                    known[sig] = (rd, op)
            out.append(rd)
        if now is not None and self.active and not self.is_primary:
            self.arm_request_timer()        # once for the batch, not once a request
        return out if ok else None

    def accept_pre_prepare(self, v: int, n: int, d: str, batch: list[Any], sig: bytes,
                           rds: list[bytes]) -> None:
        s = self.slot(n)
        s.pp[v] = (d, batch, sig)
        s.mine = rds
        self._log(["pp", v, n, d, batch, sig])       # before our prepare: never two digests per (v, n)
        self.ordered.update(rds)
        if self.primary(v) != self.me:
            self.cast(m.PREPARE, s, v, n, d)
        self.maybe_prepared(n, s, v, d)

    def cast(self, type: str, s: Slot, v: int, n: int, d: str) -> None:
        """Our own prepare or commit: counted in the slot, then sent to every peer."""
        body = self.vote(type, v, n, d)
        (s.prep if type == m.PREPARE else s.comm).setdefault(v, {})[self.me] = (d, body["sig"])
        self.broadcast(type, body)

    def take_vote(self, type: str, src: str, b: dict[str, Any]) -> Slot | None:
        """A peer's prepare or commit, recorded in its slot if it passes every check and can
        still matter (a slot prepared, or committed, in this view needs no more: not verified)."""
        v, n, d, i = b["v"], b["n"], b["d"], b["i"]
        if v != self.view or not self.active:
            self.other_view(type, b)
            return None
        if type == m.PREPARE and i == self.primary(v):
            self.drop(type, src, "not_backup")
            return None
        if not self.in_window(n):
            self.out_of_window(type, src, b)
            return None
        s = self.slot(n)
        prepare = type == m.PREPARE
        votes = (s.prep if prepare else s.comm).setdefault(v, {})
        settled = s.cert if prepare else s.done
        if i in votes or (settled is not None and settled[0] >= v):
            return None                  # a duplicate, a second digest from one replica, or late
        if not self.valid(i, m.vote_bytes(type, v, n, d, i), b["sig"]):
            self.drop(type, src, "bad_signature")
            return None
        votes[i] = (d, b["sig"])
        return s

    def handle_prepare(self, src: str, b: dict[str, Any]) -> None:
        s = self.take_vote(m.PREPARE, src, b)
        if s is not None:
            self.maybe_prepared(b["n"], s, b["v"], b["d"])

    def maybe_prepared(self, n: int, s: Slot, v: int, d: str) -> None:
        if s.cert is not None and s.cert[0] >= v:
            return
        pp = s.pp.get(v)
        if pp is None or pp[0] != d:
            return
        matching = [[j, sig] for j, (dd, sig) in s.prep.get(v, {}).items() if dd == d]
        if len(matching) < self.prepared_need:
            return
        s.cert = [v, n, d, pp[2], matching, pp[1]]
        self._log(["prepared", *s.cert])            # before our commit
        self.cast(m.COMMIT, s, v, n, d)
        self.maybe_committed(n, s, v, d)

    def handle_commit(self, src: str, b: dict[str, Any]) -> None:
        s = self.take_vote(m.COMMIT, src, b)
        if s is not None:
            self.maybe_committed(b["n"], s, b["v"], b["d"])
            self.saw_vote(b["i"], b["n"])

    def maybe_committed(self, n: int, s: Slot, v: int, d: str) -> None:
        if s.done is not None and s.done[0] >= v:
            return
        cert = s.cert
        if cert is None or cert[0] != v or cert[2] != d:
            return
        matching = [[j, sig] for j, (dd, sig) in s.comm.get(v, {}).items() if dd == d]
        if len(matching) < self.quorum:
            return
        self.mark_done(n, s, [v, n, d, cert[5], matching])

    def mark_done(self, n: int, s: Slot, done: list[Any]) -> None:
        """A committed certificate for seq ``n``: ours, or one fetched from a peer."""
        first = s.done is None or s.done[2] != done[2]
        s.done = done
        self._log(["committed", *done])
        if first:
            # Once per (seq, digest): a second digest at one seq is what `agreement` looks for.
            self.ctx.trace("commit", data={"seq": n, "view": done[0], "digest": done[2],
                                           "size": len(done[3])})
        self._execute_ready()

    # -- execution and checkpoints ------------------------------------------------------------
    def _execute_ready(self, replay: bool = False) -> None:
        slots = self.slots
        progressed = False
        while True:
            n = self.last_exec + 1
            s = slots.get(n)
            if s is None or s.done is None:
                break
            self.execute(s, replay)
            self.last_exec = n
            progressed = True
            if n % self.K == 0:
                self.take_checkpoint(n)
        if progressed and not replay:
            self.after_progress()

    def execute(self, s: Slot, replay: bool) -> None:
        waiting, ordered, queue = self.waiting, self.ordered, self.queue
        if s.done[3]:
            self.progress_at = self.ctx.now()
        for op in s.done[3]:
            error = kv.validate(op)
            result = {"type": "fail", "error": error} if error else self.kv.apply(op)
            rd = self.known_rd(op) or m.request_digest(op)
            ordered.discard(rd)
            queue.pop(rd, None)
            w = waiting.pop(rd, None)
            if w is not None:
                self.known.pop(w.op.get("sig"), None)
                if w.handle is not None and not replay:
                    self.reply(w.handle, result)
        # What this replica's own pre-prepare held but another batch took the seq: order it again.
        for rd in s.mine:
            if rd in ordered:
                ordered.discard(rd)
                if rd in waiting and self.is_primary:
                    queue[rd] = waiting[rd].op

    def after_progress(self) -> None:
        if self.is_primary:
            self.maybe_propose()
        elif self.active and self.waiting:
            self.arm_request_timer()
        self.maybe_fetch_later()
