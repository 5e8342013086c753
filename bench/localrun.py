"""zlab clusters on the local runtime and the open-loop clients that load them, shared by the
Raft and PBFT benchmarks.

A :class:`Client` sends one write per call, the way the protocol's clients do: a Raft write to
the leader; under a core's client rule (PBFT), signed and to every replica, counted ``ok``
once f+1 replicas answered alike (lab/clientrule.py, as the runner's clients do). Throughput
follows PySyncObj's method (bench/ratesearch.py): requests offered open-loop in one-second
bursts, success = the fraction answered ok.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lab.clientrule import Tally, client_rule_of


@contextmanager
def cluster(scenario_text: str, fsync: bool = True, trace: str = "protocol") -> Iterator[Any]:
    """A started LocalBackend for ``scenario_text`` (ZLAB_FSYNC / ZLAB_TRACE set for it), stopped after."""
    from lab.backends.local import LocalBackend
    from lab.topology import load_scenario_text

    saved = {k: os.environ.get(k) for k in ("ZLAB_FSYNC", "ZLAB_TRACE", "ZLAB_HOME")}
    with tempfile.TemporaryDirectory(prefix="zlab-bench-") as tmp:
        os.environ.update(ZLAB_FSYNC="1" if fsync else "0", ZLAB_TRACE=trace, ZLAB_HOME=tmp)
        backend = LocalBackend(load_scenario_text(scenario_text), 1, f"{tmp}/run")
        try:
            backend.start()
            yield backend
        finally:
            backend.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def wait_for_role(backend: Any, role: str, timeout: float = 10.0) -> str:
    """The node whose status says ``role`` (Raft's leader, PBFT's primary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in backend.scenario.node_names:
            st = backend.status(n)
            if st and st.get("role") == role:
                return n
        time.sleep(0.05)
    raise RuntimeError(f"no {role} within {timeout:g} s")


class Client:
    """Writes against one backend, counted by outcome. ``target`` is where a write goes when
    the core has no client rule (Raft's leader)."""

    def __init__(self, backend: Any, target: str | None = None) -> None:
        self.b = backend
        self.target = target
        self.rule = client_rule_of(backend.scenario)
        self.signer = backend.client_signer() if self.rule is not None and self.rule.sign else None
        self.nodes = backend.scenario.node_names
        self.seq = 0
        self.ok = 0
        self.other = 0

    def write(self, process: int) -> None:
        self.seq += 1
        op = {"f": "write", "key": f"k{self.seq % 8}", "value": self.seq,
              "client": f"bench{process}", "seq": self.seq}
        if self.rule is None:
            self.b.submit(self.target, op, self._done)
            return
        if self.signer is not None:
            op = self.signer.sign_request(op)
        tally = Tally(self.rule.replies)
        for node in self.nodes:
            self.b.submit(node, op, lambda res, node=node: tally.add(node, res) and self._done(res))

    def _done(self, result: dict[str, Any]) -> None:
        if result.get("type") == "ok":
            self.ok += 1
        else:
            self.other += 1

    @property
    def answered(self) -> int:
        return self.ok + self.other


def open_loop(backend: Any, client: Client, rate: int, seconds: float, drain: float = 2.0) -> int:
    """Offer ``rate`` writes/s in one-second bursts for ``seconds``; returns how many were sent."""
    start = backend.now()
    sent = 0
    for second in range(int(seconds)):
        backend.run_until(start + second)
        for i in range(rate):
            client.write(i % 3)
            sent += 1
    backend.run_until(start + seconds + drain)
    return sent


def success_at(start: Callable[[], Any], client_for: Callable[[Any], Client],
               seconds: float) -> Callable[[int], float]:
    """PySyncObj's success function: a fresh cluster per rate, the fraction of writes ok."""
    def at(rate: int) -> float:
        with start() as b:
            client = client_for(b)
            sent = open_loop(b, client, rate, seconds)
            return client.ok / sent if sent else 0.0
    return at


def sequential(backend: Any, client: Client, count: int) -> dict[str, float]:
    """One write at a time: p50/p99 of the time to its answer."""
    samples = []
    for _ in range(count):
        answered = client.answered
        t = time.perf_counter()
        client.write(0)
        deadline = backend.now() + 5.0
        while client.answered == answered and backend.now() < deadline:
            backend.run_until(backend.now() + 0.0005)
        if client.answered > answered:
            samples.append(time.perf_counter() - t)
    samples.sort()
    return {"p50_ms": statistics.median(samples) * 1e3,
            "p99_ms": samples[int(len(samples) * 0.99)] * 1e3, "count": len(samples)}
