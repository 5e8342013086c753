"""The docker runtime: one container per node on a per-lab bridge network.

Everything common to agent runtimes (specs, readiness, client ops, shim
rules, traces) is :class:`~lab.backends.agents.AgentBackend`'s; this module
says how a node is a container and how faults reach the kernel:

* one user-defined bridge network per lab, with its own /24 (so a node keeps
  its address across a restart: peers dial it by address, and iptables/tc
  rules match it); a volume per node for its durable state (``/data``);
  containers ``<lab>-<node>`` with ``NET_ADMIN``; the control port published
  on 127.0.0.1 (a free host port picked once, so a restart keeps it too).
* start-up is pipelined: each node's container is created (its volume with it,
  labelled, through the mount; its spec and key files with it, in the
  environment, unpacked by the entrypoint) and started in one task on a small
  pool, so early nodes boot while later ones are still being created; readiness
  checks exits with one listing per second, not an inspect per node.
* every container, network and volume carries ``zlab.lab``, ``zlab.owner``
  (and containers/volumes ``zlab.node``): :func:`down_all` finds and removes
  what is left by label, even after the orchestrator was SIGKILLed.
* crash = ``docker kill`` (SIGKILL), pause = ``docker pause`` (cgroup
  freezer), restart = ``docker start`` on the same volume.
* network faults are ``lab.netfaults`` commands run in the node's own network
  namespace through an injected executor (by default ``docker exec``).
  Capabilities are probed once per lab, by ``docker exec`` in the first node's
  container as soon as it runs (no throwaway container): where the kernel lacks
  ``sch_netem``, delay/jitter/loss/duplicate/reorder go through
  the agent shim instead, while rate limits (tbf) and partitions (iptables)
  stay in the kernel; :meth:`DockerBackend.notes` says which in plain words.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import os
import re
import shlex
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, ClassVar

from lab import netfaults as nf
from lab.backends.agents import PERFECT, Addresses, AgentBackend, _link_dict
from lab.backends.base import Cut
from lab.dockerclient import API_TIMEOUT, docker_client
from lab.errors import BackendError
from lab.scenario import LinkParams, Scenario

PEER_PORT = 7000
CONTROL_PORT = 7001
DATA_DIR = "/data"
SPEC_DIR = "/etc/zlab"
SPEC_PATH = f"{SPEC_DIR}/spec.json"
KEY_FILES = {"server_secret_file": f"{SPEC_DIR}/server.key_secret",   # spec key -> path in the node
             "client_public_file": f"{SPEC_DIR}/client.key"}
LABEL_LAB, LABEL_NODE, LABEL_OWNER, LABEL_RUN = "zlab.lab", "zlab.node", "zlab.owner", "zlab.run"
SUBNET_PREFIX = os.environ.get("ZLAB_SUBNET_PREFIX", "10.213")   # labs get <prefix>.<k>.0/24
FIRST_HOST = 10                  # node i gets .<FIRST_HOST + i>; .1 is the bridge
MAX_NODES = 254 - FIRST_HOST
WORKERS = 8                      # parallel docker calls (create, start, exec)
STOP_TIMEOUT = 2                 # s for an agent to stop on SIGTERM before SIGKILL
KILL_WAIT = 10.0                 # s for a killed container to be reported gone
ALIVE_EVERY = 1.0                # s between checks that no starting container exited

# A first start brings its spec and key files along in the environment (a base64 tar): no
# put_archive before it, which on fuse-overlayfs costs a mount of the container's root file
# system per node. A restart finds the files present (put there for it) and leaves them.
FILES_ENV = "ZLAB_FILES"
# Every start (a restart is a new network namespace) also installs the peers' addresses as
# permanent neighbour entries: the kernel's neighbour table is one for the whole host, its
# garbage-collected entries are capped (gc_thresh3, 1024 by default), and a full mesh of N
# containers learning each other by ARP needs N*(N-1) of them -- 2,450 at 50 nodes, when new
# links then fail with "neighbor table overflow". Permanent entries are not counted.
NEIGH_PATH = f"{SPEC_DIR}/neigh"
UNPACK = (f'[ -e {SPEC_PATH} ] || printf %s "${FILES_ENV}" | base64 -d | tar -x -C /; '
          f'unset {FILES_ENV}; ip -batch {NEIGH_PATH} >/dev/null 2>&1; exec python3 -m nodes.agent "$@"')
Argv = list[str]
Executor = Callable[[str, list[Argv]], None]      # (container name, commands) -> None or BackendError


def engine_available() -> str | None:
    """None when a Docker engine answers, else why not (for skips and messages)."""
    try:
        docker_client().close()
    except BackendError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 -- the docker SDK missing or misconfigured
        return f"no Docker engine: {type(e).__name__}: {e}"
    return None


def default_owner() -> str:
    """Who made a lab: ``$ZLAB_OWNER`` (the test suite sets one per session) or ``zlab``."""
    return os.environ.get("ZLAB_OWNER") or "zlab"


def docker_name(text: str) -> str:
    """A string docker accepts as (part of) a container/network/volume name."""
    out = re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip(".-_")
    return out or "lab"


class DockerExec:
    """The default executor: one ``docker exec`` per batch of commands (``sh -e -x``),
    so a plan of ten tc/iptables commands costs one round trip, not ten."""

    def __init__(self, client: Any) -> None:
        self.api = client.api

    def __call__(self, container: str, cmds: list[Argv]) -> None:
        if not cmds:
            return
        script = "\n".join(shlex.join(c) for c in cmds)
        try:
            ex = self.api.exec_create(container, ["sh", "-e", "-x", "-c", script])
            out = self.api.exec_start(ex["Id"])
            code = self.api.exec_inspect(ex["Id"]).get("ExitCode")
        except Exception as e:  # noqa: BLE001 -- docker raises APIError, NotFound, timeouts
            raise BackendError(f"{container}: cannot run fault commands: {e}") from None
        if code != 0:
            tail = " | ".join(out.decode("utf-8", "replace").strip().splitlines()[-3:])
            raise BackendError(f"{container}: a fault command failed (exit {code}): {tail}")


def probe_script(dev: str = nf.DEV) -> str:
    """A shell script that prints ``<capability>=0|1`` for each of netfaults' probes."""
    lines = []
    for cap, cmds in nf.probe_commands(dev).items():
        body = " && ".join(shlex.join(c) for c in cmds)
        lines.append(f"if {{ {body}; }} >/dev/null 2>&1; then echo {cap}=1; else echo {cap}=0; fi")
        lines += [f"{shlex.join(c)} >/dev/null 2>&1 || true" for c in nf.probe_cleanup(dev)]
    return "\n".join(lines)


def run_probe(api: Any, container: str) -> nf.Caps:
    """The kernel's capabilities, asked in ``container``'s namespace (it needs NET_ADMIN); the
    probe leaves nothing behind, so it may run while the node's agent starts."""
    try:
        ex = api.exec_create(container, ["sh", "-c", probe_script()], stdout=True, stderr=False)
        out = api.exec_start(ex["Id"])
    except Exception as e:  # noqa: BLE001 -- docker raises APIError, NotFound, timeouts
        raise BackendError(f"cannot probe the kernel's network features in {container}: {e}") from None
    return parse_probe(out.decode("utf-8", "replace"))


def parse_probe(output: str) -> nf.Caps:
    found = dict(line.strip().split("=", 1) for line in output.splitlines() if "=" in line)
    return nf.Caps(**{cap: found.get(cap) == "1" for cap in ("netem", "htb", "tbf", "iptables")})


@contextlib.contextmanager
def _network_lock() -> Iterator[None]:
    """Held while a lab's network name is looked for and taken: one lock for every zlab on this
    host (the engine is local; a lab on a remote engine has only the engine's own check)."""
    path = os.path.join(tempfile.gettempdir(), "zlab-docker-networks.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield                    # an unwritable tmp: the engine's check is all there is
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def mac_of(ip: str) -> str:
    """A node's MAC address: ``02:42`` and its IPv4 address, as docker itself derives them."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def _api_at_least(api: Any, version: str) -> bool:
    from docker.utils import version_gte
    return bool(version_gte(api._version, version))


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 for a node's control port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tar_files(files: dict[str, str], mode: int = 0o600) -> bytes:
    """A tar of host files (``{path in the container: host path}``), readable by root only."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dest, src in files.items():
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class DockerBackend(AgentBackend):
    kind: ClassVar[str] = "docker"
    shim_links: ClassVar[bool] = False          # links: the kernel's, see rules_for

    def __init__(self, scenario: Scenario, seed: int, workdir: str, *, lab: str | None = None,
                 state_dir: str | None = None, detached: bool = False, image: str | None = None,
                 owner: str | None = None, client: Any = None, executor: Executor | None = None) -> None:
        super().__init__(scenario, seed, workdir, lab=docker_name(lab) if lab else None,
                         state_dir=state_dir, detached=detached)
        self.lab = docker_name(self.lab)
        if len(self.names) > MAX_NODES:
            raise BackendError(f"the docker runtime runs at most {MAX_NODES} nodes, not {len(self.names)}")
        self.image = image or os.environ.get("ZLAB_IMAGE") or None
        self.owner = owner or default_owner()
        self._docker = client
        self._exec = executor
        self.network = self.lab
        self.subnet = ""
        self.ips: dict[str, str] = {}
        self.host_ports: dict[str, int] = {}      # when the control port is published (see _prepare)
        self.direct = False                         # whether the host reaches the nodes' addresses
        self.caps = nf.Caps()
        self.netstate: dict[str, nf.NetState] = {n: nf.NetState() for n in self.names}
        self._pending_kernel: set[str] = set()    # paused nodes whose kernel state is behind
        self._starts: dict[str, Future[None]] = {}
        self._probe: Future[nf.Caps] | None = None
        self._probe_node = self.names[0]
        self._probe_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._last_alive_check = 0.0

    # -- engine plumbing -----------------------------------------------------------------
    @property
    def docker(self) -> Any:
        if self._docker is None:
            self._docker = docker_client()
        return self._docker

    @property
    def executor(self) -> Executor:
        if self._exec is None:
            self._exec = DockerExec(self.docker)
        return self._exec

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=f"zlab-{self.lab}")
        return self._pool

    def container(self, node: str) -> str:
        return docker_name(f"{self.lab}-{node}")

    def volume(self, node: str) -> str:
        """The node's volume: named for this start too, so a lab never mounts a volume another
        lab (or an earlier one of the same name) left behind, and never removes one it did not make."""
        return docker_name(f"{self.lab}-{node}-{self.run_id}")

    def labels(self, node: str | None = None) -> dict[str, str]:
        out = {LABEL_LAB: self.lab, LABEL_OWNER: self.owner, LABEL_RUN: self.run_id}
        if node is not None:
            out[LABEL_NODE] = node
        return out

    def _parallel(self, fn: Callable[[str], Any], nodes: Iterable[str]) -> dict[str, Any]:
        """Run ``fn(node)`` for every node on the pool; the first error is raised after all finish."""
        futures = {n: self.pool.submit(fn, n) for n in nodes}
        out, first = {}, None
        for n, f in futures.items():
            try:
                out[n] = f.result()
            except Exception as e:  # noqa: BLE001 -- re-raised below, once every call is done
                first = first or e
        if first is not None:
            raise first
        return out

    # -- AgentBackend hooks: addresses, spawn, kill, pause ------------------------------------
    def _prepare(self) -> None:
        """The network and the addresses only: containers are created by _spawn, each started as
        soon as it exists (an absent image shows up as the first create's error)."""
        if self.image is None:
            from lab.image import ensure_image
            self.image = ensure_image(self.docker)
        self._create_network()
        self.ips = {n: self._ip(i) for i, n in enumerate(self.names)}
        self._write_neighbours()
        self.direct = self._host_on_bridge()
        if not self.direct:
            self.host_ports = {n: _free_port() for n in self.names}

    def _host_on_bridge(self) -> bool:
        """Whether the orchestrator reaches the nodes at their bridge addresses: the engine runs
        on this host, so the bridge's gateway address is one of the host's own. Then no port is
        published -- no proxy process per node, no host port that another lab may take first --
        else (an engine in a VM or elsewhere) each control port is published on 127.0.0.1.
        ZLAB_DOCKER_PUBLISH=1 publishes anyway."""
        if os.environ.get("ZLAB_DOCKER_PUBLISH") == "1":
            return False
        gateway = self.subnet.rsplit(".", 1)[0] + ".1"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((gateway, 0))
        except OSError:
            return False
        return True

    def _ip(self, index: int) -> str:
        return self.subnet.rsplit(".", 1)[0] + f".{FIRST_HOST + index}"

    @property
    def _neigh_file(self) -> str:
        return os.path.join(self.state_dir, "specs", "neigh")

    def _write_neighbours(self) -> None:
        """The ``ip -batch`` file of permanent neighbour entries every node installs (see UNPACK)."""
        lines = [f"neigh replace {ip} lladdr {mac_of(ip)} dev eth0 nud permanent" for ip in self.ips.values()]
        os.makedirs(os.path.dirname(self._neigh_file), exist_ok=True)
        with open(self._neigh_file, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")

    def _create_network(self) -> None:
        """The lab's bridge with a /24 of its own; the third octet starts at a hash of the lab's
        name and moves on while the engine reports an overlap (another lab holds it).

        The network's name is the lab's claim on the engine, across state dirs and users: made
        under a host-wide lock after a look for that exact name, because the engine's own
        duplicate check is best effort (two concurrent creates may both succeed)."""
        import docker.errors
        import docker.types

        start = sum(self.lab.encode()) * 7
        with _network_lock():
            taken = BackendError(f"a network named {self.network} already exists: another lab "
                                 f"by that name runs (or was left: `zlab down --all`)")
            if any(n.get("Name") == self.network for n in self.docker.api.networks(names=[self.network])):
                raise taken
            for attempt in range(256):
                k = (start + attempt) % 254 + 1
                subnet = f"{SUBNET_PREFIX}.{k}.0/24"
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                    subnet=subnet, gateway=f"{SUBNET_PREFIX}.{k}.1")])
                try:
                    self.docker.networks.create(self.network, driver="bridge", ipam=ipam,
                                                labels=self.labels(), check_duplicate=True)
                except docker.errors.APIError as e:
                    text = str(e.explanation or e).lower()
                    if "overlap" in text or "pool" in text:
                        continue
                    if "already exists" in text:
                        raise taken from None
                    raise BackendError(f"cannot create network {self.network}: {e.explanation or e}") from None
                self.subnet = subnet
                return
        raise BackendError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16 for lab {self.lab}")

    def _node_files(self, spec_path: str) -> dict[str, str]:
        """``{path in the container: host file}``: the spec and the agent's key files."""
        assert self.keys is not None
        return {SPEC_PATH: spec_path, NEIGH_PATH: self._neigh_file,
                KEY_FILES["server_secret_file"]: self.keys.server_secret_file,
                KEY_FILES["client_public_file"]: self.keys.client_public_file}

    def _create_node(self, node: str, spec_path: str) -> None:
        import docker.errors
        import docker.types

        api = self.docker.api
        name = self.container(node)
        try:
            # The engine creates the named volume (labelled) with the container: one call, not two.
            volume = docker.types.Mount(DATA_DIR, self.volume(node), type="volume", labels=self.labels(node))
            published = {} if self.direct else {
                "port_bindings": {f"{CONTROL_PORT}/tcp": ("127.0.0.1", self.host_ports[node])}}
            host_config = api.create_host_config(mounts=[volume], cap_add=["NET_ADMIN"], init=False,
                                                 **published)
            # The address's own MAC (what the neighbour entries name), set where the API wants it.
            mac = mac_of(self.ips[node])
            endpoint_mac, container_mac = (mac, None) if _api_at_least(api, "1.44") else (None, mac)
            net = api.create_networking_config({self.network: api.create_endpoint_config(
                ipv4_address=self.ips[node], aliases=[node],
                **({"mac_address": endpoint_mac} if endpoint_mac else {}))})
            files = base64.b64encode(_tar_files(self._node_files(spec_path))).decode()
            api.create_container(
                self.image, entrypoint=["sh", "-c", UNPACK, "zlab-agent"], command=["--spec", SPEC_PATH],
                environment={FILES_ENV: files}, name=name, hostname=node, mac_address=container_mac,
                labels=self.labels(node), ports=None if self.direct else [CONTROL_PORT], host_config=host_config,
                networking_config=net, stop_signal="SIGTERM", detach=True)
        except docker.errors.ImageNotFound:
            raise BackendError(f"image {self.image} is not present: run `python -m lab.image build`") from None
        except docker.errors.APIError as e:
            hint = " (left from an earlier lab? `zlab down --all`)" if e.status_code == 409 else ""
            raise BackendError(f"cannot create {name}: {e.explanation or e}{hint}") from None

    def _launch(self, node: str, spec_path: str) -> None:
        """A first start, on the pool: create (the spec rides along), start; the first node to
        run then probes the kernel (on the pool too, while the agents boot)."""
        import docker.errors

        self._create_node(node, spec_path)
        try:
            self.docker.api.start(self.container(node))
        except docker.errors.APIError as e:
            raise BackendError(f"cannot start {self.container(node)}: {e.explanation or e}") from None
        with self._probe_lock:
            if self._probe is None:
                self._probe_node = node
                self._probe = self.pool.submit(run_probe, self.docker.api, self.container(node))

    def _settle_caps(self) -> None:
        """Wait for the kernel probe; the specs went out assuming no kernel features (so the shim
        did everything), so nodes whose shim share differs with the real ones are told now."""
        assumed = {n: self.rules_for(n) for n in self.names}
        try:
            if self._probe is None:
                raise BackendError("the kernel was not probed")
            caps = self._probe.result(timeout=API_TIMEOUT)
        except Exception:  # noqa: BLE001 -- once more, in a node known to run now
            caps = run_probe(self.docker.api, self.container(self._probe_node))
        self.caps = caps
        changed = {n: r for n in self.names if (r := self.rules_for(n)) != assumed[n]}
        if changed:
            self._push_rules(changed)

    def _addresses(self, node: str) -> Addresses:
        return Addresses(bind=f"tcp://0.0.0.0:{PEER_PORT}", control_bind=f"tcp://0.0.0.0:{CONTROL_PORT}",
                         peer=f"tcp://{self.ips[node]}:{PEER_PORT}",
                         control=f"tcp://{self.ips[node]}:{CONTROL_PORT}" if self.direct
                         else f"tcp://127.0.0.1:{self.host_ports[node]}")

    def _data_dir(self, node: str) -> str:
        return DATA_DIR

    def _keys_spec(self) -> dict[str, str]:
        # Key files, unpacked in the container with the spec (mode 0600): see _create_node.
        return dict(KEY_FILES)

    def _parent_pid(self) -> int | None:
        return None                           # no orchestrator pid inside a container: down_all cleans up

    def spec(self, node: str) -> dict[str, Any]:
        # The agent logs to stderr too, so `docker logs` (and our start-up hints) show it.
        return {**super().spec(node), "log_stderr": True}

    def _spawn(self, node: str, spec_path: str) -> None:
        if node in self.down:
            # A restart: synchronous, and the node's namespace is new, so its faults go back in.
            self._start_node(node, spec_path)
            self.netstate[node] = nf.NetState()
            self._apply_kernel([node], restarting=True)
        else:
            self._starts[node] = self.pool.submit(self._launch, node, spec_path)

    def _start_node(self, node: str, spec_path: str) -> None:
        import docker.errors

        name = self.container(node)
        try:
            self.docker.api.put_archive(name, "/", _tar_files(self._node_files(spec_path)))
            self.docker.api.start(name)
        except docker.errors.APIError as e:
            raise BackendError(f"cannot start {name}: {e.explanation or e}") from None

    def _check_alive(self, nodes: list[str]) -> None:
        for n in nodes:
            f = self._starts.get(n)
            if f is not None and f.done() and f.exception() is not None:
                raise f.exception()   # type: ignore[misc]
        now = time.monotonic()
        if now - self._last_alive_check < ALIVE_EVERY:
            return
        self._last_alive_check = now
        # One listing for the whole lab, not an inspect per node: an inspect waits for a container
        # that is being started, and this runs on the thread that reads the agents' answers.
        names = {self.container(n): n for n in nodes}
        try:
            gone = self.docker.api.containers(all=True, filters={
                "label": [f"{LABEL_LAB}={self.lab}", f"{LABEL_RUN}={self.run_id}"], "status": "exited"})
        except Exception:  # noqa: BLE001 -- an engine hiccup: the readiness timeout still bounds us
            return
        for c in gone:
            n = names.get(c["Names"][0].lstrip("/"))
            if n is not None:
                code = (self._inspect_state(n) or {}).get("ExitCode")
                raise BackendError(f"{self.container(n)} exited (code {code}){self._startup_hint([n])}")

    def _inspect_state(self, node: str) -> dict[str, Any] | None:
        try:
            return self.docker.api.inspect_container(self.container(node))["State"]
        except Exception:  # noqa: BLE001 -- gone or engine hiccup: nothing to tell
            return None

    def _startup_hint(self, nodes: list[str]) -> str:
        for n in nodes:
            try:
                tail = self.docker.api.logs(self.container(n), tail=5).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001 -- only a hint
                continue
            if tail:
                return f"; {n} says: {' | '.join(tail.splitlines())}"
        return ""

    def _kill(self, node: str) -> None:
        import docker.errors

        name = self.container(node)
        try:
            self.docker.api.kill(name)
        except docker.errors.APIError as e:
            if e.status_code != 409:          # 409: not running -- already dead is what we want
                raise BackendError(f"cannot kill {name}: {e.explanation or e}") from None
        deadline = time.monotonic() + KILL_WAIT
        while time.monotonic() < deadline:
            state = self._inspect_state(node)
            if not state or not state.get("Running"):
                break
            time.sleep(0.02)
        self.netstate[node] = nf.NetState()   # the namespace went with the process
        self._pending_kernel.discard(node)

    def _pause(self, node: str) -> None:
        try:
            self.docker.api.pause(self.container(node))
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"cannot pause {self.container(node)}: {e}") from None

    def _resume(self, node: str) -> None:
        try:
            self.docker.api.unpause(self.container(node))
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"cannot resume {self.container(node)}: {e}") from None
        if node in self._pending_kernel:
            self.paused.discard(node)
            self._apply_kernel([node])

    def _stop_all(self) -> None:
        """Revert faults in every live node, stop the containers, then remove everything this
        lab made -- found by its run label, so a start that failed (say, on a name another lab
        holds) removes only what it created itself."""
        try:
            for f in self._starts.values():
                f.cancel()                      # not begun: never will; begun: waited for below
            for f in self._starts.values():
                try:
                    f.result(timeout=API_TIMEOUT)
                except Exception:  # noqa: BLE001 -- start errors were raised where they matter
                    pass
            ours = self._own_containers()
            live = [n for n in self.names if n not in self.down and n in ours]
            for n in [n for n in live if n in self.paused]:
                try:
                    self.docker.api.unpause(ours[n])
                except Exception:  # noqa: BLE001 -- maybe not running at all
                    pass
                self.paused.discard(n)
            if self.ips:
                self._revert_kernel(live)
            self._parallel(lambda n: self._stop_one(ours[n]), ours)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            down_all(self.lab, owner=None if self.run_id else self.owner, run=self.run_id or None,
                     client=self._docker)

    def _own_containers(self) -> dict[str, str]:
        """``{node: container id}`` of the containers this lab created (by its run label)."""
        flt = {"label": [f"{LABEL_LAB}={self.lab}",
                         f"{LABEL_RUN}={self.run_id}" if self.run_id else f"{LABEL_OWNER}={self.owner}"]}
        try:
            found = self.docker.api.containers(all=True, filters=flt)
        except Exception:  # noqa: BLE001 -- an engine hiccup: down_all still removes them by label
            return {}
        return {c["Labels"].get(LABEL_NODE, c["Id"]): c["Id"] for c in found}

    def _stop_one(self, container: str) -> None:
        try:
            self.docker.api.stop(container, timeout=STOP_TIMEOUT)
        except Exception:  # noqa: BLE001 -- already gone is fine; down_all removes the rest
            pass

    def start(self) -> None:
        super().start()
        # The agents are up: now their namespaces exist, shape the scenario's initial links.
        try:
            self._settle_caps()
            self._apply_kernel(self.names)
        except BaseException:
            self.stop()
            raise

    # -- network faults --------------------------------------------------------------------
    def net_config(self) -> nf.NetConfig:
        return nf.NetConfig.for_peers(self.lab, [self.ips[n] for n in self.names])

    def desired_state(self, node: str) -> nf.NetState:
        """The kernel state ``node``'s namespace should hold for the current cuts and links.

        A cut (src, dst) is installed at both ends (src's OUTPUT and dst's
        INPUT) and only on TCP to dst's peer port, so it holds while one end
        restarts and stays one-way (see netfaults.Drop).
        """
        links: dict[str, LinkParams] = {}
        if self.caps.shaping:
            for dst, params in self.links_from(node):
                kernel, _ = nf.split_params(params, self.caps.netem)
                if nf.leaf_kind(kernel) is not None:
                    links[self.ips[dst]] = kernel
        drops: set[nf.Drop] = set()
        if self.caps.iptables:
            for src, dst in self.cuts:
                if src == node:
                    drops.add(nf.Drop(self.ips[dst], "out", PEER_PORT))
                if dst == node:
                    drops.add(nf.Drop(self.ips[src], "in", PEER_PORT))
        return nf.NetState(links=links, drops=frozenset(drops))

    def _apply_kernel(self, nodes: Iterable[str], restarting: bool = False) -> None:
        """Bring each node's namespace to :meth:`desired_state`; paused nodes catch up on resume,
        crashed ones at their restart (``restarting``: still marked down, but running again)."""
        cfg = self.net_config()
        todo: dict[str, tuple[list[Argv], nf.NetState]] = {}
        for n in nodes:
            if n in self.down and not restarting:
                continue
            cmds, after = nf.plan(cfg, self.netstate[n], self.desired_state(n))
            if not cmds:
                self._pending_kernel.discard(n)
            elif n in self.paused:
                self._pending_kernel.add(n)     # docker cannot exec in a frozen container
            else:
                todo[n] = (cmds, after)

        def run(n: str) -> None:
            cmds, after = todo[n]
            self.executor(self.container(n), cmds)
            self.netstate[n] = after
            self._pending_kernel.discard(n)
        self._parallel(run, todo)

    def _revert_kernel(self, nodes: Iterable[str]) -> None:
        cfg = self.net_config()
        todo = {n: nf.teardown(cfg, self.netstate[n]) for n in nodes}

        def run(n: str) -> None:
            try:
                self.executor(self.container(n), todo[n])
            except BackendError:
                pass                            # the container is going away anyway
            self.netstate[n] = nf.NetState()
        self._parallel(run, [n for n, cmds in todo.items() if cmds])

    @property
    def kernel_netem(self) -> bool:
        """Whether netem makes delay/loss/...: it needs zlab's htb root and filters too."""
        return self.caps.netem and self.caps.shaping

    def rules_for(self, node: str) -> dict[str, Any]:
        """The shim's share: cuts only where iptables is missing, links only the part netem cannot
        make (all of delay/loss/... when the kernel has no netem; nothing when it has)."""
        rules = super().rules_for(node)
        if self.caps.iptables:
            rules["cut_out"], rules["cut_in"] = [], []
        rules["links"] = {}
        for dst, params in self.links_from(node):
            _, shim = nf.split_params(params, self.kernel_netem)
            if shim != PERFECT:
                rules["links"][dst] = _link_dict(shim)
        return rules

    def set_cuts(self, cuts: frozenset[Cut]) -> str:
        if not self.caps.iptables:
            return super().set_cuts(cuts)
        self.cuts = frozenset(cuts)
        self._apply_kernel(self.names)
        return "iptables"

    def set_link(self, src: str, dst: str, params: LinkParams) -> str:
        old = self.links.get((src, dst), PERFECT)
        self.links[(src, dst)] = params
        _, old_shim = nf.split_params(old, self.kernel_netem)
        _, new_shim = nf.split_params(params, self.kernel_netem)
        self._apply_kernel([src])
        if old_shim != new_shim:
            self._push_rules({src: {"links": {dst: _link_dict(new_shim)}}})
        if not self.caps.shaping:
            return "shim"                       # and a rate limit is not applied (see notes)
        return nf.mechanism(params, self.caps)

    def notes(self) -> list[str]:
        out = []
        if not self.kernel_netem:
            missing = "sch_netem" if not self.caps.netem else "htb/tbf"
            out.append(f"docker runtime: this kernel has no {missing}, so delay, jitter, loss, "
                       "duplication and reordering are applied by each agent's fault shim "
                       "(per message, in the agent), not by the kernel")
        else:
            out.append("docker runtime: delay, jitter, loss, duplication and reordering are applied "
                       "by netem in each node's network namespace; kernel loss on the nodes' TCP "
                       "links shows up as retransmission delay, not as lost messages")
        if self.caps.iptables:
            out.append("partitions are made with iptables DROP rules in each node's namespace")
        else:
            out.append("iptables is not usable here, so partitions are made by the agent shim")
        if any(p.rate for p in self.links.values()):
            if self.caps.shaping:
                how = "tbf, or netem's rate on links that also have delay or loss" if self.kernel_netem else "tbf"
                out.append(f"rate limits were applied by the kernel ({how} under zlab's htb root)")
            else:
                out.append("rate limits were NOT applied: the kernel lacks htb/tbf and the agent "
                           "shim does not shape bandwidth")
        return out

    # -- results -----------------------------------------------------------------------------
    def _read_node_file(self, node: str, name: str) -> bytes | None:
        """Over the control socket while the node runs; from its volume when it is down or paused
        (docker reads a stopped container's files), so a crashed node's trace is not lost."""
        if node not in self.down and node not in self.paused:
            data = super()._read_node_file(node, name)
            if data is not None:
                return data
        try:
            stream, _ = self.docker.api.get_archive(self.container(node), f"{DATA_DIR}/{name}")
            raw = b"".join(stream)
        except Exception:  # noqa: BLE001 -- no such file yet, or the container is gone
            return None
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.next()
            f = tar.extractfile(member) if member else None
            return f.read() if f else None

    # -- interactive labs (`zlab up`) --------------------------------------------------------------
    def _runtime_state(self) -> dict[str, Any]:
        return {
            "image": self.image, "owner": self.owner, "network": self.network, "subnet": self.subnet,
            "ips": self.ips, "host_ports": self.host_ports, "direct": self.direct, "caps": asdict(self.caps),
            "netstate": {n: _state_json(s) for n, s in self.netstate.items()},
        }

    def _load_runtime_state(self, state: dict[str, Any]) -> None:
        self.image = state.get("image") or self.image
        self.owner = state.get("owner") or self.owner
        self.network = state.get("network") or self.network
        self.subnet = state.get("subnet", "")
        self.ips = dict(state.get("ips") or {})
        self.host_ports = {n: int(p) for n, p in (state.get("host_ports") or {}).items()}
        self.direct = bool(state.get("direct"))
        self.caps = nf.Caps(**(state.get("caps") or {}))
        for n, s in (state.get("netstate") or {}).items():
            self.netstate[n] = _state_from_json(s)


def _state_json(s: nf.NetState) -> dict[str, Any]:
    return {"links": {ip: asdict(p) for ip, p in s.links.items()},
            "drops": [[d.peer_ip, d.direction, d.port] for d in sorted(s.drops)], "chain": s.chain}


def _state_from_json(raw: dict[str, Any]) -> nf.NetState:
    return nf.NetState(links={ip: LinkParams(**p) for ip, p in raw.get("links", {}).items()},
                       drops=frozenset(nf.Drop(ip, d, port) for ip, d, port in raw.get("drops", [])),
                       chain=bool(raw.get("chain")))


def _label_filters(lab: str | None, owner: str | None, run: str | None) -> list[str]:
    filters = [f"{LABEL_LAB}={lab}" if lab else LABEL_LAB]
    if owner:
        filters.append(f"{LABEL_OWNER}={owner}")
    if run:
        filters.append(f"{LABEL_RUN}={run}")
    return filters


def list_labelled(client: Any, lab: str | None = None, owner: str | None = None,
                  run: str | None = None) -> dict[str, list[str]]:
    """Names of the containers, networks and volumes zlab labelled (for ``lab``/``owner``/``run``
    -- one start of a lab -- if given)."""
    flt = {"label": _label_filters(lab, owner, run)}
    return {
        "containers": [c["Names"][0].lstrip("/") for c in client.api.containers(all=True, filters=flt)],
        "networks": [n["Name"] for n in client.api.networks(filters=flt)],
        "volumes": [v["Name"] for v in (client.api.volumes(filters=flt).get("Volumes") or [])],
    }


def _remove_network(client: Any, net_id: str, name: str) -> bool:
    """Remove a network whose containers were just removed; whether it was there. A busy engine
    may still count an endpoint of a removed container for a while: asked again for KILL_WAIT s."""
    import docker.errors

    deadline = time.monotonic() + KILL_WAIT
    while True:
        try:
            client.api.remove_network(net_id)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            stale = "active endpoints" in str(e.explanation or e)
            if not stale or time.monotonic() >= deadline:
                # Seen once after a 100-container lab: the engine kept an endpoint of a removed
                # container for good (no container listed on the network); only its restart frees it.
                hint = (" (no container of the lab is left; the Docker engine holds a stale endpoint: "
                        "restart the engine, then `zlab down --all`)") if stale else ""
                raise BackendError(f"cannot remove network {name}: {e.explanation or e}{hint}") from None
            time.sleep(0.5)


def down_all(lab: str | None = None, *, owner: str | None = None, run: str | None = None,
             client: Any = None) -> dict[str, list[str]]:
    """Remove every container, network and volume labelled ``zlab.lab`` (of ``lab`` / ``owner``
    / ``run`` when given): what ``zlab down --all`` and the test suite use. Needs no state file,
    so it also cleans up after an orchestrator that was SIGKILLed. Returns what it removed."""
    import docker.errors

    client = client or docker_client()
    found = list_labelled(client, lab, owner, run)
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    # Containers first (they hold the network and volumes), killed at once: a lab being
    # removed has nothing left to flush, its trace was read before.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        def rm(name: str) -> str | None:
            try:
                client.api.remove_container(name, force=True, v=False)
                return name
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as e:
                if e.status_code == 409 and "in progress" in str(e.explanation or ""):
                    return None       # another sweep (`zlab down --all`) is removing it right now
                raise
        removed["containers"] = [n for n in pool.map(rm, found["containers"]) if n]
    # By id: names need not be unique (the engine's duplicate check is best effort).
    failed: list[BackendError] = []
    for net in client.api.networks(filters={"label": _label_filters(lab, owner, run)}):
        try:
            if _remove_network(client, net["Id"], net["Name"]):
                removed["networks"].append(net["Name"])
        except BackendError as e:
            failed.append(e)          # the volumes still go; then say what is left
    for name in found["volumes"]:
        try:
            client.api.remove_volume(name, force=True)
            removed["volumes"].append(name)
        except docker.errors.NotFound:
            pass
    if failed:
        raise failed[0]
    return removed
