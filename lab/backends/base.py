"""What the scenario runner needs of a runtime.

The runner (``lab/runner.py``) is written once against this interface and
drives the simulator, local processes and containers alike. It is
event-driven: the runner schedules callbacks with ``call_at`` and lets the
backend advance time with ``run_until`` -- virtual time in the simulator,
the wall clock (while polling sockets) in the real runtimes.

Network faults are given as *state*, not as deltas: ``set_cuts`` installs
exactly the given set of cut directed links, ``set_link`` the exact
parameters of one directed link. That makes every apply idempotent and every
revert a plain apply of the previous state.
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from lab.scenario import LinkParams, Scenario

Cut = tuple[str, str]   # (src, dst): messages from src to dst are dropped
WAIT_STEP = 0.01        # s between checks of a wait_for condition where a runtime has no finer way
NO_FULL_COLLECTION = 1 << 30     # gc threshold of the oldest generation while a run loop runs


@contextmanager
def no_full_collections(young_only: bool = False) -> Iterator[None]:
    """While a runtime's loop runs, no full garbage collection: the runner and its clients keep
    many live objects (every op in flight: its request, callbacks, answers so far), none of
    them garbage, and the full collections Python starts as they accumulate walk them all
    again and again (measured: about a third of a PBFT benchmark client's CPU with 4096 ops
    in flight). The young generations are still collected (with ``young_only`` only the
    youngest: the middle one waits too); the others after the loop, as the thresholds are put back."""
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], NO_FULL_COLLECTION if young_only else thresholds[1], NO_FULL_COLLECTION)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class Backend(ABC):
    kind: ClassVar[str]

    def __init__(self, scenario: Scenario, seed: int, workdir: str) -> None:
        self.scenario = scenario
        self.seed = seed
        self.workdir = workdir        # the run directory (logs, per-node data live below it)

    # -- lifecycle -------------------------------------------------------
    @abstractmethod
    def start(self) -> None:
        """Start every node and return once each one answers (readiness handshake)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything this backend started. Safe to call twice, and after errors."""

    # -- time --------------------------------------------------------------
    @abstractmethod
    def now(self) -> float:
        """Seconds since start()."""

    @abstractmethod
    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` (on the runner's thread) when ``now()`` reaches ``t``."""

    @abstractmethod
    def run_until(self, t: float) -> None:
        """Deliver messages, fire timers and due callbacks until ``now() >= t``."""

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Run like :meth:`run_until` until ``done()`` holds or ``timeout`` s have passed; whether
        it holds. A blocking client call waits with this, so it returns when its answer comes
        instead of at the next step. Runtimes check ``done`` more often than this default."""
        end = self.now() + timeout
        while not done():
            now = self.now()
            if now >= end:
                return False
            self.run_until(min(end, now + WAIT_STEP))
        return True

    # -- clients -----------------------------------------------------------
    @abstractmethod
    def submit(self, node: str, op: dict[str, Any], on_result: Callable[[dict[str, Any]], None]) -> None:
        """Send a client op to ``node``; call ``on_result`` with its answer if one comes.

        Never blocks. A node that is down simply never answers: the runner
        times the op out and records it as ``info``.
        """

    def client_signer(self) -> Any:
        """The lab's client signing key (a ``nodes.signing.ClientSigner``) when its core signs
        requests (PBFT), else None."""
        return None

    @abstractmethod
    def status(self, node: str) -> dict[str, Any] | None:
        """The core's ``status()`` of a running node, None if it is down or does not answer."""

    # -- faults --------------------------------------------------------------
    @abstractmethod
    def set_cuts(self, cuts: frozenset[Cut]) -> str:
        """Install exactly these cut links. Returns the mechanism used (``sim``, ``shim``, ``iptables``)."""

    @abstractmethod
    def set_link(self, src: str, dst: str, params: LinkParams) -> str:
        """Set one directed link's delay/loss/...; returns the mechanism (``sim``, ``shim``, ``netem``, ``tbf``...)."""

    @abstractmethod
    def crash(self, node: str) -> None:
        """Kill the node at once (SIGKILL); durable storage survives."""

    @abstractmethod
    def restart(self, node: str) -> None:
        """Start a crashed node again from its durable storage; returns once it is ready."""

    @abstractmethod
    def pause(self, node: str) -> None: ...

    @abstractmethod
    def resume(self, node: str) -> None: ...

    # -- results -------------------------------------------------------------
    @abstractmethod
    def trace_events(self) -> list[dict[str, Any]]:
        """Every node's trace events (DESIGN.md trace contract), merged and sorted by (ts, node)."""

    def node_logs(self) -> dict[str, str]:
        """Each node's log text, for the run directory."""
        return {}

    def notes(self) -> list[str]:
        """Plain-words remarks for the report (e.g. 'no sch_netem: delay applied by the agent shim')."""
        return []
