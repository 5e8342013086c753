"""The docker runtime end to end: Raft on 5 containers under kernel faults, and the register core
for the mechanics (one-way cuts, rate limits, restarts from the volume, isolation of labs).

Lean on purpose: small labs, short timeouts, the image shared by the session (zlab_image).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab import netfaults as nf
from lab.backends.docker import (
    DockerBackend,
    docker_client,
    list_labelled,
    parse_probe,
    probe_script,
)
from lab.errors import BackendError
from lab.runner import run_scenario
from lab.scenario import LinkParams, NodeSpec, Scenario
from lab.targets import partition_cuts
from lab.topology import load_scenario_text

docker = pytest.mark.docker

RAFT5 = """
name: {name}
protocol: raft
nodes: 5
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms}}
network: {{delay: 1ms}}
"""


def register(n: int = 3, name: str = "reg") -> Scenario:
    return Scenario(name=name, protocol="register", nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)])


def ask(b: DockerBackend, node: str, op: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    box: list[dict[str, Any]] = []
    b.submit(node, op, box.append)
    b.wait_for(lambda: bool(box), timeout)
    return box[0] if box else None


def echo_until_ok(b: DockerBackend, src: str, dst: str, timeout: float = 5.0) -> None:
    """Readiness is each agent's control socket; peer connections may still be opening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = ask(b, src, {"f": "echo", "peer": dst}, timeout=0.3)
        if res and res.get("value") == dst:
            return
    raise AssertionError(f"{src} -> {dst} -> {src} never answered")


def leader_of(b: DockerBackend, among: list[str] | None = None, min_term: int = 0,
              timeout: float = 8.0) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in among or b.names:
            st = b.status(n) if n not in b.down else None
            if st and st.get("role") == "leader" and st.get("term", 0) > min_term:
                return n, st["term"]
        b.wait_for(lambda: False, 0.1)
    raise AssertionError(f"no leader among {among or b.names} within {timeout}s")


def exec_in(b: DockerBackend, node: str, *cmd: str) -> tuple[int, str]:
    r = docker_client().containers.get(b.container(node)).exec_run(list(cmd))
    return r.exit_code, r.output.decode("utf-8", "replace")


@docker
def test_raft_leader_killed_new_leader_and_no_acknowledged_write_lost(zlab_image, tmp_path, monkeypatch):
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    text = RAFT5.format(name="dk-kill") + """
workload: {kind: kv, clients: 3, rate: 40/s, duration: 4s, timeout: 1s, keys: 4, read_ratio: 0.5}
faults:
  - {at: 1s, crash: leader}
  - {at: 2500ms, restart: crashed}
checks: [election_safety, log_matching, leader_completeness, state_machine_safety, linearizable]
settle: 1s
"""
    result = run_scenario(load_scenario_text(text), "docker", seed=5, out=str(tmp_path / "run"), quiet=True)
    assert [v.verdict for v in result.verdicts] == ["holds"] * 5, [v.as_dict() for v in result.verdicts]
    trace = result.trace
    crash = next(e for e in trace if e["ev"] == "fault" and e["data"].get("action") == "crash")
    victim = crash["data"]["target"]
    victim = victim[0] if isinstance(victim, list) else victim
    new_leaders = [e for e in trace if e["ev"] == "state" and e["data"].get("role") == "leader"
                   and e["ts"] > crash["ts"] and e["node"] != victim]
    assert new_leaders, "no other node became leader after the leader was killed"
    assert new_leaders[0]["ts"] - crash["ts"] < 3.0
    acked = [h for h in result.history if h["type"] == "ok" and h["f"] == "write"]
    assert acked, "the workload had no acknowledged write"
    # the killed node came back from its volume: it traced "recovered" after the restart
    assert any(e["ev"] == "log" and e["node"] == victim and e["data"].get("msg") == "recovered"
               for e in trace)


@docker
def test_raft_iptables_partition_minority_cannot_commit_and_heal_converges(zlab_backend):
    b = zlab_backend(load_scenario_text(RAFT5.format(name="dk-part")))
    assert b.caps.iptables, "iptables is needed for kernel partitions"
    old, term = leader_of(b)
    assert ask(b, old, {"f": "write", "key": "k", "value": 1, "client": "t", "seq": 1})["type"] == "ok"
    minority = [old, next(n for n in b.names if n != old)]
    majority = [n for n in b.names if n not in minority]
    assert b.set_cuts(partition_cuts([minority, majority])) == "iptables"
    # the rules are in the kernel, at both ends, not in the shim
    code, out = exec_in(b, old, "iptables", "-S", b.net_config().chain)
    assert code == 0 and out.count("-j DROP") == 2 * len(majority)
    assert b.agent_status(old)["rules"].get("cut_out", []) == []
    # the old leader cannot commit: its write gets no ok
    res = ask(b, old, {"f": "write", "key": "k", "value": 2, "client": "t", "seq": 2}, timeout=1.5)
    assert res is None or res["type"] != "ok", res
    new, new_term = leader_of(b, among=majority, min_term=term)
    assert ask(b, new, {"f": "write", "key": "k", "value": 3, "client": "t", "seq": 3})["type"] == "ok"
    b.set_cuts(frozenset())
    code, out = exec_in(b, old, "iptables", "-S", b.net_config().chain)
    assert "DROP" not in out
    # heal: the old leader learns the new term and every node reaches the same commit index
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = {n: b.status(n) for n in b.names}
        if all(s and s["term"] >= new_term for s in st.values()) and \
                len({s["commit"] for s in st.values()}) == 1 and \
                sum(s["role"] == "leader" for s in st.values()) == 1:
            break
        b.wait_for(lambda: False, 0.2)
    else:
        raise AssertionError(f"no convergence after heal: {st}")
    assert st[old]["role"] != "leader" or st[old]["term"] > term


@docker
def test_oneway_cut_delay_fallback_and_pause(zlab_backend):
    b = zlab_backend(register(3, "dk-oneway"))
    echo_until_ok(b, "n1", "n2")
    echo_until_ok(b, "n1", "n3")
    # n1 -> n2 cut only: n2's messages still reach n1, n1's never reach n2
    assert b.set_cuts(frozenset({("n1", "n2")})) == "iptables"
    t_cut = b.now()
    assert ask(b, "n2", {"f": "echo", "peer": "n1"}, timeout=0.8) is None     # the reply n1->n2 is cut
    assert ask(b, "n1", {"f": "echo", "peer": "n2"}, timeout=0.8) is None
    assert ask(b, "n1", {"f": "echo", "peer": "n3"})["value"] == "n3"       # others unaffected
    recv = [e for e in b.trace_events() if e["ev"] == "recv" and e.get("type") == "echo" and e["ts"] > t_cut]
    assert any(e["node"] == "n1" and e["peer"] == "n2" for e in recv), "n2 -> n1 should pass"
    assert not any(e["node"] == "n2" and e["peer"] == "n1" for e in recv), "n1 -> n2 should be cut"
    b.set_cuts(frozenset())
    assert ask(b, "n1", {"f": "echo", "peer": "n3"})["value"] == "n3"
    # delay: netem where the kernel has it, else the agent shim -- and the report says which
    mech = b.set_link("n1", "n3", LinkParams(delay=0.3))
    assert mech == ("netem" if b.caps.netem else "shim")
    t = time.monotonic()
    assert ask(b, "n1", {"f": "echo", "peer": "n3"}, timeout=3)["value"] == "n3"
    assert time.monotonic() - t >= 0.28
    if not b.caps.netem:
        assert any("no sch_netem" in n and "shim" in n for n in b.notes())
    b.set_link("n1", "n3", LinkParams())
    # pause freezes the container: no answer until resumed, then the queued op is served
    b.pause("n2")
    box: list[dict[str, Any]] = []
    b.submit("n1", {"f": "echo", "peer": "n2"}, box.append)
    assert not b.wait_for(lambda: bool(box), 0.6)
    b.resume("n2")
    assert b.wait_for(lambda: bool(box), 3.0) and box[0]["value"] == "n2"


def _transfer_seconds(b: DockerBackend, src: str, dst: str, nbytes: int) -> float:
    """Time to push ``nbytes`` over a raw TCP connection from src's container to dst's."""
    port = 9100
    sink = ("import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
            f"s.bind(('0.0.0.0', {port})); s.listen(1); c,_=s.accept(); n=0\n"
            "while True:\n d=c.recv(65536)\n if not d: break\n n+=len(d)\n"
            "c.sendall(b'k'); c.close()")
    docker_client().containers.get(b.container(dst)).exec_run(["python3", "-c", sink], detach=True)
    send = ("import socket,time\n"
            "for i in range(50):\n"
            f" try: c=socket.create_connection(('{b.ips[dst]}', {port}), timeout=1); break\n"
            " except OSError: time.sleep(0.05)\n"
            f"t=time.monotonic(); c.sendall(b'x'*{nbytes}); c.shutdown(socket.SHUT_WR); c.recv(1)\n"
            "print(time.monotonic()-t)")
    code, out = exec_in(b, src, "python3", "-c", send)
    assert code == 0, out
    return float(out.strip().splitlines()[-1])


@docker
def test_tbf_rate_limit_slows_a_bulk_transfer(zlab_backend):
    b = zlab_backend(register(2, "dk-rate"))
    nbytes = 200_000                                    # 1.6 Mbit
    fast = _transfer_seconds(b, "n1", "n2", nbytes)
    assert b.set_link("n1", "n2", LinkParams(rate=2_000_000)) == "tbf"
    code, out = exec_in(b, "n1", "tc", "qdisc", "show", "dev", "eth0")
    assert "tbf" in out and "htb 1:" in out
    slow = _transfer_seconds(b, "n1", "n2", nbytes)
    assert slow > 0.4 and slow > 5 * fast, (fast, slow)  # 1.6 Mbit at 2 Mbit/s, less the burst
    b.set_link("n1", "n2", LinkParams())
    code, out = exec_in(b, "n1", "tc", "qdisc", "show", "dev", "eth0")
    assert "tbf" not in out and "htb" not in out


@docker
def test_restart_from_the_volume_recovers_state_and_faults(zlab_backend):
    b = zlab_backend(register(3, "dk-restart"))
    # the first start brought the spec and keys in the environment: unpacked root-only, and the
    # agent itself does not keep them in its environment
    code, out = exec_in(b, "n1", "sh", "-c", "stat -c %a /etc/zlab/spec.json /etc/zlab/server.key_secret; "
                        "tr '\\0' '\\n' < /proc/1/environ | grep -c ZLAB_FILES")
    assert out.split() == ["600", "600", "0"], out
    assert ask(b, "n1", {"f": "write", "value": 42})["type"] == "ok"
    echo_until_ok(b, "n2", "n1")
    b.set_cuts(frozenset({("n3", "n1")}))
    b.crash("n1")
    assert ask(b, "n1", {"f": "read"}, timeout=0.3) is None
    state = docker_client().api.inspect_container(b.container("n1"))["State"]
    assert not state["Running"]
    b.restart("n1")
    assert ask(b, "n1", {"f": "read"})["value"] == 42
    # the new namespace got the lab's cut back (n1 end: INPUT from n3), and the same address
    code, out = exec_in(b, "n1", "iptables", "-S", b.net_config().chain)
    assert f"-s {b.ips['n3']}/32" in out
    echo_until_ok(b, "n2", "n1")                     # peers reconnect to the same address
    events = b.trace_events()
    assert [e["data"]["msg"] for e in events if e["node"] == "n1" and e["ev"] == "log"
            and e["data"].get("msg") in ("started", "recovered")] == ["started", "recovered"]


@docker
def test_two_labs_in_parallel_do_not_see_each_other(zlab_backend):
    a = zlab_backend(register(2, "dk-iso"))
    b = zlab_backend(register(2, "dk-iso"))
    assert a.lab != b.lab and a.subnet != b.subnet
    a.set_cuts(frozenset({("n1", "n2"), ("n2", "n1")}))
    echo_until_ok(b, "n1", "n2")                                             # b is not cut
    # a's node cannot even open a connection to b's node: separate bridges
    code, _ = exec_in(a, "n2", "python3", "-c",
                      f"import socket; socket.create_connection(('{b.ips['n1']}', 7000), timeout=1)")
    assert code != 0
    client = docker_client()
    mine = list_labelled(client, a.lab)
    assert sorted(mine["containers"]) == [a.container("n1"), a.container("n2")]
    assert mine["networks"] == [a.network] and len(mine["volumes"]) == 2
    a.stop()
    assert list_labelled(client, a.lab) == {"containers": [], "networks": [], "volumes": []}
    assert ask(b, "n2", {"f": "echo", "peer": "n1"})["value"] == "n1"        # b still runs


# -- the backend's fault logic, with a fake engine (no docker needed) ---------------------------

class FakeAPI:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def unpause(self, name: str) -> None:
        self.calls.append(("unpause", name))

    def pause(self, name: str) -> None:
        self.calls.append(("pause", name))

    def kill(self, name: str) -> None:
        self.calls.append(("kill", name))

    def inspect_container(self, name: str) -> dict[str, Any]:
        self.calls.append(("inspect", name))
        return {"State": {"Running": False, "Status": "exited", "ExitCode": 3}}

    exited: list[str] = []          # containers the engine lists as exited
    probe_output = b"netem=1\nhtb=1\ntbf=1\niptables=1\n"

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.calls.append(("containers", repr(sorted((filters or {}).items()))))
        return [{"Names": [f"/{n}"]} for n in self.exited]

    def logs(self, name: str, tail: int = 5) -> bytes:
        return b"boom"

    def exec_create(self, name: str, cmd: list[str], **kw: Any) -> dict[str, str]:
        self.calls.append(("exec", name))
        return {"Id": name}

    def exec_start(self, exec_id: str) -> bytes:
        return self.probe_output


class FakeDocker:
    def __init__(self) -> None:
        self.api = FakeAPI()


@pytest.fixture
def fake(tmp_path):
    ran: list[tuple[str, list[list[str]]]] = []
    pushed: list[dict[str, Any]] = []
    b = DockerBackend(register(3, "unit"), 1, str(tmp_path), lab="unit", owner="t",
                      client=FakeDocker(), executor=lambda c, cmds: ran.append((c, cmds)))
    b.ips = {"n1": "10.213.1.10", "n2": "10.213.1.11", "n3": "10.213.1.12"}
    b.caps = nf.Caps(netem=False, htb=True, tbf=True, iptables=True)
    b._push_rules = pushed.append            # the shim's share, as it would go to the agents
    return b, ran, pushed


def test_unit_cut_is_installed_at_both_ends_on_the_peer_port(fake):
    b, ran, _ = fake
    assert b.set_cuts(frozenset({("n1", "n2")})) == "iptables"
    chain = nf.chain_name("unit")
    got = dict(ran)
    assert got["unit-n1"] == [*nf.ipt_chain_create(chain), nf.ipt_add(chain, nf.Drop("10.213.1.11", "out", 7000))]
    assert got["unit-n2"] == [*nf.ipt_chain_create(chain), nf.ipt_add(chain, nf.Drop("10.213.1.10", "in", 7000))]
    assert "unit-n3" not in got
    ran.clear()
    assert b.set_cuts(frozenset({("n1", "n2")})) == "iptables" and ran == []     # idempotent
    b.set_cuts(frozenset())
    assert sorted(c for c, _ in ran) == ["unit-n1", "unit-n2"]
    assert all(cmds[0][2] == "-D" for _, cmds in ran)
    # the shim gets no cuts where iptables makes them
    assert b.rules_for("n1")["cut_out"] == [] and b.rules_for("n2")["cut_in"] == []


def test_unit_without_netem_delay_goes_to_the_shim_and_rate_to_tbf(fake):
    b, ran, pushed = fake
    assert b.set_link("n1", "n2", LinkParams(delay=0.05, loss=0.1)) == "shim"
    assert ran == []
    assert pushed == [{"n1": {"links": {"n2": {**LinkParams(delay=0.05, loss=0.1).__dict__}}}}]
    assert b.rules_for("n1")["links"]["n2"]["delay"] == 0.05
    pushed.clear()
    assert b.set_link("n1", "n2", LinkParams(delay=0.05, loss=0.1, rate=1_000_000)) == "tbf+shim"
    assert pushed == []                                   # the shim's share did not change
    (container, cmds), = ran
    assert container == "unit-n1" and nf.tc_leaf(0x11, LinkParams(rate=1_000_000), verb="add") in cmds
    assert "rate" not in b.rules_for("n1")["links"]["n2"] or b.rules_for("n1")["links"]["n2"]["rate"] is None
    assert any("no sch_netem" in n for n in b.notes())
    assert any("rate limits were applied by the kernel" in n for n in b.notes())


def test_unit_with_netem_everything_is_the_kernels(fake):
    b, ran, pushed = fake
    b.caps = nf.Caps(netem=True, htb=True, tbf=True, iptables=True)
    assert b.set_link("n2", "n3", LinkParams(delay=0.05, jitter=0.01)) == "netem"
    assert pushed == [] and b.rules_for("n2")["links"] == {}
    (container, cmds), = ran
    assert container == "unit-n2"
    assert ["tc", "qdisc", "add", "dev", "eth0", "parent", "1:12", "handle", "12:", "netem",
            "delay", "50ms", "10ms"] in cmds
    assert not any("no sch_netem" in n for n in b.notes())


def test_unit_paused_node_catches_up_on_resume_and_crash_forgets_the_namespace(fake):
    b, ran, _ = fake
    b.pause("n2")
    b.set_cuts(frozenset({("n1", "n2")}))
    assert [c for c, _ in ran] == ["unit-n1"]            # no exec into a frozen container
    ran.clear()
    b.resume("n2")
    assert [c for c, _ in ran] == ["unit-n2"]
    assert ("unpause", "unit-n2") in b.docker.api.calls
    b.crash("n2")
    assert b.netstate["n2"] == nf.NetState()
    ran.clear()
    b.set_cuts(frozenset())
    assert [c for c, _ in ran] == ["unit-n1"]            # a down node is left alone


def test_unit_probe_script_and_parse() -> None:
    script = probe_script()
    for cap in ("netem", "htb", "tbf", "iptables"):
        assert f"echo {cap}=1" in script
    assert parse_probe("netem=0\nhtb=1\ntbf=1\niptables=1\n") == nf.Caps(False, True, True, True)


@docker
def test_down_all_cleans_up_after_a_sigkilled_orchestrator(zlab_image, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from lab.backends.docker import down_all
    lab = f"dk-orphan-{os.getpid()}"
    code = (f"import sys, time; from lab.backends.docker import DockerBackend; "
            f"from lab.scenario import Scenario, NodeSpec; "
            f"b = DockerBackend(Scenario(name='o', protocol='register', nodes=[NodeSpec('n1'), NodeSpec('n2')]), "
            f"1, {str(tmp_path)!r}, lab={lab!r}, image={zlab_image!r}); b.start(); "
            f"b.set_cuts(frozenset({{('n1', 'n2')}})); print('up', flush=True); time.sleep(60)")
    env = {**os.environ, "ZLAB_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        client = docker_client()
        left = list_labelled(client, lab)
        assert len(left["containers"]) == 2 and left["networks"] == [lab] and len(left["volumes"]) == 2
        removed = down_all(lab, client=client)
        assert sorted(removed["containers"]) == sorted(left["containers"])
        assert list_labelled(client, lab) == {"containers": [], "networks": [], "volumes": []}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        down_all(lab)


def test_unit_docker_marker_skips_or_fails_when_no_engine(monkeypatch):
    from lab import pytest_plugin
    monkeypatch.setattr(pytest_plugin, "_engine_reason", ["no Docker engine answers: refused"])
    monkeypatch.delenv("ZLAB_REQUIRE_DOCKER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="refused"):
        pytest_plugin.require_docker()
    monkeypatch.setenv("ZLAB_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="ZLAB_REQUIRE_DOCKER=1"):
        pytest_plugin.require_docker()
    monkeypatch.setattr(pytest_plugin, "_engine_reason", [None])
    pytest_plugin.require_docker()                     # an engine answers: nothing happens


def test_unit_lab_names_are_unique_per_worker(monkeypatch):
    from lab.pytest_plugin import unique_lab_name
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    a, b = unique_lab_name("raft 5/x"), unique_lab_name("raft 5/x")
    assert a != b and a.startswith("raft-5-x-gw3-")


def test_unit_probe_result_fixes_the_shim_share_the_specs_assumed(fake):
    """Specs go out before the probe answers (assuming no kernel features, so the shim would
    delay); once netem is known to exist, the shim's share is taken back and the kernel's used."""
    from concurrent.futures import Future

    b, _, pushed = fake
    b.caps = nf.Caps()
    b.links[("n1", "n2")] = LinkParams(delay=0.05)
    assert b.rules_for("n1")["links"]["n2"]["delay"] == 0.05            # what n1's spec said
    probe: Future[nf.Caps] = Future()
    probe.set_result(nf.Caps(netem=True, htb=True, tbf=True, iptables=True))
    b._probe = probe
    b._settle_caps()
    assert b.caps.netem and b.kernel_netem
    assert list(pushed[0]) == ["n1"] and pushed[0]["n1"]["links"] == {}   # only n1's rules changed


def test_unit_failed_probe_is_asked_again_by_exec_in_a_running_node(fake):
    from concurrent.futures import Future

    b, _, pushed = fake
    b.caps = nf.Caps()
    probe: Future[nf.Caps] = Future()
    probe.set_exception(RuntimeError("engine hiccup"))
    b._probe, b._probe_node = probe, "n2"
    b._settle_caps()
    assert ("exec", "unit-n2") in b.docker.api.calls
    assert b.caps == nf.Caps(netem=True, htb=True, tbf=True, iptables=True)
    assert pushed == []                                 # no links: nothing to take back from the shim


def test_unit_exited_container_is_found_by_one_listing_not_an_inspect_per_node(fake):
    b, _, _ = fake
    api = b.docker.api
    b._check_alive(b.names)
    assert [c for c, _ in api.calls] == ["containers"]                # nobody exited: one call
    assert "zlab.lab=unit" in api.calls[0][1] and "exited" in api.calls[0][1]
    api.calls.clear()
    b._last_alive_check = 0.0
    api.exited = ["unit-n2"]
    with pytest.raises(BackendError, match=r"unit-n2 exited \(code 3\); n2 says: boom"):
        b._check_alive(b.names)
    assert ("inspect", "unit-n1") not in api.calls


class FakeAgents:
    """Clients of agents that come up at given times (a hello sent earlier waits, as ZeroMQ
    queues it) and whose links are all up ``link_delay`` s after the last agent is."""

    def __init__(self, up_at: dict[str, float], link_delay: float) -> None:
        self.t0 = time.monotonic()
        self.up_at, self.link_delay = up_at, link_delay
        self.queued: list[tuple[str, Any]] = []
        self.hellos = 0

    def client(self, node: str) -> Any:
        agents = self

        class Client:
            def request(self, op: str, callback: Any, **fields: Any) -> int:
                agents.hellos += 1
                agents.queued.append((node, callback))
                return agents.hellos
        return Client()

    def pump(self, until: float) -> None:
        time.sleep(max(0.0, min(until - time.monotonic(), 0.01)))
        now = time.monotonic() - self.t0
        links_up = now >= max(self.up_at.values()) + self.link_delay
        due = [(n, cb) for n, cb in self.queued if now >= self.up_at[n]]
        self.queued = [(n, cb) for n, cb in self.queued if now < self.up_at[n]]
        for n, cb in due:
            up = [m for m, t in self.up_at.items() if links_up or (m == n and now >= t)]
            cb({"lab": "unit", "connected": up})


def test_unit_readiness_does_not_flood_agents_whose_peers_are_not_up(fake, monkeypatch):
    b, _, _ = fake
    agents = FakeAgents({"n1": 0.0, "n2": 0.3, "n3": 0.6}, link_delay=0.1)
    b.clients = {n: agents.client(n) for n in b.names}
    monkeypatch.setattr(b, "_pump", agents.pump)
    t = time.monotonic()
    answers = b._wait_ready(b.names, timeout=5)
    took = time.monotonic() - t
    assert set(answers) == set(b.names) and all(len(a["connected"]) == 3 for a in answers.values())
    assert 0.7 <= took < 1.0                           # ready soon after the links are up...
    # ...without asking n1 every loop while n3 was not even up (that was ~20 hellos a node a second)
    assert agents.hellos <= 20, agents.hellos


def test_unit_readiness_waits_while_nodes_keep_coming_up_and_not_past_a_stall(fake, monkeypatch):
    import lab.backends.agents as ag
    b, _, _ = fake

    def wait(up_at: dict[str, float]) -> float:
        agents = FakeAgents(up_at, link_delay=0.1)
        b.clients = {n: agents.client(n) for n in b.names}
        monkeypatch.setattr(b, "_pump", agents.pump)
        t = time.monotonic()
        b._wait_ready(b.names, timeout=0.6)
        return time.monotonic() - t
    # A node every 0.5 s: the whole start (1.1 s) is longer than the limit, but never stalls.
    assert 1.0 <= wait({"n1": 0.0, "n2": 0.5, "n3": 1.0}) < 1.5
    # n3 never comes: the start fails 0.6 s after the last progress (n2 answering), not later.
    t = time.monotonic()
    with pytest.raises(BackendError, match=r"n3 did not answer \(waited 1s, the last 0.6s with no node"):
        wait({"n1": 0.0, "n2": 0.5, "n3": 99.0})
    assert time.monotonic() - t < 1.5
    # And a start that crawls on is bounded in all: timeout + READY_PER_NODE per node.
    monkeypatch.setattr(ag, "READY_PER_NODE", 0.1)
    with pytest.raises(BackendError, match=r"n3 did not answer within 1s \(3 nodes\)"):
        wait({"n1": 0.0, "n2": 0.5, "n3": 1.0})


def test_unit_a_big_lab_writes_its_rules_in_linear_time_and_names_every_peers_mac(tmp_path):
    from lab.backends.docker import mac_of
    b = DockerBackend(register(100, "big"), 1, str(tmp_path), lab="big", owner="t", client=FakeDocker(),
                      state_dir=str(tmp_path / "state"))
    b.subnet = "10.213.119.0/24"
    b.ips = {n: b._ip(i) for i, n in enumerate(b.names)}
    t = time.monotonic()
    rules = [b.rules_for(n) for n in b.names] + [b.desired_state(n) for n in b.names]
    assert time.monotonic() - t < 2.0 and len(rules) == 200     # was ~20 s: every node scanned N^2 links
    assert mac_of("10.213.119.59") == "02:42:0a:d5:77:3b"       # what docker itself gave that address
    b._write_neighbours()
    lines = open(b._neigh_file).read().splitlines()
    assert len(lines) == 100
    assert lines[0] == "neigh replace 10.213.119.10 lladdr 02:42:0a:d5:77:0a dev eth0 nud permanent"


def test_unit_a_network_the_engine_still_counts_endpoints_on_is_asked_again(monkeypatch):
    import docker.errors

    import lab.backends.docker as dk
    monkeypatch.setattr(dk, "KILL_WAIT", 0.3)
    busy = docker.errors.APIError("403", explanation="network x id 1 has active endpoints")

    class Api:
        def __init__(self, fails: int) -> None:
            self.fails, self.calls = fails, 0

        def remove_network(self, net_id: str) -> None:
            self.calls += 1
            if self.calls <= self.fails:
                raise busy

    class Client:
        def __init__(self, fails: int) -> None:
            self.api = Api(fails)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    c = Client(fails=2)
    assert dk._remove_network(c, "1", "x") and c.api.calls == 3
    with pytest.raises(BackendError, match="cannot remove network x: .*active endpoints.*restart the engine"):
        dk._remove_network(Client(fails=10**9), "1", "x")
