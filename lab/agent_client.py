"""The orchestrator's control client for one agent (protocol: nodes/control.py).

A DEALER with the lab's CurveZMQ client keys. Everything is non-blocking at
heart: :meth:`AgentClient.request` sends and registers a callback,
:meth:`AgentClient.process` dispatches whatever answers have arrived (a backend
polls :attr:`AgentClient.socket` with the others), and :meth:`AgentClient.call`
is the one bounded blocking helper, for readiness, status and fault rules.

Client ops (``submit``) are batched: they wait in :attr:`AgentClient.batch` until
:meth:`AgentClient.flush` sends them as one frame (the backend flushes before it
waits for answers, so none waits longer than the caller's own turn); any other
request flushes them first, so the agent sees requests in the order they were made.

Requests made before the connection (and its Curve handshake) is up are
queued by ZeroMQ and delivered once it is, so a fresh client can ask at once.
Backends do not submit client ops to a node they crashed, so nothing meant for
a dead incarnation reaches the next one; rule changes that were queued for it
arrive in order after the restart spec's own (identical or older) rules.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import zmq

from nodes import control, wire

Callback = Callable[[dict[str, Any]], None]
MAX_CALLBACKS = 100_000
MAX_BATCH = 64              # submits in one frame: an agent takes 512 requests a loop iteration


def _put_bounded(table: dict[int, Any], rid: int, callback: Any) -> None:
    """Keep ``callback`` for request ``rid``; past MAX_CALLBACKS the oldest is dropped (its
    answer, if it ever comes, finds no one)."""
    if len(table) >= MAX_CALLBACKS:
        table.pop(next(iter(table)))
    table[rid] = callback


class AgentClient:
    def __init__(self, endpoint: str, server_public: bytes, client_public: bytes, client_secret: bytes,
                 *, zctx: zmq.Context | None = None, name: str = "") -> None:
        self.endpoint = endpoint
        self.name = name
        self.zctx = zctx or zmq.Context.instance()
        s = self.zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, max(wire.MAX_MESSAGE_SIZE, 2 * control.READ_MAX))
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.RECONNECT_IVL, 50)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        # A connect to a container not yet on its bridge gets no answer at all: give it up and
        # dial again instead of waiting out the kernel's SYN backoff (see nodes/control.py).
        s.setsockopt(zmq.CONNECT_TIMEOUT, control.CONNECT_TIMEOUT_MS)
        s.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        s.setsockopt(zmq.CURVE_PUBLICKEY, client_public)
        s.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
        s.connect(endpoint)
        self.socket = s
        self._ids = itertools.count(1)
        self._callbacks: dict[int, Callback | None] = {}
        # Submits' on_result, apart: called with the result itself, no wrapper made per op.
        self._on_result: dict[int, Callback] = {}
        self.unanswered = 0          # requests that could not even be queued (HWM reached)
        self.batch: list[dict[str, Any]] = []      # submits not sent yet

    # -- non-blocking ----------------------------------------------------------
    def request(self, op: str, callback: Callback | None = None, **fields: Any) -> int | None:
        """Send ``op``; ``callback(answer)`` runs from :meth:`process` when it is answered.
        Returns the request id, or None when the send queue is full (no answer will come)."""
        self.flush()
        rid = next(self._ids)
        try:
            self.socket.send(control.request(op, rid, **fields), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.unanswered += 1
            return None
        self._expect(rid, callback)
        return rid

    def _expect(self, rid: int, callback: Callback | None) -> None:
        _put_bounded(self._callbacks, rid, callback)

    def flush(self) -> None:
        """Send the batched submits, as one frame (the agent answers each on its own)."""
        batch, self.batch = self.batch, []
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start:start + MAX_BATCH]
            try:
                self.socket.send(control.pack_requests(chunk), zmq.NOBLOCK)
            except zmq.ZMQError:
                self.unanswered += len(chunk)
                for req in chunk:           # no answer will come
                    self.forget(req["id"])

    def submit(self, req: dict[str, Any], on_result: Callable[[dict[str, Any]], None]) -> int | None:
        """A client op; ``on_result`` gets the core's result dict (or ``{"type": "fail", "error": ...}``)."""
        rid = next(self._ids)
        self.batch.append({"op": "submit", "id": rid, "req": req})
        _put_bounded(self._on_result, rid, on_result)
        return rid

    def forget(self, rid: int | None) -> None:
        """Drop the callback of a request the caller gave up on."""
        if rid is not None:
            self._callbacks.pop(rid, None)
            self._on_result.pop(rid, None)

    def process(self, limit: int = 10_000) -> int:
        """Dispatch the answers that have arrived; returns how many."""
        n = 0
        for _ in range(limit):
            try:
                data = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                answers = control.unpack_answers(data)
            except ValueError:
                continue
            for answer in answers:
                n += 1
                rid = answer.get("id")
                on_result = self._on_result.pop(rid, None)
                if on_result is not None:
                    on_result(answer.get("result") or {"type": "fail", "error": answer.get("error", "no result")})
                    continue
                cb = self._callbacks.pop(rid, None)
                if cb is not None:
                    cb(answer)
        return n

    # -- blocking, bounded ---------------------------------------------------------
    def call(self, op: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any] | None:
        """Send ``op`` and wait at most ``timeout`` s for its answer (other answers are dispatched
        meanwhile). None when no answer came."""
        box: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        rid = self.request(op, box.append, **fields)
        while rid is None:
            # The queue is full: retry until the deadline.
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
            rid = self.request(op, box.append, **fields)
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not box:
            left = deadline - time.monotonic()
            if left <= 0:
                self.forget(rid)
                return None
            if poller.poll(int(left * 1000) + 1):
                self.process()
        return box[0]

    def read_file(self, name: str, offset: int = 0, timeout: float = 5.0) -> bytes | None:
        """The whole of an agent's file (``trace`` or ``log``) from ``offset``, chunk by chunk."""
        out = []
        for _ in range(100_000):
            ans = self.call("read_file", timeout, name=name, offset=offset)
            if ans is None or "error" in ans:
                return None if not out else b"".join(out)
            out.append(ans["data"])
            offset = ans["offset"]
            if not ans["data"] or offset >= ans["size"]:
                break
        return b"".join(out)

    def close(self) -> None:
        self.batch.clear()
        self.socket.close(0)
        self._callbacks.clear()
        self._on_result.clear()
