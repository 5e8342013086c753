"""The local runtime: one OS process per node on 127.0.0.1.

Each node is ``python -m nodes.agent --spec SPEC.json`` in its own session
(``setsid``: a Ctrl-C in the terminal reaches the orchestrator, which then
stops the agents itself, in order). Ports are free ports picked at start;
network faults are the agents' shim (lab/backends/agents.py). Node faults are
signals: crash = SIGKILL, pause = SIGSTOP, resume = SIGCONT, and restart starts
the same spec over the same data dir, so the node recovers its durable state.

:meth:`LocalBackend.stop` ends every pid it started -- SIGCONT then SIGTERM,
SIGKILL after a grace period -- also when the run fails or is interrupted (the
runner's ``finally``, and an ``atexit`` hook as a last resort). Agents of a run
also watch the orchestrator's pid and exit when it is gone (even after its
SIGKILL); agents of a ``zlab up`` lab are detached and live until ``zlab down``.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, ClassVar

from lab.backends.agents import Addresses, AgentBackend
from lab.errors import BackendError

GRACE = 3.0            # s between SIGTERM and SIGKILL at stop
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _PortClash(BackendError):
    """An agent could not bind its port (another process took it after we picked it)."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together, so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (R, S, T, Z...), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the state follows the last ')'.
    return stat[stat.rfind(b")") + 2:][:1].decode() or None


def is_agent(pid: int, spec_path: str | None = None) -> bool:
    """Whether ``pid`` is (still) a zlab agent -- and the one for ``spec_path`` -- so that a pid
    the kernel reused is never signalled."""
    argv = _argv(pid)
    if argv is None or b"nodes.agent" not in argv:
        return False
    return spec_path is None or spec_path.encode() in argv


def _argv(pid: int | str) -> list[bytes] | None:
    """The command line of ``pid`` (None: no such process, or not ours to read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def agents_under(directory: str) -> dict[int, str]:
    """``{pid: spec path}`` of every zlab agent whose spec file lies below ``directory`` (a lab's
    claimed directory): the record a command leaves before it starts an agent, so its agents are
    found even when it was killed before it could note their pids. Only command lines are read."""
    prefix = os.path.join(os.path.abspath(directory), "")
    found: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        argv = _argv(entry)
        if argv and b"nodes.agent" in argv and b"--spec" in argv[:-1]:
            spec = argv[argv.index(b"--spec") + 1].decode("utf-8", "replace")
            if spec.startswith(prefix):
                found[int(entry)] = spec
    return found


def end_agents(agents: dict[int, str], grace: float = GRACE) -> int:
    """Stop these agents (``{pid: spec path}``): SIGCONT (a stopped process cannot act on
    SIGTERM), SIGTERM, SIGKILL after ``grace`` s. Each pid is signalled only while it still is
    the agent of that spec, so a number the kernel reused is never hit. Returns how many ran."""
    def signal_all(pids: list[int], sigs: tuple[int, ...]) -> list[int]:
        hit = []
        for pid in pids:
            if not is_agent(pid, agents[pid]) or proc_state(pid) == "Z":
                continue
            try:
                for sig in sigs:
                    os.kill(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
        return hit

    running = signal_all(list(agents), (signal.SIGCONT, signal.SIGTERM))
    deadline = time.monotonic() + grace
    left = running
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if proc_state(p) not in (None, "Z") and is_agent(p, agents[p])]
    for pid in signal_all(left, (signal.SIGKILL,)):
        for _ in range(250):
            if proc_state(pid) in (None, "Z"):
                break
            time.sleep(0.02)
    return len(running)


class LocalBackend(AgentBackend):
    kind: ClassVar[str] = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports: dict[str, tuple[int, int]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pids: dict[str, int] = {}
        self.spec_paths: dict[str, str] = {}
        self._atexit = False

    # -- runtime hooks ------------------------------------------------------------------
    def start(self) -> None:
        for attempt in range(3):
            try:
                super().start()
                return
            except _PortClash:
                if attempt == 2:
                    raise
                # stop() has cleaned up; start over with fresh ports.
                self._stopped = False
                self.procs.clear()
                self.pids.clear()
                self.ports.clear()

    def _prepare(self) -> None:
        ports = free_ports(2 * len(self.names))
        self.ports = {n: (ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(self.names)}

    def _addresses(self, node: str) -> Addresses:
        peer, ctl = self.ports[node]
        return Addresses(bind=f"tcp://127.0.0.1:{peer}", control_bind=f"tcp://127.0.0.1:{ctl}",
                         peer=f"tcp://127.0.0.1:{peer}", control=f"tcp://127.0.0.1:{ctl}")

    def _spawn(self, node: str, spec_path: str) -> None:
        data_dir = self._data_dir(node)
        os.makedirs(data_dir, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = _REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(os.path.join(data_dir, "stderr.log"), "ab") as out:
            try:
                p = subprocess.Popen([sys.executable, "-m", "nodes.agent", "--spec", spec_path],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                     cwd=data_dir, start_new_session=True, close_fds=True)
            except OSError as e:
                raise BackendError(f"cannot start {node}'s agent: {e}") from None
        self.procs[node] = p
        self.pids[node] = p.pid
        self.spec_paths[node] = spec_path
        if not self.detached and not self._atexit:
            atexit.register(self.stop)
            self._atexit = True

    def _alive(self, node: str) -> bool:
        pid = self.pids.get(node)
        if pid is None:
            return False
        p = self.procs.get(node)
        if p is not None:
            return p.poll() is None
        state = proc_state(pid)
        return state is not None and state != "Z" and is_agent(pid, self.spec_paths.get(node))

    def _signal(self, node: str, sig: int) -> bool:
        """Send ``sig`` to the node's agent if it is still the process we started."""
        pid = self.pids.get(node)
        if pid is None or not self._alive(node):
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _wait_gone(self, node: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        p = self.procs.get(node)
        while time.monotonic() < deadline:
            if p is not None:
                try:
                    p.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not self._alive(node):
                return True
            time.sleep(0.02)
        return not self._alive(node)

    def _kill(self, node: str) -> None:
        self._signal(node, signal.SIGKILL)
        if not self._wait_gone(node, 5.0):
            raise BackendError(f"{node} (pid {self.pids.get(node)}) did not die on SIGKILL")

    def _pause(self, node: str) -> None:
        if not self._signal(node, signal.SIGSTOP):
            raise BackendError(f"{node} is not running; cannot pause it")
        pid = self.pids[node]
        for _ in range(100):    # SIGSTOP is asynchronous: return once the kernel has stopped it
            if proc_state(pid) in ("T", "t", None):
                return
            time.sleep(0.005)

    def _resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)

    def _stop_all(self) -> None:
        live = [n for n in self.pids if self._alive(n)]
        for n in live:
            self._signal(n, signal.SIGCONT)     # a stopped process cannot act on SIGTERM
            self._signal(n, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for n in live:
            if not self._wait_gone(n, max(0.0, deadline - time.monotonic())):
                self._signal(n, signal.SIGKILL)
                self._wait_gone(n, 5.0)
        for p in self.procs.values():
            if p.poll() is None:      # bounded above; reap whatever remains so no zombie is left
                try:
                    p.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass

    def _check_alive(self, nodes: list[str]) -> None:
        for n in nodes:
            p = self.procs.get(n)
            if p is not None and p.poll() is not None:
                tail = self._log_tail(n)
                cls = _PortClash if "Address already in use" in tail else BackendError
                raise cls(f"{n}'s agent exited with code {p.returncode} while starting: {tail}")

    def _log_tail(self, node: str, lines: int = 3) -> str:
        text = ""
        for name in ("stderr.log", "agent.log"):
            data = self._read_node_file(node, name) or b""
            text += data.decode("utf-8", "replace")
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def _read_node_file(self, node: str, name: str) -> bytes | None:
        try:
            with open(os.path.join(self._data_dir(node), name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def node_logs(self) -> dict[str, str]:
        out = super().node_logs()
        for n in self.names:
            err = (self._read_node_file(n, "stderr.log") or b"").decode("utf-8", "replace").strip()
            if err:
                out[n] = out.get(n, "") + "\n--- stderr ---\n" + err + "\n"
        return out

    # -- interactive labs ------------------------------------------------------------------------
    def _runtime_state(self) -> dict[str, Any]:
        return {"pids": self.pids, "ports": {n: list(p) for n, p in self.ports.items()},
                "spec_paths": self.spec_paths}

    def _load_runtime_state(self, state: dict[str, Any]) -> None:
        self.pids = {n: int(p) for n, p in state.get("pids", {}).items()}
        self.ports = {n: (p[0], p[1]) for n, p in state.get("ports", {}).items()}
        self.spec_paths = dict(state.get("spec_paths", {}))

    def node_state(self, node: str) -> str:
        """up, paused, down (crashed on purpose) or dead (gone without being crashed)."""
        if node in self.down:
            return "down"
        if not self._alive(node):
            return "dead"
        return "paused" if node in self.paused else "up"
