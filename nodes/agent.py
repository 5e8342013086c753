"""The node agent: hosts one protocol core behind pyzmq sockets.

    python -m nodes.agent --spec SPEC.json

One single-threaded event loop on ``zmq.Poller`` with a timer heap. Per loop
iteration: poll; drain the peer, control and ZAP sockets (bounded batches); fire
due timers; then *commit*: one ``fsync`` for every storage write the handlers
made (group commit), and only then send the messages and client replies they
buffered (persist, then send), and write the trace lines.

Sockets (every one: ``MAXMSGSIZE`` = wire.MAX_MESSAGE_SIZE, ``LINGER`` 0, bounded HWM):

* a ROUTER bound at ``spec.bind`` receives peer traffic; a DEALER per node
  (``IMMEDIATE``: nothing queues for a peer that is down) sends it;
* a ROUTER bound at ``spec.control_bind`` with CurveZMQ server keys serves the
  orchestrator (nodes/control.py); an in-loop ZAP handler admits only the lab's
  client public key, so any other client gets no answer and changes nothing.

Bad frames are dropped, counted and traced as ``drop`` with their reason; a core
that raises on a message is logged and counted; neither stops the agent.
SIGTERM/SIGINT stop it gracefully (commit, flush, close). See docs/agent.md.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

import zmq
from zmq.utils import z85

from nodes import control, wire
from nodes.filestorage import FileStorage
from nodes.protocols import get as get_protocol
from nodes.protocols.core import Core, build_config
from nodes.shim import Shim
from nodes.tracelog import TraceWriter, last_lc

log = logging.getLogger("zlab.agent")

PEER_HWM = 10_000          # messages queued per peer before sends are dropped (counted)
CONTROL_HWM = 100_000      # a benchmark may have many client ops in flight
BATCH = 512                # frames taken from one socket per loop iteration: bounds latency of the others
MAX_PENDING_CLIENTS = 100_000
PARENT_CHECK = 1.0         # s between checks that the orchestrator still lives (when asked to)
# Young-generation GC threshold. At the default (700) a loaded leader collects every few dozen
# requests (each adds log entries, session results, pending maps); the agent makes little cyclic
# garbage, and collecting ~70x less often saved several percent of CPU per request under load.
GC_YOUNG = 50_000

_T_CORE, _T_SEND, _T_WATCH = 0, 1, 2
_NO_DATA: Any = object()       # ctx.trace called without data=
_LINK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class AgentContext:
    """The Context (nodes/protocols/core.py) the agent gives its core."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.node = agent.node
        self.nodes = agent.nodes
        self.storage = agent.storage
        self.rng = agent.core_rng
        self.keys = agent.keys
        # The agent's own methods, not wrappers: a core calls these for every message and op.
        self.send = agent.send
        self.set_timer = agent.set_timer
        self.reply = agent.reply

    def now(self) -> float:
        return time.monotonic() - self._agent.mono0

    def cancel_timer(self, name: str) -> None:
        self._agent.core_timers.pop(name, None)

    def trace(self, ev: str, data: Any = _NO_DATA, **fields: Any) -> None:
        a = self._agent
        if fields or data is _NO_DATA:
            if data is not _NO_DATA:
                fields["data"] = data
            a.tracer.core_event(ev, a.ts, a.lc, fields)
        else:               # the common ctx.trace(ev, data={...}): commit and apply of every entry
            a.tracer.core_data(ev, a.ts, a.lc, data)


def load_keys(spec: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """(server public, server secret, client public) as z85 bytes, from inline keys or key files."""
    keys = spec.get("keys") or {}
    if "server_secret_file" in keys:
        import zmq.auth
        public, secret = zmq.auth.load_certificate(keys["server_secret_file"])
        client, _ = zmq.auth.load_certificate(keys["client_public_file"])
        if secret is None:
            raise ValueError(f"{keys['server_secret_file']} holds no secret key")
        return public, secret, client
    try:
        return (keys["server_public"].encode(), keys["server_secret"].encode(), keys["client_public"].encode())
    except KeyError as e:
        raise ValueError(f"spec.keys lacks {e}") from None


class Agent:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.lab: str = spec["lab"]
        self.node: str = spec["node"]
        self.nodes: dict[str, dict[str, Any]] = spec["nodes"]
        self.t0: float = float(spec.get("t0") or time.time())
        # now() counts from t0 like the trace does, but on the monotonic clock, for timers.
        self.mono0 = time.monotonic() - (time.time() - self.t0)
        self.data_dir: str = spec["data_dir"]
        os.makedirs(self.data_dir, exist_ok=True)
        seed = spec.get("seed", 0)
        incarnation = spec.get("incarnation", 0)
        self.core_rng = random.Random(f"{seed}/{self.node}/{incarnation}")
        self.shim = Shim(f"shim/{seed}/{self.node}/{incarnation}")
        if spec.get("rules"):
            self.shim.set_rules(spec["rules"])
        self.boot = os.urandom(3).hex()
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.storage = FileStorage(os.path.join(self.data_dir, "storage"), fsync=spec.get("fsync", True))
        trace_path = os.path.join(self.data_dir, control.FILES["trace"])
        self.lc = last_lc(trace_path)
        self.tracer = TraceWriter(trace_path, self.node, level=spec.get("trace", "all"))
        self.core_cls: type[Core] = get_protocol(spec["protocol"])
        # ed25519 keys for a core that signs (PBFT): made per lab by the orchestrator.
        self.keys = None
        if spec.get("signing"):
            from nodes.signing import keyring_from_spec  # pynacl: only where a core signs
            self.keys = keyring_from_spec(self.node, spec["signing"])
        self.types = self.core_cls.message_types
        self.core_timers: dict[str, int] = {}          # timer name -> seq of its live heap entry
        self.heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._mseq = 0
        self.out: list[tuple[str, str, str, bytes]] = []        # (dst, mid, type, frame) to send after commit
        self.replies: list[tuple[bytes, dict[str, Any]]] = []   # control answers to send after commit
        self.pending: dict[str, tuple[bytes, Any]] = {}         # client token -> (routing id, request id)
        self._tok = 0
        self._tok_prefix = f"{self.node}.{self.boot}.c"
        self.running = True
        self._shutdown_requested = False
        # When the handler now running began (s from t0): every trace line it makes carries it,
        # so a handler's lines share one clock reading and one formatting of it.
        self.ts = 0.0
        self.zctx = zmq.Context.instance()
        self._open_sockets()
        self.ctx = AgentContext(self)
        self.core = self.core_cls(self.ctx, build_config(self.core_cls, spec.get("config")))

    # -- sockets ----------------------------------------------------------------
    def _sock(self, kind: int, hwm: int) -> zmq.Socket:
        s = self.zctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_SIZE)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        return s

    def _open_sockets(self) -> None:
        spec = self.spec
        public, secret, client = load_keys(spec)
        self.client_key = z85.decode(client)
        # The ZAP handler must be bound before the Curve socket, or libzmq admits everyone.
        self.zap = self.zctx.socket(zmq.REP)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind("inproc://zeromq.zap.01")
        self.ctl = self._sock(zmq.ROUTER, CONTROL_HWM)
        self.ctl.setsockopt(zmq.CURVE_SERVER, 1)
        self.ctl.setsockopt(zmq.CURVE_PUBLICKEY, public)
        self.ctl.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.ctl.setsockopt(zmq.ZAP_DOMAIN, control.ZAP_DOMAIN.encode())
        self.ctl.bind(spec["control_bind"])
        self.router = self._sock(zmq.ROUTER, PEER_HWM)
        self.router.bind(spec["bind"])
        self.dealers: dict[str, zmq.Socket] = {}
        # A monitor per DEALER tells which peers are connected: with IMMEDIATE a send to a peer
        # that is not is dropped, so the orchestrator waits until every link is up (hello).
        self.monitors: dict[zmq.Socket, str] = {}
        self.connected: set[str] = set()
        for name, endpoint in spec["peers"].items():
            d = self._sock(zmq.DEALER, PEER_HWM)
            d.setsockopt(zmq.IMMEDIATE, 1)
            d.setsockopt(zmq.RECONNECT_IVL, 50)
            d.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            d.setsockopt(zmq.CONNECT_TIMEOUT, control.CONNECT_TIMEOUT_MS)
            d.setsockopt(zmq.SNDTIMEO, 0)
            self.monitors[d.get_monitor_socket(_LINK_EVENTS)] = name
            d.connect(endpoint)
            self.dealers[name] = d
        # Signals wake the poller through this pair, so SIGTERM is handled at once, between handlers.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller = zmq.Poller()
        for s in (self.router, self.ctl, self.zap, *self.monitors):
            self.poller.register(s, zmq.POLLIN)
        self.poller.register(self._wake_r.fileno(), zmq.POLLIN)

    # -- the context's actions ------------------------------------------------------
    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        self.lc += 1
        self._mseq += 1
        mid = f"{self.node}.{self.boot}.{self._mseq}"
        ts = self.ts
        try:
            frame = wire.encode(wire.Envelope(self.lab, self.node, dst, mid, type, body, self.lc))
        except wire.WireError as e:
            self._drop(ts, mid, type, dst, e.reason)
            log.warning("cannot send %s to %s: %s", type, dst, e)
            return
        self.counters["sent"] += 1
        self.tracer.message("send", ts, self.lc, mid, type, dst)
        if dst not in self.dealers:
            self._drop(ts, mid, type, dst, "unknown_peer")
            return
        if not self.shim.active:
            self.out.append((dst, mid, type, frame))
            return
        verdict = self.shim.outgoing(dst)
        if isinstance(verdict, str):
            self._drop(ts, mid, type, dst, verdict)
            return
        for delay in verdict:
            if delay <= 0.0:
                self.out.append((dst, mid, type, frame))
            else:
                self._push(time.monotonic() + delay, _T_SEND, (dst, mid, type, frame))

    def reply(self, client: str, result: dict[str, Any]) -> None:
        dest = self.pending.pop(client, None)
        if dest is None:
            self.counters["reply_unknown_client"] += 1
            return
        self.counters["replies"] += 1
        self.tracer.client_event("reply", self.ts, self.lc, client, "result", result)
        self.replies.append((dest[0], {"id": dest[1], "result": result}))

    def set_timer(self, name: str, after: float) -> None:
        self._seq += 1
        self.core_timers[name] = self._seq
        heapq.heappush(self.heap, (time.monotonic() + max(0.0, after), self._seq, _T_CORE, name))

    def _push(self, when: float, kind: int, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, kind, arg))

    def _drop(self, ts: float, mid: Any, type: str, peer: str, reason: str) -> None:
        self.drops[reason] += 1
        self.tracer.message("drop", ts, self.lc, mid, type, peer, {"reason": reason})

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        if self.spec.get("parent_pid"):
            self._push(time.monotonic() + PARENT_CHECK, _T_WATCH, None)
        recovered = self.storage.recovered_records > 0 or bool(self.spec.get("incarnation"))
        self.tracer.event("log", time.time() - self.t0, self.lc,
                          data={"msg": "recovered" if recovered else "started"})
        log.info("%s %s (%s) pid %d, boot %s, %d WAL records, %d torn bytes cut",
                 "recovered" if recovered else "started", self.node, self.core_cls.name,
                 os.getpid(), self.boot, self.storage.recovered_records, self.storage.torn_bytes)
        self.ts = time.time() - self.t0
        self.core.start()
        self._commit()
        # What start-up and recovery built lives as long as the agent: no collection need scan it.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        try:
            while self.running:
                self._iterate()
        finally:
            self._close()
        return 0

    def _iterate(self) -> None:
        timeout = 1000
        if self.heap:
            timeout = max(0, min(timeout, int((self.heap[0][0] - time.monotonic()) * 1000.0 + 0.999)))
        try:
            events = self.poller.poll(timeout)
        except zmq.ZMQError:
            events = []
        for s, _ in events:
            if s is self.router:
                self._drain_peers()
            elif s is self.ctl:
                self._drain_control()
            elif s is self.zap:
                self._drain_zap()
            elif s in self.monitors:
                self._link_event(s)
            else:
                try:
                    self._wake_r.recv(64)
                except OSError:
                    pass
        if self.heap:
            self._fire_timers()
        self._commit()
        if self._shutdown_requested:
            self.running = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        self.running = False

    def _fire_timers(self) -> None:
        now = time.monotonic()
        heap = self.heap
        for _ in range(10_000):      # bounded: a core that keeps re-arming 0s timers cannot starve the sockets
            if not heap or heap[0][0] > now:
                return
            _, seq, kind, arg = heapq.heappop(heap)
            if kind == _T_CORE:
                if self.core_timers.get(arg) != seq:
                    continue          # cancelled or replaced
                del self.core_timers[arg]
                self.counters["timers"] += 1
                self.ts = time.time() - self.t0
                if self.tracer.messages:
                    self.tracer.event("timer", self.ts, self.lc, type=arg)
                self._guard("timer", self.core.handle_timer, arg)
            elif kind == _T_SEND:
                self.out.append(arg)
            elif kind == _T_WATCH:
                if os.getppid() != self.spec["parent_pid"]:
                    log.info("orchestrator %s is gone: shutting down", self.spec["parent_pid"])
                    self.running = False
                else:
                    self._push(now + PARENT_CHECK, _T_WATCH, None)

    def _guard(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 -- network input must never stop the agent
            self._core_failed(what, args, e)

    def _core_failed(self, what: str, args: tuple[Any, ...], e: Exception) -> None:
        """Count, log (with the traceback: call it from the ``except``) and trace a core's
        exception; the agent goes on."""
        self.counters["handler_errors"] += 1
        if self.counters["handler_errors"] <= 20:
            log.exception("core raised handling %s %r", what, args[:2])
        self.tracer.event("log", time.time() - self.t0, self.lc,
                          data={"msg": f"core error in {what}: {type(e).__name__}: {e}"[:300]})

    def _drain_peers(self) -> None:
        router = self.router
        for _ in range(BATCH):
            frames = _recv_pair(router)
            if frames is None:
                return
            ts = self.ts = time.time() - self.t0
            if not frames:
                self._drop(ts, None, "?", "?", "malformed")
                continue
            try:
                env = wire.decode(frames[1], lab=self.lab, types=self.types)
            except wire.WireError as e:
                self._drop(ts, None, "?", "?", e.reason)
                continue
            if env.dst != self.node:
                self._drop(ts, env.id, env.type, env.src, "malformed")
                continue
            if self.shim.active:
                reason = self.shim.incoming(env.src)
                if reason:
                    self._drop(ts, env.id, env.type, env.src, reason)
                    continue
            lc = self.lc
            self.lc = (env.lc if env.lc > lc else lc) + 1
            self.counters["recv"] += 1
            self.tracer.message("recv", ts, self.lc, env.id, env.type, env.src)
            self._guard("message", self.core.handle_message, env.src, env.type, env.body)

    def _link_event(self, mon: zmq.Socket) -> None:
        peer = self.monitors[mon]
        for _ in range(BATCH):
            try:
                frames = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # Monitor frame 1: event id (u16) and value (u32), native byte order.
            event = int.from_bytes(frames[0][:2], sys.byteorder)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected.add(peer)
            elif event == zmq.EVENT_DISCONNECTED:
                self.connected.discard(peer)

    def _drain_zap(self) -> None:
        # ZAP (RFC 27): [version, request id, domain, address, identity, mechanism, credentials...]
        for _ in range(BATCH):
            try:
                req = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ok = (len(req) >= 7 and req[0] == b"1.0" and req[5] == b"CURVE" and req[6] == self.client_key)
            if not ok:
                self.counters["auth_denied"] += 1
                n = self.counters["auth_denied"]
                if n & (n - 1) == 0:    # a refused client retries its handshake: log 1, 2, 4, 8... times
                    log.warning("control client refused (mechanism %r, %d refusals so far)",
                                req[5] if len(req) > 5 else None, n)
            rid = req[1] if len(req) > 1 else b""
            self.zap.send_multipart([b"1.0", rid, b"200" if ok else b"400",
                                     b"OK" if ok else b"unknown client key", b"orchestrator" if ok else b"", b""])

    def _drain_control(self) -> None:
        ctl = self.ctl
        taken = 0
        while taken < BATCH:        # requests, not frames: a client's frame may hold many
            taken += 1
            frames = _recv_pair(ctl)
            if frames is None:
                return
            if not frames:
                self.counters["control_errors"] += 1
                continue
            ident, data = frames
            self.ts = time.time() - self.t0      # the requests of one frame arrived together
            try:
                msgs = control.unpack_requests(data)     # one request, or the client's batch of them
            except ValueError as e:
                self.counters["control_errors"] += 1
                self.replies.append((ident, {"error": f"ValueError: {e}"[:300], "id": None}))
                continue
            taken += len(msgs) - 1
            for msg in msgs:
                try:
                    answer = self._control(ident, msg)
                except Exception as e:  # noqa: BLE001 -- a bad request gets an error answer, never a crash
                    self.counters["control_errors"] += 1
                    answer = {"error": f"{type(e).__name__}: {e}"[:300]}
                if answer is not None:
                    answer["id"] = msg.get("id")
                    self.replies.append((ident, answer))

    def _control(self, ident: bytes, msg: dict[str, Any]) -> dict[str, Any] | None:
        op = msg.get("op")
        if op == "submit":
            req = msg.get("req")
            if not isinstance(req, dict):
                return {"error": "submit needs req, a map"}
            self._tok += 1
            token = f"{self._tok_prefix}{self._tok}"
            if len(self.pending) >= MAX_PENDING_CLIENTS:
                # Forget the oldest unanswered op: its client timed out long ago.
                self.pending.pop(next(iter(self.pending)))
            self.pending[token] = (ident, msg.get("id"))
            self.counters["requests"] += 1
            self.tracer.client_event("request", self.ts, self.lc, token, "op", req)
            try:        # _guard written out: this runs for every client op
                self.core.handle_request(token, req)
            except Exception as e:  # noqa: BLE001 -- a client op must never stop the agent
                self._core_failed("request", (token, req), e)
            return None
        if op == "hello":
            return {"node": self.node, "protocol": self.core_cls.name, "pid": os.getpid(),
                    "boot": self.boot, "lab": self.lab, "connected": sorted(self.connected)}
        if op == "status":
            return {"node": self.node, "core": self.core.status(), "lc": self.lc,
                    "now": self.ctx.now(), "counters": self.stats(), "rules": self.shim.rules(),
                    "connected": sorted(self.connected)}
        if op == "set_rules":
            self.shim.set_rules(msg)
            self.tracer.event("log", time.time() - self.t0, self.lc,
                              data={"msg": "shim rules", "rules": self.shim.rules()})
            return {"rules": self.shim.rules()}
        if op == "read_file":
            return self._read_file(msg)
        if op == "shutdown":
            self._shutdown_requested = True
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}

    def _read_file(self, msg: dict[str, Any]) -> dict[str, Any]:
        name = control.FILES.get(msg.get("name"))
        if name is None:
            return {"error": f"read_file name must be one of {', '.join(control.FILES)}"}
        self.tracer.flush()
        for h in log.handlers:
            h.flush()
        offset = max(0, int(msg.get("offset") or 0))
        limit = min(control.READ_MAX, max(1, int(msg.get("max") or control.READ_MAX)))
        path = os.path.join(self.data_dir, name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            return {"data": b"", "offset": 0, "size": 0}
        return {"data": data, "offset": offset + len(data), "size": size}

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "dropped": dict(self.drops), "fsyncs": self.storage.fsyncs,
                "pending_clients": len(self.pending), "trace_events": self.tracer.events}

    # -- commit: persist, then send ----------------------------------------------------------
    def _commit(self) -> None:
        early = self.core_cls.early_sends
        if early and self.out and self.storage.dirty:
            # The core's exception to persist-then-send (a Raft leader's appends): these leave
            # now and travel while we fsync; the core hears of the fsync in handle_persisted.
            self.tracer.flush()
            self._send_early(early)
        for _ in range(4):      # what handle_persisted writes (normally nothing) is flushed too
            if not self.storage.flush() or not early:
                break
            self.ts = time.time() - self.t0
            self._guard("persisted", self.core.handle_persisted)
        # The handlers' trace lines reach the file (a write, no fsync: a killed process's
        # writes survive in the page cache) before their messages and replies leave, so a
        # SIGKILL after a send never loses the state or commit line whose effects a peer or
        # a client saw: the checkers read only the trace.
        self.tracer.flush()
        if self.out:
            out, self.out = self.out, []
            for item in out:
                self._transmit(*item)
        if self.replies:
            replies, self.replies = self.replies, []
            # Answers to one client leave as one frame (a msgpack array of maps): under load a
            # send per answer costs more than everything else the agent does for a request.
            by_client: dict[bytes, list[dict[str, Any]]] = {}
            for ident, answer in replies:
                by_client.setdefault(ident, []).append(answer)
            for ident, answers in by_client.items():
                try:
                    self.ctl.send_multipart([ident, control.pack_answers(answers)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    self.counters["control_send_errors"] += len(answers)
        self.tracer.flush()          # the node_down drops of this commit, if any

    def _send_early(self, early: frozenset[str]) -> None:
        """Send the buffered messages of the ``early`` types, except any to a peer that an
        earlier message of another type must reach first (a peer sees each node's messages
        in the order the core sent them)."""
        held: list[tuple[str, str, str, bytes]] = []
        blocked: set[str] = set()
        for item in self.out:
            if item[2] not in early or item[0] in blocked:
                blocked.add(item[0])
                held.append(item)
            else:
                self._transmit(*item)
        self.out = held

    def _transmit(self, dst: str, mid: str, type: str, frame: bytes) -> None:
        try:
            self.dealers[dst].send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            # No connection (IMMEDIATE) or HWM reached: the peer is down or not keeping up.
            self._drop(time.time() - self.t0, mid, type, dst, "node_down")

    def _close(self) -> None:
        try:
            self._commit()
        finally:
            self.storage.close()
            self.tracer.event("log", time.time() - self.t0, self.lc, data={"msg": "stopped"})
            self.tracer.close()
            for d in self.dealers.values():
                d.disable_monitor()
            for s in (self.router, self.ctl, self.zap, *self.monitors, *self.dealers.values()):
                s.close(0)
            signal.set_wakeup_fd(-1)
            self._wake_r.close()
            self._wake_w.close()
            log.info("stopped %s", self.node)


def _recv_pair(sock: zmq.Socket) -> tuple[bytes, bytes] | tuple[()] | None:
    """One message from a ROUTER: (routing id, payload); ``()`` for a message of any other
    number of parts (read whole, so the next starts clean); None when there is none.
    What recv_multipart does, at half the cost: the ``more`` flag comes with the frame
    instead of from a getsockopt per part."""
    try:
        head = sock.recv(zmq.NOBLOCK, copy=False)
        if not head.more:
            return ()
        body = sock.recv(zmq.NOBLOCK, copy=False)    # parts arrive together: never Again here
        if not body.more:
            return head.bytes, body.bytes
        for _ in range(1_000_000):                   # bounded: a message has at most so many parts
            if not sock.recv(zmq.NOBLOCK, copy=False).more:
                break
        return ()
    except zmq.Again:
        return None


def _setup_logging(data_dir: str, to_stderr: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(os.path.join(data_dir, control.FILES["log"]))]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.agent", description="zlab node agent")
    ap.add_argument("--spec", required=True, help="the node's spec (JSON), see docs/agent.md")
    args = ap.parse_args(argv)
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    os.makedirs(spec["data_dir"], exist_ok=True)
    _setup_logging(spec["data_dir"], bool(spec.get("log_stderr")))
    try:
        agent = Agent(spec)
    except Exception:
        log.exception("agent %s could not start", spec.get("node"))
        return 1
    profile_dir = os.environ.get("ZLAB_PROFILE")
    if not profile_dir:
        return agent.run()
    # cProfile of the whole event loop, written when the agent stops (docs/agent.md)
    import cProfile
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(agent.run)
    finally:
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, f"{agent.node}.{os.getpid()}.prof"))


if __name__ == "__main__":
    sys.exit(main())
