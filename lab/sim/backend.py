"""The simulator: every node a core object in this process, on one virtual clock.

Everything that happens is an entry ``(time, seq, fn, args)`` on one heap;
``seq`` is a counter, so entries due at the same instant run in the order
they were scheduled and a run is a pure function of the scenario and the
seed. Nothing here reads the wall clock or hashes a string.

Node faults:

* ``crash``: the core, its timers and the messages held for it are gone;
  messages that arrive while it is down are dropped (``node_down``) and the
  client requests it had taken are never answered. Its ``MemoryStorage``
  survives, as a disk would. What it sent (messages and replies) in the last
  ``send_window`` before the crash dies with it (``sender_crashed``): a real
  process's queued sends go with a SIGKILL, after the handler's durable
  writes, so a random crash can strike between the two.
* A core with ``early_sends`` (its leader replicates while it writes its own log):
  with ``persist_delay`` above 0, a handler's storage writes reach the disk that
  long after it ran; its early messages leave at once, its other messages and
  replies wait for the disk, then ``handle_persisted`` runs. A crash in between
  takes the writes back. With ``persist_delay`` 0 (the default) writes are durable
  when the handler returns and ``handle_persisted`` follows at once.
* ``restart``: a fresh core over the same storage, a fresh rng for the new
  incarnation, ``start()``, and a ``recovered`` log event.
* ``pause`` (SIGSTOP): nothing runs, but nothing is lost either -- messages,
  timers and requests that come due are held, as the kernel buffers them,
  and ``resume`` runs them in the order they came due.
"""

from __future__ import annotations

import heapq
import operator
import os
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgpack

from lab.backends.base import Backend, Cut, no_full_collections
from lab.errors import BackendError, ConfigError, ProtocolError
from lab.scenario import LinkParams, Scenario
from lab.sim.network import NetworkModel
from nodes.protocols import get as get_protocol
from nodes.protocols.core import ConfigValueError, Core, Tunables, build_config
from nodes.signing import CLIENTS, ClientSigner, Keyring, sim_keys
from nodes.storage import MemoryStorage
from nodes.tracelog import LEVELS, PER_MESSAGE, core_fields

UP, PAUSED, DOWN = "up", "paused", "down"
_by_time_then_node = operator.itemgetter("ts", "node")

# Bodies cross the simulated wire as msgpack, as they do on the real one: a core
# cannot share mutable state with a peer, and a body the wire could not carry fails here first.
_pack = msgpack.Packer(use_bin_type=True).pack
_unpack = msgpack.unpackb           # raw=False: str as str, as the agent reads them


class _Node:
    """What the simulator keeps of a node across incarnations."""

    __slots__ = ("name", "state", "storage", "lc", "incarnation", "ctx", "core", "held", "timers",
                 "due", "armed", "synced", "waiting", "persist_due")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = DOWN
        self.storage = MemoryStorage()          # the node's disk: survives crashes
        self.lc = 0                             # Lamport clock; monotonic over the node's whole life
        self.incarnation = 0
        self.ctx: SimContext | None = None
        self.core: Core | None = None
        self.held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []   # work that came due while paused
        self.timers: dict[str, int] = {}        # name -> generation of the one pending timer
        self.due: dict[str, float] = {}         # name -> when that timer fires (same names as timers)
        # name -> (time, seq) of the one heap entry that comes back for that timer (see set_timer)
        self.armed: dict[str, tuple[float, int]] = {}
        self.synced = 0                         # storage.writes when handle_persisted last ran
        self.waiting: list[tuple[Callable[..., None], tuple[Any, ...]]] = []  # sends waiting for the disk
        self.persist_due = False                # a _persisted event is on the heap

    def clear_timers(self) -> None:
        """No timer pending (a crash or a fresh incarnation): entries still on the heap are void."""
        self.timers.clear()
        self.due.clear()
        self.armed.clear()


class SimContext:
    """The :class:`nodes.protocols.core.Context` of one incarnation of one node."""

    def __init__(self, sim: SimBackend, slot: _Node) -> None:
        self._sim = sim
        self._slot = slot
        self.node = slot.name
        self.nodes: Mapping[str, Mapping[str, Any]] = sim._node_specs_view
        self.storage = slot.storage
        # str seeds are hashed with sha512 by random.Random: the same in every process.
        self.rng = random.Random(f"{sim.seed}/node/{slot.name}/{slot.incarnation}")
        self.keys = sim._keyring(slot.name)
        self._events = sim._events
        if not sim._messages:           # a lighter trace level: the same clock, fewer lines
            self.trace = self._trace_some     # type: ignore[method-assign]

    def now(self) -> float:
        return self._sim._now

    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        slot = self._slot
        if self._sim._holding and (slot.waiting or (slot.storage.unsynced and type not in self._sim._early)):
            slot.waiting.append((self._sim._send, (slot, dst, type, body)))
            return
        self._sim._send(slot, dst, type, body)

    def set_timer(self, name: str, after: float) -> None:
        # A core resets some timers far more often than they fire (Raft's election timer, on
        # every append). Such a reset pushes nothing while the timer's heap entry is due no later
        # than the new time: that entry comes back, finds the timer moved and goes back on the heap
        # as (due, gen), the very entry an eager push would have made; the run is the same.
        sim, slot = self._sim, self._slot
        sim._seq += 1
        gen = sim._seq
        due = sim._now + max(after, 0.0)
        slot.timers[name] = gen
        slot.due[name] = due
        armed = slot.armed.get(name)
        if armed is not None and armed[0] <= due:
            return
        slot.armed[name] = (due, gen)
        heapq.heappush(sim._heap, (due, gen, sim._wake, (slot, name, gen)))

    def cancel_timer(self, name: str) -> None:
        self._slot.timers.pop(name, None)
        self._slot.due.pop(name, None)

    def reply(self, client: str, result: dict[str, Any]) -> None:
        slot = self._slot
        if self._sim._holding and slot.storage.unsynced:
            slot.waiting.append((self._sim._reply, (slot, client, result)))
            return
        self._sim._reply(slot, client, result)

    def trace(self, ev: str, **fields: Any) -> None:
        """The one way an event of this node other than a message's or a timer's is traced:
        the core's own, and the simulator's ``log``, ``request`` and ``reply`` lines."""
        slot = self._slot
        lc = slot.lc = slot.lc + 1
        self._events.append(core_fields(fields, {"ts": self._sim._ts, "node": self.node, "lc": lc, "ev": ev}))

    def _trace_some(self, ev: str, **fields: Any) -> None:
        """:meth:`trace` at level ``protocol`` or ``none``: the clock ticks for every event, as at
        ``all``, so the lines kept are exactly those of ``all``'s trace of the same seed."""
        slot = self._slot
        lc = slot.lc = slot.lc + 1
        if self._sim._tracing and ev not in PER_MESSAGE:
            self._events.append(core_fields(fields, {"ts": self._sim._ts, "node": self.node, "lc": lc, "ev": ev}))


class SimBackend(Backend):
    kind = "sim"

    #: events at one virtual instant before the run is declared a livelock
    max_same_instant = 1_000_000
    #: s: messages and replies a node sent this recently die with it when it crashes (they were
    #: still in the process's socket queues); its storage writes, made before them, survive
    send_window = 0.001
    #: s a core's storage writes take to be durable, for a core with ``early_sends`` (0: at once)
    persist_delay = 0.0

    def __init__(self, scenario: Scenario, seed: int, workdir: str, *,
                 core: type[Core] | None = None, trace: str | None = None) -> None:
        """``core`` overrides the registry's class for ``scenario.protocol`` (test cores, variants).
        ``trace`` is the trace level (:data:`nodes.tracelog.LEVELS`; default ``ZLAB_TRACE``, else
        ``all``): ``protocol`` leaves out the send, recv, timer, request and reply lines, ``none``
        every line. Every level runs the same schedule and the same Lamport clocks: a lighter
        level's trace is ``all``'s trace of the seed with those lines taken out (docs/sim.md)."""
        super().__init__(scenario, seed, workdir)
        level = os.environ.get("ZLAB_TRACE", "all") if trace is None else trace
        if level not in LEVELS:
            raise ConfigError(f"trace level {level!r}: must be one of {', '.join(LEVELS)} (ZLAB_TRACE)")
        self.trace_level = level
        self._messages = level == "all"         # send, recv, timer, request and reply lines
        self._tracing = level != "none"         # any line
        try:
            self._core_cls = core or get_protocol(scenario.protocol)
        except KeyError as e:
            raise BackendError(str(e.args[0])) from None
        try:
            self._config: Tunables = build_config(self._core_cls, scenario.config)
        except ConfigValueError as e:
            raise ConfigError(e.message, path=scenario.source, field=f"config.{e.field}") from None
        self._node_specs = {n.name: n.as_dict() for n in scenario.nodes}
        self._node_specs_view = MappingProxyType(self._node_specs)
        self._nodes = {name: _Node(name) for name in self._node_specs}
        try:        # a bad link setting is bad input: say so now, not mid-run
            self.network = NetworkModel(scenario.network, random.Random(f"{seed}/network"))
        except ValueError as e:
            raise ConfigError(str(e), path=scenario.source, field="network") from None
        self._client_delay = scenario.network.default.delay
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._now = 0.0
        self._ts = 0.0                          # _now as traced: rounded to the microsecond
        self._mid = 0
        self._client_seq = 0
        self._clients: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {}  # handle -> (on_result, node)
        self._events: list[dict[str, Any]] = []
        self._lost: set[int] = set()            # mids of messages that died with their sender
        self._lost_replies: set[str] = set()    # client handles whose answer died likewise
        self._started = False
        self.counters = {"sent": 0, "delivered": 0, "dropped": 0, "timers": 0, "requests": 0, "replies": 0}
        # Signing keys derived from the seed (a seed replays exactly), for cores that sign; one
        # verification cache for all nodes: verifying is pure, so every node would agree.
        self._secrets, self._publics = (sim_keys(seed, list(self._nodes)) if self._core_cls.signs
                                        else ({}, {}))
        self._verified: dict[tuple[str, bytes, bytes], bool] = {}
        self._early = self._core_cls.early_sends
        self._holding = False                   # writes wait persist_delay (set at start)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._early and self.persist_delay > 0:
            self._holding = True
            for slot in self._nodes.values():
                slot.storage.hold()
        for slot in self._nodes.values():
            self._boot(slot, "started")

    def stop(self) -> None:
        self._heap.clear()

    # -- time ------------------------------------------------------------------
    def now(self) -> float:
        return self._now

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self._push(max(t, self._now), fn, ())

    def run_until(self, t: float) -> None:
        self._advance(t, None)

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Virtual time stops at the event after which ``done()`` holds (or at the timeout)."""
        return self._advance(self._now + timeout, done)

    def _advance(self, t: float, done: Callable[[], bool] | None) -> bool:
        """Run the events due up to ``t``; with ``done``, stop as soon as it holds (True)."""
        if done is not None and done():
            return True
        # A run keeps every trace event, millions of live objects; the full collections Python
        # starts as the heap grows would walk them all again and again (a third of a loaded run),
        # though none is garbage. Nor is what outlives a young collection, mostly: a trace event,
        # a log entry. So only the youngest generation is collected as usual (the cycles a handler
        # makes and drops); the middle one, whose collections walked every event once more (about
        # 6% of a saturated run), and the old one wait until after the run, as the thresholds are put back.
        with no_full_collections(young_only=True):
            return self._loop(t, done)

    def _loop(self, t: float, done: Callable[[], bool] | None) -> bool:
        heap = self._heap
        pop = heapq.heappop
        last, streak, limit = self._now, 0, self.max_same_instant
        while heap and heap[0][0] <= t:
            when, _, fn, args = pop(heap)
            if when == last:
                streak += 1
                if streak > limit:
                    raise BackendError(f"sim: more than {limit} events at t={when:.6f}s "
                                       "without time moving (a timer or message loop with zero delay?)")
            else:
                last, streak = when, 0
                self._now, self._ts = when, round(when, 6)
            fn(*args)
            if done is not None and done():
                return True
        if t > self._now:
            self._now, self._ts = t, round(t, 6)
        return False

    def _push(self, t: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    # -- clients -----------------------------------------------------------------
    def submit(self, node: str, op: dict[str, Any], on_result: Callable[[dict[str, Any]], None]) -> None:
        slot = self._slot(node)
        self._client_seq += 1
        handle = f"c{self._client_seq}"
        self._push(self._now + self._client_delay, self._arrive_request,
                   (slot, handle, self._encode(op, "client op"), on_result))

    def client_signer(self) -> ClientSigner | None:
        return ClientSigner(self._secrets[CLIENTS]) if self._secrets else None

    def status(self, node: str) -> dict[str, Any] | None:
        slot = self._slot(node)
        if slot.state != UP or slot.core is None:
            return None
        return slot.core.status()

    # -- faults --------------------------------------------------------------------
    def set_cuts(self, cuts: frozenset[Cut]) -> str:
        for src, dst in cuts:
            self._slot(src), self._slot(dst)
        self.network.set_cuts(cuts)
        return "sim"

    def set_link(self, src: str, dst: str, params: LinkParams) -> str:
        self._slot(src), self._slot(dst)
        try:
            self.network.set_link(src, dst, params)
        except ValueError as e:
            raise BackendError(f"sim: link {src}->{dst}: {e}") from None
        return "sim"

    def crash(self, node: str) -> None:
        slot = self._slot(node)
        if slot.state == DOWN:
            return
        self._lose_recent_sends(slot)
        slot.storage.lose_unsynced()            # written, not yet on disk: never happened
        slot.waiting.clear()
        slot.persist_due = False
        held, slot.held = slot.held, []
        slot.state = DOWN
        slot.core = slot.ctx = None
        slot.clear_timers()
        for fn, args in held:
            # Buffered messages die with the process; say so, so every send has its end.
            if fn == self._deliver:
                self._drop_at(slot, args, "node_down")
        for handle in [h for h, (_, owner) in self._clients.items() if owner == slot.name]:
            del self._clients[handle]

    def _lose_recent_sends(self, slot: _Node) -> None:
        """The sends of ``slot``'s last ``send_window`` that have not arrived die with it.

        Found on the heap, where each message and reply waits with the time it left (so a send
        costs nothing extra, and no trace level needs the send lines); a message that arrived
        already is not taken back, one of two duplicated copies still on its way is."""
        if self.send_window <= 0:
            return
        cutoff = round(self._now - self.send_window, 6)
        name = slot.name
        deliver, answer = self._deliver, self._answer
        gone: dict[int, tuple[Any, ...]] = {}
        for _, _, fn, args in self._heap:
            if fn == deliver:
                if args[1] == name and args[6] >= cutoff:
                    gone[args[2]] = args
            elif fn == answer and args[3] == name and args[4] >= cutoff:
                self._lost_replies.add(args[0])
        for mid in sorted(gone):            # in the order they were sent
            dst, _, _, type = gone[mid][:4]
            self._lost.add(mid)
            slot.lc += 1
            if self._tracing:
                self._events.append({"ts": self._ts, "node": name, "lc": slot.lc, "ev": "drop", "mid": mid,
                                     "type": type, "peer": dst.name, "data": {"reason": "sender_crashed"}})
            self.counters["dropped"] += 1

    def restart(self, node: str) -> None:
        slot = self._slot(node)
        if slot.state != DOWN:
            self.crash(node)    # like `docker restart`: a running node is killed first
        slot.incarnation += 1
        self._boot(slot, "recovered")

    def pause(self, node: str) -> None:
        slot = self._slot(node)
        if slot.state == UP:
            slot.state = PAUSED

    def resume(self, node: str) -> None:
        slot = self._slot(node)
        if slot.state != PAUSED:
            return
        slot.state = UP
        held, slot.held = slot.held, []
        for fn, args in held:
            self._push(self._now, fn, args)

    # -- results ---------------------------------------------------------------------
    def trace_events(self) -> list[dict[str, Any]]:
        return sorted(self._events, key=_by_time_then_node)

    def node_state(self, node: str) -> str:
        """``up``, ``paused`` or ``down``: for tests and the runner's target resolution."""
        return self._slot(node).state

    def storage(self, node: str) -> MemoryStorage:
        """The node's durable storage (survives crashes), for tests and final inspection."""
        return self._slot(node).storage

    def core(self, node: str) -> Core | None:
        """The running core object of ``node`` (None when down), for white-box tests."""
        return self._slot(node).core

    def notes(self) -> list[str]:
        c = self.counters
        return [f"sim: {c['sent']} messages sent, {c['delivered']} delivered, {c['dropped']} dropped; "
                f"{c['timers']} timers fired; {c['requests']} requests, {c['replies']} replies"]

    # -- internals -------------------------------------------------------------------------
    def _slot(self, node: str) -> _Node:
        try:
            return self._nodes[node]
        except KeyError:
            raise BackendError(f"sim: no node named {node!r} (nodes: {', '.join(self._nodes)})") from None

    def _keyring(self, node: str) -> Keyring | None:
        if not self._secrets:
            return None
        return Keyring(node, self._secrets[node], self._publics, cache=self._verified)

    def _boot(self, slot: _Node, msg: str) -> None:
        slot.ctx = SimContext(self, slot)
        slot.core = self._core_cls(slot.ctx, self._config)
        slot.state = UP
        slot.clear_timers()
        slot.ctx.trace("log", msg=msg)
        self._run(slot, slot.core.start, ())

    def _run(self, slot: _Node, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
            if self._early:
                self._after_handler(slot)
        except Exception as e:
            e.add_note(f"in node {slot.name} ({fn.__qualname__}) at sim time {self._now:.6f}s, seed {self.seed}")
            raise

    def _after_handler(self, slot: _Node) -> None:
        """For a core with early sends: tell it its writes are durable, now or (with
        ``persist_delay``) once they have reached the simulated disk."""
        storage = slot.storage
        if self.persist_delay > 0:
            if storage.unsynced and not slot.persist_due:
                slot.persist_due = True
                self._push(self._now + self.persist_delay, self._persisted, (slot, slot.incarnation))
        elif storage.writes != slot.synced:
            slot.synced = storage.writes
            slot.core.handle_persisted()

    def _persisted(self, slot: _Node, incarnation: int) -> None:
        if slot.incarnation != incarnation or slot.state is DOWN or not slot.persist_due:
            return              # the writes died with the process
        if slot.state is PAUSED:
            slot.held.append((self._persisted, (slot, incarnation)))
            return
        slot.persist_due = False
        slot.storage.sync()
        waiting, slot.waiting = slot.waiting, []
        for fn, args in waiting:
            fn(*args)
        self._run(slot, slot.core.handle_persisted, ())

    def _encode(self, value: Any, what: str) -> bytes:
        try:
            return _pack(value)
        except (TypeError, ValueError, OverflowError) as e:
            raise ProtocolError(f"sim: {what} cannot go on the wire (msgpack: {e}): {value!r}") from None

    def _send(self, slot: _Node, dst: str, type: str, body: dict[str, Any]) -> None:
        target = self._nodes.get(dst)
        if target is None:
            raise ProtocolError(f"sim: {slot.name} sent {type!r} to unknown node {dst!r}")
        try:
            payload = _pack(body)
        except (TypeError, ValueError, OverflowError) as e:
            raise ProtocolError(f"sim: {slot.name} sent a {type!r} body the wire cannot carry "
                                f"(msgpack: {e}): {body!r}") from None
        self._mid += 1
        mid = self._mid
        lc = slot.lc = slot.lc + 1
        now, ts = self._now, self._ts
        src = slot.name
        if self._messages:
            self._events.append({"ts": ts, "node": src, "lc": lc, "ev": "send", "mid": mid, "type": type,
                                 "peer": dst})
        self.counters["sent"] += 1
        reason, arrivals = self.network.transmit(src, dst, now, len(payload))
        if reason is not None:
            lc = slot.lc = lc + 1
            if self._tracing:
                self._events.append({"ts": ts, "node": src, "lc": lc, "ev": "drop", "mid": mid, "type": type,
                                     "peer": dst, "data": {"reason": reason}})
            self.counters["dropped"] += 1
            return
        heap = self._heap
        push = heapq.heappush
        msg = (target, src, mid, type, payload, lc, ts)     # ts: when it left (a crash's window)
        for arrival in arrivals:
            self._seq += 1
            push(heap, (arrival, self._seq, self._deliver, msg))

    def _deliver(self, target: _Node, src: str, mid: int, type: str, payload: bytes, lc: int,
                 sent: float) -> None:
        if self._lost and mid in self._lost:
            return                      # its drop was traced when its sender crashed
        state = target.state
        if state is not UP:
            msg = (target, src, mid, type, payload, lc, sent)
            if state is PAUSED:
                target.held.append((self._deliver, msg))
            else:
                self._drop_at(target, msg, "node_down")
            return
        core = target.core
        if type not in core.message_types:
            self._drop_at(target, (target, src, mid, type, payload, lc, sent), "unknown_type")
            return
        lc = target.lc = (lc if lc > target.lc else target.lc) + 1
        if self._messages:
            self._events.append({"ts": self._ts, "node": target.name, "lc": lc, "ev": "recv",
                                 "mid": mid, "type": type, "peer": src})
        self.counters["delivered"] += 1
        try:
            core.handle_message(src, type, _unpack(payload))
            if self._early:
                self._after_handler(target)
        except Exception as e:
            e.add_note(f"in node {target.name} handling {type!r} from {src} at sim time "
                       f"{self._now:.6f}s, seed {self.seed}")
            raise

    def _drop_at(self, target: _Node, msg: tuple[Any, ...], reason: str) -> None:
        """A message that reached ``target`` but was not taken in: traced where it died."""
        _, src, mid, type = msg[:4]
        target.lc += 1
        if self._tracing:
            self._events.append({"ts": self._ts, "node": target.name, "lc": target.lc, "ev": "drop",
                                 "mid": mid, "type": type, "peer": src, "data": {"reason": reason}})
        self.counters["dropped"] += 1

    def _wake(self, slot: _Node, name: str, seq: int) -> None:
        """The heap entry ``seq`` of timer ``name`` came due: fire it, or put it back for when it
        is due now that it was set again (see :meth:`SimContext.set_timer`)."""
        armed = slot.armed.get(name)
        if armed is None or armed[1] != seq:
            return              # an entry an earlier one replaced, or of an incarnation that crashed
        gen = slot.timers.get(name)
        if gen is None:
            del slot.armed[name]        # cancelled
        elif gen != seq:
            due = slot.due[name]
            slot.armed[name] = (due, gen)
            heapq.heappush(self._heap, (due, gen, self._wake, (slot, name, gen)))
        else:
            del slot.armed[name]
            self._fire(slot, name, gen)

    def _fire(self, slot: _Node, name: str, gen: int) -> None:
        if slot.timers.get(name) != gen:
            return              # cancelled, replaced, or set by an incarnation that crashed
        if slot.state is PAUSED:
            slot.held.append((self._fire, (slot, name, gen)))
            return
        del slot.timers[name]
        del slot.due[name]
        slot.lc += 1
        if self._messages:
            self._events.append({"ts": self._ts, "node": slot.name, "lc": slot.lc, "ev": "timer",
                                 "type": name})
        self.counters["timers"] += 1
        self._run(slot, slot.core.handle_timer, (name,))

    def _arrive_request(self, slot: _Node, handle: str, op_bytes: bytes,
                        on_result: Callable[[dict[str, Any]], None]) -> None:
        if slot.state is not UP:
            if slot.state is PAUSED:
                slot.held.append((self._arrive_request, (slot, handle, op_bytes, on_result)))
            return              # a down node never answers; the runner times the op out
        self._clients[handle] = (on_result, slot.name)
        op = _unpack(op_bytes)
        if self._messages:
            slot.ctx.trace("request", client=handle, op=_unpack(op_bytes))
        else:
            slot.lc += 1                # the line is left out, not the tick of the clock
        self.counters["requests"] += 1
        self._run(slot, slot.core.handle_request, (handle, op))

    def _reply(self, slot: _Node, client: str, result: dict[str, Any]) -> None:
        payload = self._encode(result, f"{slot.name}'s reply")
        if self._messages:
            slot.ctx.trace("reply", client=client, result=_unpack(payload))
        else:
            slot.lc += 1
        entry = self._clients.pop(client, None)
        if entry is None:
            return              # answered already, or its node crashed since: the client is gone
        self.counters["replies"] += 1
        # The node and the time it answered: a crash in the next send_window takes it back.
        self._push(self._now + self._client_delay, self._answer, (client, entry[0], payload, slot.name, self._ts))

    def _answer(self, client: str, on_result: Callable[[dict[str, Any]], None], payload: bytes,
                node: str, sent: float) -> None:
        if self._lost_replies and client in self._lost_replies:
            return                      # its node crashed before it left
        on_result(_unpack(payload))
