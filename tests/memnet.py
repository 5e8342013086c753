"""A tiny deterministic in-memory network of protocol cores, in the style of etcd's raft tests.

Any core runs on it (``Net(Paxos, n=5)``); ``tests/raftnet.py`` adds Raft's
own verbs. Nothing here is random unless a test asks: each node's ``rng`` is
seeded from the net's seed and its name, the clock is a number the test
moves, and messages wait in a queue until the test delivers them. Faults are
plain calls: ``cut``/``isolate``/``recover`` (checked when a message is
delivered, so a cut also loses what is in flight), ``ignore`` a message type,
``crash``/``restart`` (a new core over the same MemoryStorage; what the
crashed node had queued, to or from it, is lost).

Storage writes are durable when the handler returns (then a core with
``early_sends`` hears ``handle_persisted``), unless the test calls
``hold_writes(node)``: that node's writes then wait for ``persist(node)``, and
so do its messages of other types than ``early_sends`` and its replies; a
crash before it takes the writes back (a SIGKILL before the fsync).

A message takes ``delay`` (1 us by default) plus up to ``jitter`` (which
reorders) and is lost with probability ``loss``; delivering advances the
clock, so trace timestamps follow causality even in a schedule that never
ticks. Timers fire only inside ``tick``. The trace is a list of dicts in the
docs/trace.md format, ready for the checkers under lab/checks/.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lab.checks.base import RunData, Verdict
from nodes.protocols.core import Core, build_config
from nodes.signing import CLIENTS, ClientSigner, Keyring, sim_keys
from nodes.storage import MemoryStorage

MAX_STEPS = 200_000     # deliveries in one deliver_all / tick before we call it a livelock

C = TypeVar("C", bound=Core)


@dataclass(order=True)
class Message:
    at: float
    seq: int
    src: str = field(compare=False)
    dst: str = field(compare=False)
    type: str = field(compare=False)
    body: dict[str, Any] = field(compare=False)
    lc: int = field(compare=False)


class NodeContext:
    """The Context a core sees, backed by the net."""

    def __init__(self, net: Net, node: str, storage: MemoryStorage, rng: random.Random) -> None:
        self.net, self.node, self.storage, self.rng = net, node, storage, rng
        self.nodes = net.specs
        self.keys = (Keyring(node, net.secrets[node], net.publics)
                     if net.core_cls.signs else None)

    def now(self) -> float:
        return self.net.now

    def send(self, dst: str, type: str, body: dict[str, Any]) -> None:
        if self.storage.unsynced and type not in self.net.core_cls.early_sends:
            self.net.waiting[self.node].append(lambda: self.net._send(self.node, dst, type, body))
            return
        self.net._send(self.node, dst, type, body)

    def set_timer(self, name: str, after: float) -> None:
        self.net._set_timer(self.node, name, after)

    def cancel_timer(self, name: str) -> None:
        self.net._timer_seq.pop((self.node, name), None)

    def reply(self, client: str, result: dict[str, Any]) -> None:
        if self.storage.unsynced:
            self.net.waiting[self.node].append(lambda: self.reply(client, result))
            return
        self.net.replies.append((self.node, client, result))
        self.net._trace(self.node, "reply", {"data": {"client": client, "result": result}})

    def trace(self, ev: str, **fields: Any) -> None:
        self.net._trace(self.node, ev, fields)


class Net(Generic[C]):
    """``n`` nodes named n1..nN (or ``specs``: name -> node spec, as a scenario's nodes give them)
    each running ``core_cls`` with ``config`` (a YAML-style mapping)."""

    def __init__(self, core_cls: type[C], n: int = 3, seed: int = 1,
                 config: dict[str, Any] | None = None, delay: float = 1e-6, jitter: float = 0.0,
                 loss: float = 0.0, trace_messages: bool = False,
                 specs: dict[str, dict[str, Any]] | None = None) -> None:
        self.core_cls = core_cls
        self.specs = specs or {f"n{i}": {"name": f"n{i}"} for i in range(1, n + 1)}
        self.names = list(self.specs)
        self.config = build_config(core_cls, config or {})
        self.seed, self.delay, self.trace_messages = seed, delay, trace_messages
        self.jitter, self.loss = jitter, loss
        self.net_rng = random.Random(f"{seed}/net")     # jitter (reordering) and loss
        self.now = 0.0
        self.storage = {name: MemoryStorage() for name in self.names}
        # Signing keys for a core that signs, derived from the seed as the simulator does;
        # ``client`` signs requests the way the runner's clients do.
        self.secrets, self.publics = sim_keys(seed, self.names) if core_cls.signs else ({}, {})
        self.client = ClientSigner(self.secrets[CLIENTS]) if core_cls.signs else None
        self.rngs = {name: random.Random(f"{seed}/{name}") for name in self.names}
        self.cores: dict[str, C | None] = {}
        self.waiting: dict[str, list[Callable[[], None]]] = {name: [] for name in self.names}
        self._synced = dict.fromkeys(self.names, 0)      # storage writes handle_persisted has seen
        self.cuts: set[tuple[str, str]] = set()
        self.ignored: set[str] = set()
        self.trace: list[dict[str, Any]] = []
        self.replies: list[tuple[str, str, dict[str, Any]]] = []
        self.delivered = 0
        self._lc = dict.fromkeys(self.names, 0)
        self._msgs: list[Message] = []
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_seq: dict[tuple[str, str], int] = {}     # live timer -> its seq
        self._seq = 0
        for name in self.names:
            self._boot(name)

    # -- nodes ----------------------------------------------------------------
    def _boot(self, name: str) -> None:
        core = self.core_cls(NodeContext(self, name, self.storage[name], self.rngs[name]), self.config)
        self.cores[name] = core
        core.start()
        self._after(name)

    def _after(self, name: str) -> None:
        """After a handler: its writes are durable now, unless the node's writes are held."""
        storage, core = self.storage[name], self.cores[name]
        if core is None or storage.unsynced or storage.writes == self._synced[name]:
            return
        self._synced[name] = storage.writes
        if self.core_cls.early_sends:
            core.handle_persisted()
            self._after(name)

    def hold_writes(self, name: str, hold: bool = True) -> None:
        """From now on ``name``'s writes are durable only at ``persist(name)`` (``hold=False``:
        when its handlers return again, from the next persist on)."""
        if hold:
            self.storage[name].hold()
        else:
            self.persist(name)
            self.storage[name].hold(False)

    def persist(self, name: str) -> None:
        """``name``'s writes reach its disk: what waited for them leaves, and the core hears it."""
        self.storage[name].sync()
        waiting, self.waiting[name] = self.waiting[name], []
        for fn in waiting:
            fn()
        self._after(name)

    def core(self, name: str) -> C:
        core = self.cores[name]
        assert core is not None, f"{name} is down"
        return core

    def up(self) -> list[str]:
        return [n for n in self.names if self.cores[n] is not None]

    def crash(self, name: str) -> None:
        self.cores[name] = None
        self.storage[name].lose_unsynced()
        self.waiting[name] = []
        for key in [k for k in self._timer_seq if k[0] == name]:
            del self._timer_seq[key]
        self._msgs = [m for m in self._msgs if name not in (m.src, m.dst)]
        heapq.heapify(self._msgs)
        self._trace(name, "log", {"data": {"msg": "crashed"}})

    def restart(self, name: str) -> None:
        assert self.cores[name] is None, f"{name} is running"
        self._trace(name, "log", {"data": {"msg": "recovered"}})
        self._boot(name)

    # -- faults -----------------------------------------------------------------
    def cut(self, a: str, b: str, oneway: bool = False) -> None:
        self.cuts.add((a, b))
        if not oneway:
            self.cuts.add((b, a))

    def isolate(self, name: str) -> None:
        for other in self.names:
            if other != name:
                self.cut(name, other)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups."""
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1:]:
                for a in g:
                    for b in h:
                        self.cut(a, b)

    def ignore(self, type: str) -> None:
        self.ignored.add(type)

    def recover(self) -> None:
        """Heal every cut and stop ignoring message types."""
        self.cuts.clear()
        self.ignored.clear()

    # -- time and delivery -------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, src: str, dst: str, type: str, body: dict[str, Any]) -> None:
        self._lc[src] += 1
        if self.trace_messages:
            self._trace(src, "send", {"type": type, "peer": dst}, tick=False)
        if self.loss and self.net_rng.random() < self.loss:
            return
        at = self.now + self.delay
        if self.jitter:
            at += self.net_rng.uniform(0.0, self.jitter)
        heapq.heappush(self._msgs, Message(at, self._next_seq(), src, dst, type, body, self._lc[src]))

    def _set_timer(self, node: str, name: str, after: float) -> None:
        seq = self._next_seq()
        self._timer_seq[(node, name)] = seq
        heapq.heappush(self._timers, (self.now + after, seq, node, name))

    def _deliver(self, m: Message) -> bool:
        self.now = max(self.now, m.at)
        core = self.cores.get(m.dst)
        if core is None or (m.src, m.dst) in self.cuts or m.type in self.ignored:
            return False
        self._lc[m.dst] = max(self._lc[m.dst], m.lc)
        if self.trace_messages:
            self._trace(m.dst, "recv", {"type": m.type, "peer": m.src})
        self.delivered += 1
        core.handle_message(m.src, m.type, m.body)
        self._after(m.dst)
        return True

    def step(self) -> Message | None:
        """Deliver (or lose, if cut) the oldest queued message; None when the queue is empty."""
        if not self._msgs:
            return None
        m = heapq.heappop(self._msgs)
        self._deliver(m)
        return m

    def deliver_all(self, max_steps: int = MAX_STEPS) -> int:
        """Deliver until no message is queued; returns how many were handled."""
        for n in range(max_steps):
            if self.step() is None:
                return n
        raise AssertionError(f"still delivering after {max_steps} messages: a livelock?")

    def deliver_until(self, cond: Callable[[], bool], max_steps: int = MAX_STEPS) -> None:
        """Deliver one message at a time until ``cond()`` holds."""
        for _ in range(max_steps):
            if cond():
                return
            if self.step() is None:
                raise AssertionError("queue ran dry before the condition held")
        raise AssertionError(f"condition not reached within {max_steps} messages")

    def tick(self, seconds: float, max_steps: int = MAX_STEPS) -> None:
        """Let ``seconds`` pass: messages and timers in time order (messages first on a tie)."""
        end = self.now + seconds
        for _ in range(max_steps):
            t_msg = self._msgs[0].at if self._msgs else float("inf")
            while self._timers and self._timer_seq.get(self._timers[0][2:]) != self._timers[0][1]:
                heapq.heappop(self._timers)      # cancelled or replaced
            t_timer = self._timers[0][0] if self._timers else float("inf")
            if min(t_msg, t_timer) > end:
                self.now = end
                return
            if t_msg <= t_timer:
                self.step()
            else:
                at, _, node, name = heapq.heappop(self._timers)
                del self._timer_seq[(node, name)]
                self.now = max(self.now, at)
                self.fire(node, name)
        raise AssertionError(f"more than {max_steps} events in {seconds}s: a livelock?")

    def fire(self, node: str, name: str) -> None:
        """Fire ``node``'s timer ``name`` now (etcd's MsgHup when it is the election timer)."""
        self._trace(node, "timer", {"type": name})
        self.core(node).handle_timer(name)
        self._after(node)

    # -- clients -----------------------------------------------------------------------
    def request(self, node: str, op: dict[str, Any], client: str = "c1") -> None:
        self._trace(node, "request", {"data": {"client": client, "op": op}})
        self.core(node).handle_request(client, op)
        self._after(node)

    def replies_to(self, client: str) -> list[dict[str, Any]]:
        return [r for _, c, r in self.replies if c == client]

    # -- observation ---------------------------------------------------------------------
    def _trace(self, node: str, ev: str, fields: dict[str, Any], tick: bool = True) -> None:
        if tick:
            self._lc[node] += 1
        self.trace.append({"ts": round(self.now, 6), "node": node, "lc": self._lc[node],
                           "ev": ev, **fields})

    def run_data(self, history: list[dict[str, Any]] | None = None) -> RunData:
        """What a checker reads, from this net's trace (and a history if the test kept one)."""
        return RunData(scenario={}, trace=self.trace, history=history or [])

    def run_checks(self, checks: dict[str, Callable[[RunData], Verdict]]) -> dict[str, Verdict]:
        run = self.run_data()
        return {name: fn(run) for name, fn in checks.items()}
