"""What every runtime whose nodes are agents (nodes/agent.py) has in common.

:class:`AgentBackend` does the orchestrator's side of the agent protocol:
per-lab Curve keys, one spec file per node, the readiness handshake, client
ops through each agent's control socket, status, network faults through the
agent's shim (``set_cuts``/``set_link`` become ``set_rules``), trace and log
collection, and saving/re-attaching an interactive lab's state.

A runtime subclass says only how a node is *reached* and *handled*:

* :meth:`_prepare` -- allocate addresses (ports, a network) before the specs are written
* :meth:`_addresses` -- where the agent binds and where peers/the orchestrator reach it
* :meth:`_spawn`, :meth:`_kill`, :meth:`_pause`, :meth:`_resume`, :meth:`_stop_all`
* optionally :meth:`_read_node_file` (default: over the control socket),
  :meth:`_data_dir` / :meth:`_keys_spec` (paths as the agent sees them) and
  :meth:`_runtime_state` / :meth:`_load_runtime_state` for ``zlab up``.

Time: ``t0`` is the wall time at start; the agents trace ``time.time() - t0``
and :meth:`now` is the monotonic clock from the same instant, so node events
and the runner's fault events line up in one trace.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import os
import shutil
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import zmq

from lab import labstate
from lab.agent_client import AgentClient
from lab.backends.base import Backend, Cut, no_full_collections
from lab.errors import BackendError
from lab.keys import LabKeys, ensure_keys
from lab.labstate import zlab_home
from lab.scenario import LinkParams, Scenario
from lab.signkeys import SigningKeys, ensure_signing_keys, load_signing_keys

READY_TIMEOUT = 20.0      # s a start may go without progress (one more node answering or ready)
READY_PER_NODE = 2.0      # s per node added to READY_TIMEOUT to bound a whole start that crawls
CALL_TIMEOUT = 1.0        # s for a status or rule change to be answered
HELLO_RETRY = 0.5         # s before a readiness hello is asked again (unanswered, or peers not up)
LINK_POLL = 0.05          # s between hellos to a node whose peers are all up but its links not yet
PERFECT = LinkParams()


@dataclasses.dataclass
class Addresses:
    bind: str              # where the agent binds its peer ROUTER
    control_bind: str      # where it binds its control ROUTER
    peer: str              # how other agents reach its peer socket
    control: str           # how the orchestrator reaches its control socket


class AgentBackend(Backend):
    kind: ClassVar[str] = "agents"
    # Runtimes that shape links in the kernel set this False and override set_link.
    shim_links: ClassVar[bool] = True

    def __init__(self, scenario: Scenario, seed: int, workdir: str, *, lab: str | None = None,
                 state_dir: str | None = None, detached: bool = False) -> None:
        super().__init__(scenario, seed, workdir)
        self.lab = lab or f"{scenario.name}-{os.urandom(3).hex()}"
        # A run's keys live in .zlab/<lab>/ and go with the run; `zlab up` keeps its state dir.
        self.ephemeral = state_dir is None
        self.state_dir = os.path.abspath(state_dir or os.path.join(zlab_home(), self.lab))
        self._claimed = False          # whether start() claimed state_dir (and so may remove it)
        # Marks everything this start creates (docker labels it): a failed start removes that
        # and nothing else, not another lab that happens to share the name.
        self.run_id = os.urandom(6).hex()
        self.detached = detached
        # all | protocol (no send/recv lines: for benchmarks) | none; see nodes/tracelog.py
        self.trace_level = os.environ.get("ZLAB_TRACE", "all")
        # ZLAB_FSYNC=0 turns the agents' fsync off (writes still reach the page cache, so SIGKILL loses
        # nothing, power loss may). Only for comparing with baselines that do not fsync either.
        self.fsync = os.environ.get("ZLAB_FSYNC", "1") not in ("0", "false", "no")
        self.names = scenario.node_names
        self.keys: LabKeys | None = None
        self.sign_keys: SigningKeys | None = None     # for a core that signs (PBFT)
        self.addresses: dict[str, Addresses] = {}
        self.clients: dict[str, AgentClient] = {}
        self.down: set[str] = set()
        self.paused: set[str] = set()
        self.incarnation: dict[str, int] = {n: 0 for n in self.names}
        self.cuts: frozenset[Cut] = frozenset()
        self.links: dict[tuple[str, str], LinkParams] = {
            (s, d): scenario.network.link(s, d) for s in self.names for d in self.names if s != d}
        self.t0 = 0.0
        self.mono0 = time.monotonic()
        self._calls: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._poller: zmq.Poller | None = None
        self._stopped = False
        self.zctx = zmq.Context.instance()

    # -- what a runtime provides ------------------------------------------------------
    @abstractmethod
    def _prepare(self) -> None:
        """Allocate what the nodes need before their specs are written (ports, a network)."""

    @abstractmethod
    def _addresses(self, node: str) -> Addresses: ...

    @abstractmethod
    def _spawn(self, node: str, spec_path: str) -> None:
        """Start the node's agent with this spec (returns at once; readiness is checked here)."""

    @abstractmethod
    def _kill(self, node: str) -> None:
        """SIGKILL the node's agent (or the runtime's equivalent) and wait until it is gone."""

    @abstractmethod
    def _pause(self, node: str) -> None: ...

    @abstractmethod
    def _resume(self, node: str) -> None: ...

    @abstractmethod
    def _stop_all(self) -> None:
        """Stop every node this backend (or the lab it attached to) started; bounded, idempotent."""

    def _data_dir(self, node: str) -> str:
        """The node's data directory as the agent sees it."""
        return os.path.join(os.path.abspath(self.workdir), "nodes", node)

    def _keys_spec(self) -> dict[str, str]:
        assert self.keys is not None
        return self.keys.spec_files()

    def _read_node_file(self, node: str, name: str) -> bytes | None:
        """A file of the node's data dir (``trace.jsonl``, ``agent.log``); default: over control."""
        from nodes.control import FILES
        short = {v: k for k, v in FILES.items()}.get(name)
        if short is None or node in self.down or node in self.paused:
            return None
        return self.clients[node].read_file(short)

    def read_node_file(self, node: str, name: str) -> bytes | None:
        """A node's ``trace.jsonl`` or ``agent.log`` (None when it cannot be read now)."""
        return self._read_node_file(node, name)

    def _parent_pid(self) -> int | None:
        """The pid agents watch to exit with the orchestrator (None: live on, e.g. `zlab up`)."""
        return None if self.detached else os.getpid()

    # -- lifecycle -------------------------------------------------------------------------
    def claim_record(self) -> dict[str, Any]:
        """What the lab directory's claim says about this lab, for whoever finds it orphaned."""
        return {"kind": self.kind, "lab": self.lab, "run": self.run_id,
                "command": "up" if self.detached else "run"}

    def start(self) -> None:
        self.t0 = time.time()
        self.mono0 = time.monotonic()
        if self.ephemeral and not self._claimed:
            # Before anything starts: the spec files and keys go below this directory, so a
            # killed run's agents can be found by `zlab down --all` (`zlab up` claims its own).
            labstate.claim(self.state_dir, self.claim_record())
            self._claimed = True
        try:
            self.keys = ensure_keys(os.path.join(self.state_dir, "keys"))
            if self._core_signs():
                self.sign_keys = ensure_signing_keys(self._sign_dir(), self.names)
            self._prepare()
            for n in self.names:
                self.addresses[n] = self._addresses(n)
            for n in self.names:
                self._spawn(n, self._write_spec(n))
            self._connect_clients()
            self._wait_ready(self.names)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._stopped:
            return
        # Marked stopped only once every node is: a second Ctrl-C that interrupts this leaves
        # the atexit hook (and the runner's finally) something to do.
        self._stop_all()
        self._stopped = True
        for c in self.clients.values():
            c.close()
        self.clients.clear()
        if self.ephemeral and self._claimed:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._claimed = False

    def _core_signs(self) -> bool:
        from nodes.protocols import get
        try:
            return get(self.scenario.protocol).signs
        except KeyError as e:
            raise BackendError(str(e.args[0])) from None

    def _sign_dir(self) -> str:
        return os.path.join(self.state_dir, "keys", "sign")

    def client_signer(self) -> Any:
        return self.sign_keys.client_signer() if self.sign_keys is not None else None

    def spec(self, node: str) -> dict[str, Any]:
        """The agent spec of ``node`` (docs/agent.md), with the fault rules now in force."""
        extra = {"signing": self.sign_keys.spec(node)} if self.sign_keys is not None else {}
        return {**extra,
            "lab": self.lab,
            "node": node,
            "protocol": self.scenario.protocol,
            "config": self.scenario.config,
            "nodes": {n.name: n.as_dict() for n in self.scenario.nodes},
            "peers": {n: self.addresses[n].peer for n in self.names},
            "bind": self.addresses[node].bind,
            "control_bind": self.addresses[node].control_bind,
            "keys": self._keys_spec(),
            "data_dir": self._data_dir(node),
            "seed": self.seed,
            "incarnation": self.incarnation[node],
            "t0": self.t0,
            "trace": self.trace_level,
            "fsync": self.fsync,
            "parent_pid": self._parent_pid(),
            "rules": self.rules_for(node),
        }

    def _write_spec(self, node: str) -> str:
        d = os.path.join(self.state_dir, "specs")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{node}.json")
        # 0600: a spec may carry the node's signing key.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                       encoding="utf-8") as f:
            json.dump(self.spec(node), f, indent=1, sort_keys=True)
        return path

    def _connect_clients(self) -> None:
        assert self.keys is not None
        for n in self.names:
            if n not in self.clients:
                self.clients[n] = AgentClient(self.addresses[n].control, self.keys.server_public,
                                              self.keys.client_public, self.keys.client_secret,
                                              zctx=self.zctx, name=n)
        self._poller = zmq.Poller()
        for c in self.clients.values():
            self._poller.register(c.socket, zmq.POLLIN)

    def _wait_ready(self, nodes: list[str], timeout: float = READY_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Every node in ``nodes`` answers hello for this lab, and every running node has its links
        to every other running node up (agents drop what they send on a link that is not); else
        BackendError once ``timeout`` s pass with no progress (no node newly answering or ready),
        or ``timeout + READY_PER_NODE * N`` s in all. A lab of a hundred containers on two cores
        boots for minutes, one of three in seconds: a fixed limit fits one of them only."""
        answers: dict[str, dict[str, Any]] = {}
        asked: dict[str, float] = {}
        live = [n for n in self.names if n not in self.down and n not in self.paused]
        check = list(dict.fromkeys([*nodes, *live]))
        # A link cut in either direction may never connect (kernel partitions drop the handshake).
        expected = {n: {m for m in live if (n, m) not in self.cuts and (m, n) not in self.cuts}
                    for n in live}

        def ready(n: str) -> bool:
            a = answers.get(n)
            return a is not None and (n not in expected or expected[n] <= set(a.get("connected", ())))

        def answered(n: str, a: dict[str, Any]) -> None:
            answers[n] = a
            asked.pop(n, None)
            last[n] = time.monotonic()

        def retry_after(n: str) -> float:
            """One hello in flight per node, asked again after HELLO_RETRY in case one was lost.
            A node that answered but lacks links is asked again soon only once every peer it
            waits for has answered too (a link to an agent not yet up cannot be up): polling
            sooner costs both sides CPU that the booting agents need (20 nodes: ~9000 hellos).
            Both intervals stretch with the lab past 20 nodes, so the hellos a second stay level."""
            if n in asked:
                return HELLO_RETRY * stretch
            if n not in last:
                return 0.0
            waiting = expected.get(n, set()) - answers.keys()
            return (HELLO_RETRY if waiting else LINK_POLL) * stretch

        last: dict[str, float] = {}
        stretch = max(1.0, len(check) / 20)

        began = time.monotonic()
        cap = began + timeout + READY_PER_NODE * len(check)
        deadline, progress = began + timeout, (0, 0)
        while not all(ready(n) for n in check):
            now = time.monotonic()
            done = (len(answers), sum(ready(n) for n in check))
            if done != progress:
                progress, deadline = done, min(cap, now + timeout)
            if now >= deadline:
                if now >= cap:
                    why = f"within {cap - began:.0f}s ({len(check)} nodes)"
                elif now - began <= timeout + 0.5:
                    why = f"within {timeout:g}s"
                else:
                    why = f"(waited {now - began:.0f}s, the last {timeout:g}s with no node newly ready)"
                missing = [n for n in nodes if n not in answers]
                if missing:
                    raise BackendError(f"lab {self.lab}: {_some(missing)} did not answer "
                                       f"{why}{self._startup_hint(missing)}")
                links = _some([f"{n} -> {','.join(sorted(expected[n] - set(answers[n].get('connected', ()))))}"
                               for n in check if not ready(n)], sep="; ")
                raise BackendError(f"lab {self.lab}: links not up {why}: {links}")
            self._check_alive(nodes)
            for n in check:
                since = asked.get(n, last.get(n, -1e9))
                if not ready(n) and now - since > retry_after(n):
                    if self.clients[n].request("hello", lambda a, n=n: answered(n, a)) is not None:
                        asked[n] = now
            self._pump(min(deadline, time.monotonic() + 0.05))
            for n, a in answers.items():
                if a.get("lab") != self.lab:
                    raise BackendError(f"{n} answered for lab {a.get('lab')!r}, not {self.lab!r}: "
                                       "another lab holds its address")
        return answers

    def _check_alive(self, nodes: list[str]) -> None:
        """Raise BackendError early when a node's agent already exited (runtimes override)."""

    def _startup_hint(self, nodes: list[str]) -> str:
        return ""

    # -- time ----------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.mono0

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._calls, (t, next(self._seq), fn))

    def run_until(self, t: float) -> None:
        with no_full_collections():
            while True:
                self._fire_due()
                now = self.now()
                if now >= t:
                    return
                nxt = min(t, self._calls[0][0]) if self._calls else t
                self._pump(self.mono0 + nxt)

    def _fire_due(self) -> None:
        calls = self._calls
        for _ in range(100_000):
            if not calls or calls[0][0] > self.now():
                return
            _, _, fn = heapq.heappop(calls)
            fn()

    def _pump(self, until_mono: float) -> None:
        """Wait for answers until the monotonic time ``until_mono`` (or the first batch), dispatching them."""
        for c in self.clients.values():
            if c.batch:
                c.flush()
        timeout = max(0, int((until_mono - time.monotonic()) * 1000.0 + 0.999))
        if self._poller is None:
            time.sleep(timeout / 1000.0)
            return
        for sock, _ in self._poller.poll(timeout):
            for c in self.clients.values():
                if c.socket is sock:
                    c.process()
                    break

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Dispatch answers (and due callbacks) until ``done()`` or ``timeout`` s have passed."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._fire_due()
            self._pump(time.monotonic() + min(left, 0.05))
        return True

    def _collect(self, rids: dict[str, int | None], box: dict[str, Any], timeout: float) -> None:
        """Pump until every request in ``rids`` (node -> id, None = not sent) has answered into ``box``."""
        deadline = time.monotonic() + timeout
        want = {n for n, r in rids.items() if r is not None}
        while not want <= box.keys() and time.monotonic() < deadline:
            self._pump(min(deadline, time.monotonic() + 0.05))
        for n, r in rids.items():
            if n not in box and r is not None:
                self.clients[n].forget(r)

    # -- clients -------------------------------------------------------------------------------
    def submit(self, node: str, op: dict[str, Any], on_result: Callable[[dict[str, Any]], None]) -> None:
        if node in self.down:
            return
        self.clients[node].submit(op, on_result)

    def status(self, node: str) -> dict[str, Any] | None:
        ans = self.agent_status(node)
        return None if ans is None else ans.get("core", {})

    def agent_status(self, node: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any] | None:
        """The agent's whole status answer (core status, counters, shim rules), None if it does not answer."""
        if node in self.down or node in self.paused:
            return None
        ans = self.clients[node].call("status", timeout)
        return None if ans is None or "error" in ans else ans

    # -- network faults, through the shim --------------------------------------------------------
    def rules_for(self, node: str) -> dict[str, Any]:
        """The complete shim state of ``node``: its cuts at both ends, and its outgoing links."""
        rules: dict[str, Any] = {
            "reset": True,
            "cut_out": sorted(d for s, d in self.cuts if s == node),
            "cut_in": sorted(s for s, d in self.cuts if d == node),
            "links": {},
        }
        if self.shim_links:
            rules["links"] = {d: _link_dict(p) for d, p in self.links_from(node) if p != PERFECT}
        return rules

    def links_from(self, node: str) -> list[tuple[str, LinkParams]]:
        """``node``'s outgoing links, by destination name: each node's rules look at its own N-1
        links, not at all N*(N-1) (a hundred-node lab writes its specs in milliseconds, not 20 s)."""
        return [(d, self.links[(node, d)]) for d in sorted(self.names) if d != node]

    def set_cuts(self, cuts: frozenset[Cut]) -> str:
        self.cuts = frozenset(cuts)
        self._push_rules({n: {k: v for k, v in self.rules_for(n).items() if k in ("cut_out", "cut_in")}
                          for n in self.names})
        return "shim"

    def set_link(self, src: str, dst: str, params: LinkParams) -> str:
        self.links[(src, dst)] = params
        self._push_rules({src: {"links": {dst: _link_dict(params)}}})
        return "shim"

    def _push_rules(self, per_node: dict[str, dict[str, Any]]) -> None:
        """Send rule changes to every live node and wait (bounded) until each running one has them.
        A paused node gets them queued (it applies them on resume); a crashed one at its restart."""
        box: dict[str, Any] = {}
        rids: dict[str, int | None] = {}
        for n, rules in per_node.items():
            if n in self.down:
                continue
            rids[n] = self.clients[n].request("set_rules", lambda a, n=n: box.__setitem__(n, a), **rules)
        self._collect({n: r for n, r in rids.items() if n not in self.paused}, box, CALL_TIMEOUT)
        for n, a in box.items():
            if "error" in a:
                raise BackendError(f"{n} refused the fault rules: {a['error']}")

    # -- node faults -----------------------------------------------------------------------------
    def crash(self, node: str) -> None:
        self._kill(node)
        self.down.add(node)
        self.paused.discard(node)

    def restart(self, node: str) -> None:
        if node not in self.down:
            raise BackendError(f"{node} is not down; crash it before restarting it")
        self.incarnation[node] += 1
        self._spawn(node, self._write_spec(node))
        self.down.discard(node)
        try:
            self._wait_ready([node])
        except BackendError:
            self.down.add(node)
            raise

    def pause(self, node: str) -> None:
        if node in self.down:
            return
        self._pause(node)
        self.paused.add(node)

    def resume(self, node: str) -> None:
        if node not in self.paused:
            return
        self._resume(node)
        self.paused.discard(node)

    # -- results -------------------------------------------------------------------------------------
    def trace_events(self) -> list[dict[str, Any]]:
        from lab.tracefile import merge
        lists = []
        for n in self.names:
            data = self._read_node_file(n, "trace.jsonl") or b""
            lists.append(parse_trace_lines(data))
        return merge(lists)

    def node_logs(self) -> dict[str, str]:
        out = {}
        for n in self.names:
            data = self._read_node_file(n, "agent.log")
            if data:
                out[n] = data.decode("utf-8", "replace")
        return out

    def notes(self) -> list[str]:
        out = []
        if self.shim_links:
            out.append(f"{self.kind} runtime: delay, loss, duplication, reordering and partitions "
                       "are applied by each agent's fault shim (in the agent, not the kernel)")
        if any(p.rate for p in self.links.values()):
            out.append("rate limits are not applied: the agent shim does not shape bandwidth")
        return out

    # -- interactive labs ------------------------------------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        """What `zlab up` writes to the lab's state file; :meth:`attach` reads it back."""
        return {
            "kind": self.kind, "lab": self.lab, "run": self.run_id, "seed": self.seed, "workdir": self.workdir,
            "state_dir": self.state_dir, "t0": self.t0, "nodes": self.names,
            "addresses": {n: dataclasses.asdict(a) for n, a in self.addresses.items()},
            "keys_dir": self.keys.dir if self.keys else None,
            "down": sorted(self.down), "paused": sorted(self.paused),
            "incarnation": self.incarnation,
            "cuts": sorted([list(c) for c in self.cuts]),
            "links": [[s, d, _link_dict(p)] for (s, d), p in sorted(self.links.items())],
            "runtime": self._runtime_state(),
        }

    @classmethod
    def attach(cls, scenario: Scenario, state: dict[str, Any]) -> AgentBackend:
        """A backend for a lab `zlab up` started earlier (from its state file)."""
        b = cls(scenario, state["seed"], state["workdir"], lab=state["lab"],
                state_dir=state["state_dir"], detached=True)
        b.t0 = state["t0"]
        b.run_id = state.get("run") or ""        # "" : a state file from before run ids
        b.mono0 = time.monotonic() - (time.time() - b.t0)
        from lab.keys import load_keys
        b.keys = load_keys(state["keys_dir"])
        if b._core_signs():
            b.sign_keys = load_signing_keys(b._sign_dir(), b.names)
        b.addresses = {n: Addresses(**a) for n, a in state["addresses"].items()}
        b.down = set(state.get("down", []))
        b.paused = set(state.get("paused", []))
        b.incarnation.update(state.get("incarnation", {}))
        b.cuts = frozenset((s, d) for s, d in state.get("cuts", []))
        for s, d, p in state.get("links", []):
            b.links[(s, d)] = LinkParams(**p)
        b._load_runtime_state(state.get("runtime") or {})
        b._connect_clients()
        return b

    def _runtime_state(self) -> dict[str, Any]:
        return {}

    def _load_runtime_state(self, state: dict[str, Any]) -> None:
        pass

    def detach(self) -> None:
        """Leave the nodes running and let go of them (`zlab up` returns; later commands attach)."""
        self._stopped = True
        for c in self.clients.values():
            c.close()
        self.clients.clear()


def _some(items: list[str], most: int = 8, sep: str = ", ") -> str:
    """A list (of nodes, say) short enough for one line."""
    return sep.join(items) if len(items) <= most else f"{sep.join(items[:most])}{sep}and {len(items) - most} more"


def _link_dict(p: LinkParams) -> dict[str, Any]:
    return dataclasses.asdict(p)


def parse_trace_lines(data: bytes) -> list[dict[str, Any]]:
    """A node's trace.jsonl as events; a line cut short by SIGKILL is skipped, not fatal."""
    out = []
    for line in data.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and "ts" in ev and "node" in ev:
            out.append(ev)
    return out
