"""Simulator speed: simulated seconds per wall second for a loaded 5-node Raft.

Clients are driven straight through ``SimBackend.submit`` in a closed loop
(each client has one op in flight, retries at the leader it is pointed to or
at the next node on a timeout), so the figure measures the simulator and the
core, not a runner. Falls back to the ``register`` core, and says so, when no
Raft core can be imported.

The saturated run is measured twice: at the default trace level (``all``, every line: the
figure kept since the start) and at level ``protocol`` (no send, recv, timer, request or
reply lines), the level for schedule sweeps: the Raft checks and ``linearizable`` still decide
at it (docs/sim.md).
"""

from __future__ import annotations

import gc
import os
import random
import tempfile
import time
from typing import Any

from bench.trials import alternate, summarize
from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario
from lab.sim import SimBackend
from lab.tracefile import write_trace


class ClosedLoopClients:
    """``clients`` key-value clients, each with one op in flight until ``until``.

    Ops carry ``client``/``seq`` so a replicated core can answer retries exactly
    once. A ``not_leader`` answer redirects the client (to the named leader, or
    the next node); a timeout sends the same op to the next node.
    """

    def __init__(self, sim: SimBackend, *, clients: int = 20, keys: int = 10, read_ratio: float = 0.5,
                 timeout: float = 0.5, retry_pause: float = 0.01, think: float = 0.0, until: float = 30.0,
                 seed: int = 0) -> None:
        self.sim = sim
        self.nodes = list(sim.scenario.node_names)
        self.rng = random.Random(f"{seed}/clients")
        self.keys = keys
        self.read_ratio = read_ratio
        self.timeout = timeout
        self.retry_pause = retry_pause
        self.think = think               # s a client waits between an answer and its next op
        self.until = until
        self.target = [self.nodes[0]] * clients
        self.seq = [0] * clients
        self.pending: list[dict[str, Any] | None] = [None] * clients
        self.attempt = [0] * clients     # token of the attempt in flight, 0 when none
        self.attempts = 0
        self.ok = self.failed = self.timeouts = self.redirects = 0
        # Names made once: the driver runs for every op, inside the measured time.
        self.key_names = [f"k{i}" for i in range(keys)]
        self.client_names = [f"w{c}" for c in range(clients)]

    def start(self) -> None:
        for c in range(len(self.target)):
            self._next(c)

    def _next(self, c: int) -> None:
        if self.sim.now() >= self.until:
            self.pending[c] = None
            return
        seq = self.seq[c] = self.seq[c] + 1
        rng = self.rng
        key = self.key_names[rng.randrange(self.keys)]
        # The same draws, and the same op (its keys in the same order), as ever: the traces too.
        if rng.random() < self.read_ratio:
            op = {"f": "read", "key": key, "client": self.client_names[c], "seq": seq}
        else:
            op = {"f": "write", "key": key, "value": rng.randrange(1_000_000), "client": self.client_names[c],
                  "seq": seq}
        self.pending[c] = op
        self._send(c)

    def _send(self, c: int) -> None:
        # Every attempt gets its own token: answers and timeouts of earlier attempts are ignored.
        self.attempts += 1
        token = self.attempt[c] = self.attempts
        self.sim.submit(self.target[c], self.pending[c], lambda r: self._answer(c, token, r))
        self.sim.call_at(self.sim.now() + self.timeout, lambda: self._expire(c, token))

    def _answer(self, c: int, token: int, result: dict[str, Any]) -> None:
        if self.attempt[c] != token:
            return                      # a late answer to an attempt that timed out
        self.attempt[c] = 0
        if result.get("type") == "fail" and result.get("error") == "not_leader":
            self.redirects += 1
            leader = result.get("leader")
            self.target[c] = leader if leader in self.nodes else self._after(self.target[c])
            self.sim.call_at(self.sim.now() + self.retry_pause, lambda: self._send(c))
            return
        if result.get("type") == "ok":
            self.ok += 1
        else:
            self.failed += 1
        if self.think:
            self.sim.call_at(self.sim.now() + self.think, lambda: self._next(c))
        else:
            self._next(c)

    def _expire(self, c: int, token: int) -> None:
        if self.attempt[c] == token:
            self.timeouts += 1
            self.target[c] = self._after(self.target[c])
            self._send(c)

    def _after(self, node: str) -> str:
        return self.nodes[(self.nodes.index(node) + 1) % len(self.nodes)]


def protocol_available(name: str) -> bool:
    try:
        from nodes.protocols import get
        get(name)
    except (ImportError, KeyError, AttributeError):
        return False
    return True


def scenario(protocol: str, nodes: int = 5, delay: float = 0.002, jitter: float = 0.001) -> Scenario:
    return Scenario(name=f"bench-{protocol}", protocol=protocol,
                    nodes=[NodeSpec(f"n{i}") for i in range(1, nodes + 1)],
                    network=NetworkSpec(default=LinkParams(delay=delay, jitter=jitter)))


def measure(protocol: str, *, seconds: float = 30.0, clients: int = 20, think: float = 0.0,
            seed: int = 1, trace: str = "all") -> dict[str, Any]:
    """One run; ``trace`` is its trace level (the default ``all`` whatever ZLAB_TRACE says)."""
    sim = SimBackend(scenario(protocol), seed, "/nonexistent", trace=trace)
    driver = ClosedLoopClients(sim, clients=clients, think=think, until=seconds, seed=seed)
    gc.collect()        # the trial before left a simulator of a million events: not this one's cost
    t0, c0 = time.perf_counter(), time.process_time()
    sim.start()
    sim.run_until(0.5 if protocol != "register" else 0.0)   # let an election settle before the load
    driver.start()
    sim.run_until(seconds + 0.5)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0      # on a busy machine this is the steadier figure
    lines = sim.trace_events()
    events = len(lines)
    # What a run adds to get its trace.jsonl: not in sim_per_wall (kept comparable across days).
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        write_trace(lines, os.path.join(tmp, "trace.jsonl"))
    written_wall, written_cpu = wall + time.perf_counter() - t1, cpu + time.process_time() - c1
    return {"protocol": protocol, "trace_level": trace, "nodes": 5, "clients": clients, "think_s": think,
            "sim_seconds": seconds + 0.5,
            "wall_seconds": round(wall, 3), "sim_per_wall": round((seconds + 0.5) / wall, 2),
            "cpu_seconds": round(cpu, 3), "sim_per_cpu": round((seconds + 0.5) / cpu, 2),
            "ops_ok": driver.ok, "ops_per_sim_s": round(driver.ok / seconds, 1),
            "timeouts": driver.timeouts, "redirects": driver.redirects,
            "trace_events": events, "events_per_wall_s": round(events / wall),
            "sim_per_wall_written": round((seconds + 0.5) / written_wall, 2),
            "sim_per_cpu_written": round((seconds + 0.5) / written_cpu, 2)}


FIGURES = ("sim_per_wall", "sim_per_cpu", "ops_per_sim_s", "events_per_wall_s", "sim_per_wall_written",
           "sim_per_cpu_written")


def _median_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one configuration as medians of its trials, every trial kept beside them."""
    row = {k: v for k, v in results[0].items() if k not in FIGURES and not isinstance(v, (int, float))}
    row.update({k: summarize(results, k)["median"] for k in FIGURES})
    row["trials"] = results
    return row


def run(trials: int | None = None) -> dict[str, Any]:
    protocol = "raft" if protocol_available("raft") else "register"
    note = "" if protocol == "raft" else " (no Raft core: register core instead)"
    kw = {"trials": trials} if trials else {}
    res = alternate([("saturated", lambda: measure(protocol)),
                     ("saturated, trace level protocol", lambda: measure(protocol, trace="protocol")),
                     ("light", lambda: measure(protocol, think=0.2))], **kw)
    out, light = _median_row(res["saturated"]), _median_row(res["light"])
    lean = _median_row(res["saturated, trace level protocol"])
    print(f"   sim {protocol}{note}, 5 nodes, 20 closed-loop clients (median of {len(res['light'])}): "
          f"{out['sim_per_wall']} simulated s per wall s at {out['ops_per_sim_s']} ops/sim s "
          f"({out['events_per_wall_s']} trace events/wall s; goal >= 10); {out['sim_per_cpu']} per CPU s; "
          f"with trace.jsonl written {out['sim_per_wall_written']} per wall s")
    print(f"   same at trace level protocol (no send/recv/timer/request/reply lines): {lean['sim_per_wall']} "
          f"simulated s per wall s ({lean['events_per_wall_s']} trace events/wall s; goal >= 10); "
          f"{lean['sim_per_cpu']} per CPU s; with trace.jsonl written {lean['sim_per_wall_written']} per wall s")
    print(f"   same, clients thinking 200 ms between ops: {light['sim_per_wall']} simulated s per "
          f"wall s at {light['ops_per_sim_s']} ops/sim s (goal >= 50); {light['sim_per_cpu']} per CPU s; "
          f"with trace.jsonl written {light['sim_per_wall_written']} per wall s")
    trials_of = ", ".join
    rows = [[f"simulator, 5-node {protocol} at ~{light['ops_per_sim_s']:.0f} ops/s, trace level all",
             f"{light['sim_per_wall']} simulated s per wall s (trials "
             f"{trials_of(str(t['sim_per_wall']) for t in light['trials'])})", "—", "≥ 50"],
            [f"simulator, 5-node {protocol} saturated, {out['ops_per_sim_s']:.0f} ops/s, trace level all",
             f"{out['sim_per_wall']} simulated s per wall s (trials "
             f"{trials_of(str(t['sim_per_wall']) for t in out['trials'])})", "—", "≥ 10"],
            [f"same, trace level protocol (no send/recv/timer/request/reply lines; the Raft checks "
             f"and linearizable still decide), {lean['ops_per_sim_s']:.0f} ops/s",
             f"{lean['sim_per_wall']} simulated s per wall s (trials "
             f"{trials_of(str(t['sim_per_wall']) for t in lean['trials'])})", "—", "≥ 10"]]
    return {**out, "light": light, "protocol_level": lean, "readme_rows": rows}


if __name__ == "__main__":
    run()
