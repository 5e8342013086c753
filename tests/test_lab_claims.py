"""One name, one lab; a failed start removes only what it made; nothing a killed command started
outlives `zlab down --all` (issue 14, items 1-3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from lab import labstate
from lab.backends.local import agents_under, proc_state
from lab.cli import main
from lab.errors import BackendError, ConfigError

REGISTER = "name: {name}\nprotocol: register\nnodes: 3\n"


def zlab(*argv: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lab.cli", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """A ZLAB_HOME of the test's own (in-process and for child commands); checked empty at the end."""
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    # `down --all` also sweeps docker by owner: an owner of this test's own, so the sweep never
    # touches the labs other tests of the session run beside it.
    monkeypatch.setenv("ZLAB_OWNER", f"claims-{uuid.uuid4().hex[:8]}")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    yield {**os.environ, "PYTHONPATH": repo}
    for name in labstate.names() + labstate.leftovers():
        main(["down", name])
    assert not agents_under(str(tmp_path / "home")), "an agent outlived the test"


def topology(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(REGISTER.format(name=name))
    return str(path)


def wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.local
def test_two_concurrent_ups_of_one_name_make_one_lab(home, tmp_path, capsys):
    topo = topology(tmp_path, "same")
    procs = [zlab("up", topo, "--name", "same", env=home) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)]
    assert loser[1].count("\n") == 1 and "'same'" in loser[1], loser
    d = labstate.lab_dir("same")
    assert len(agents_under(d)) == 3
    assert main(["down", "same"]) == 0
    assert agents_under(d) == {} and not os.path.exists(d)


@pytest.mark.local
def test_down_all_finds_what_a_killed_up_and_a_killed_run_started(home, tmp_path, capsys):
    # `zlab up` killed as soon as its agents run, before it could write a state file.
    up = zlab("up", topology(tmp_path, "k9"), "--name", "k9", env=home)
    d_up = labstate.lab_dir("k9")
    wait_until(lambda: len(agents_under(d_up)) == 3 or up.poll() is not None)
    up.send_signal(signal.SIGKILL)
    up.wait(10)
    # A run (agents that watch their orchestrator) killed while one node is paused.
    code = ("import sys, time\n"
            "from lab.backends.local import LocalBackend\n"
            "from lab.scenario import NodeSpec, Scenario\n"
            "b = LocalBackend(Scenario(name='p', protocol='register', nodes=[NodeSpec('n1'), NodeSpec('n2')]),"
            f" 1, {str(tmp_path / 'run')!r}, lab='paused-run')\n"
            "b.start(); b.pause('n1'); print(b.pids['n1'], flush=True); time.sleep(60)\n")
    run = subprocess.Popen([sys.executable, "-c", code], env=home, text=True, stdout=subprocess.PIPE)
    paused = int(run.stdout.readline())
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    d_run = labstate.lab_dir("paused-run")
    wait_until(lambda: list(agents_under(d_run)) == [paused])   # the other agent saw its parent go
    assert proc_state(paused) in ("T", "t")
    assert os.path.isdir(os.path.join(d_run, "keys"))
    assert sorted(labstate.leftovers()) == ["k9", "paused-run"] and labstate.names() == []

    assert main(["down", "--all"]) == 0
    out = capsys.readouterr().out
    assert "lab k9 is down" in out and "lab paused-run is down" in out and "1 agents" in out, out
    assert agents_under(d_up) == {} and agents_under(d_run) == {}
    assert not os.path.exists(d_up) and not os.path.exists(d_run)
    assert main(["down", "--all"]) == 0 and "no lab was up" in capsys.readouterr().out


def test_claims_refuse_a_taken_name_and_tell_a_live_claim_from_a_dead_one(home, tmp_path):
    d = labstate.lab_dir("c")
    labstate.claim(d, {"kind": "local", "command": "up"})
    with pytest.raises(ConfigError, match="being started by another command"):
        labstate.claim(d, {"kind": "local", "command": "up"})
    assert labstate.leftovers() == []                   # its claimant (this process) runs
    # The same pid, but a different process start: the claimant is gone (a reused pid).
    rec = labstate.read_claim(d)
    labstate.remove("c")
    labstate.claim(d, {"kind": "local"})
    with open(os.path.join(d, labstate.CLAIM_FILE), "w") as f:
        f.write(f'{{"pid": {rec["pid"]}, "pid_start": {rec["pid_start"] - 1}}}')
    assert labstate.leftovers() == ["c"]
    with pytest.raises(ConfigError, match="left by a command that died: `zlab down c`"):
        labstate.claim(d, {"kind": "local"})
    # Of many claims at once exactly one wins.
    wins: list[str] = []

    def race(i: int) -> None:
        try:
            labstate.claim(labstate.lab_dir("r"), {"i": i})
            wins.append(str(i))
        except ConfigError:
            pass
    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and labstate.read_claim(labstate.lab_dir("r"))["i"] == int(wins[0])


def test_agents_under_matches_only_agents_with_specs_below_the_directory(home, tmp_path):
    d = str(tmp_path / "home" / "lab")
    fake = "import time; time.sleep(30)"
    procs = [subprocess.Popen([sys.executable, "-c", fake, "nodes.agent", "--spec", spec])
             for spec in (f"{d}/specs/n1.json", f"{d}x/specs/n1.json", f"{tmp_path}/other/n1.json")]
    try:
        wait_until(lambda: len(agents_under(str(tmp_path))) == 3)
        assert list(agents_under(d)) == [procs[0].pid]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _sorted(found: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: sorted(v) for k, v in found.items()}


@pytest.mark.docker
def test_failed_up_of_a_taken_name_leaves_the_other_lab_intact(zlab_image, tmp_path, monkeypatch):
    from lab.backends.docker import docker_client, down_all, list_labelled
    base = f"dk-own-{os.getpid()}"
    topo = str(tmp_path / "reg.yaml")
    with open(topo, "w") as f:
        f.write("name: reg\nprotocol: register\nnodes: 2\n")
    client = docker_client()
    try:
        monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "h1"))
        assert main(["up", topo, "--backend", "docker", "--name", f"{base} x"]) == 0
        lab = f"{base}-x"
        before = list_labelled(client, lab)
        assert len(before["containers"]) == 2 and before["networks"] == [lab] and len(before["volumes"]) == 2
        # Its nodes know each other's addresses for good (no ARP entries that a big lab overflows).
        neigh = client.containers.get(f"{lab}-n1").exec_run(["ip", "neigh"]).output.decode()
        assert "02:42:" in neigh and "PERMANENT" in neigh, neigh
        # Another user, another state dir, the same docker name ("x y" and "x-y" both become x-y).
        owner = os.environ["ZLAB_OWNER"]
        monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "h2"))
        monkeypatch.setenv("ZLAB_OWNER", owner + "-b")
        assert main(["up", topo, "--backend", "docker", "--name", lab]) == 3
        assert _sorted(list_labelled(client, lab)) == _sorted(before)
        monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "h1"))
        monkeypatch.setenv("ZLAB_OWNER", owner)
        assert main(["client", f"{base} x", "put", "k", "1"]) == 0
        assert main(["down", f"{base} x"]) == 0
        assert list_labelled(client, lab) == {"containers": [], "networks": [], "volumes": []}
    finally:
        down_all(f"{base}-x", client=client)


@pytest.mark.docker
def test_only_one_of_concurrent_network_claims_wins(zlab_image, tmp_path):
    from lab.backends.docker import DockerBackend, docker_client, down_all
    from lab.scenario import NodeSpec, Scenario
    lab = f"dk-net-{os.getpid()}"
    scenario = Scenario(name="n", protocol="register", nodes=[NodeSpec("n1")])
    backends = [DockerBackend(scenario, 1, str(tmp_path), lab=lab, image=zlab_image) for _ in range(4)]
    results: list[str] = []

    def claim(b: DockerBackend) -> None:
        try:
            b._create_network()
            results.append("won")
        except BackendError as e:
            results.append(str(e))
    threads = [threading.Thread(target=claim, args=(b,)) for b in backends]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("won") == 1, results
        assert all("already exists" in r for r in results if r != "won"), results
        client = docker_client()
        assert [n["Name"] for n in client.api.networks(names=[lab]) if n["Name"] == lab] == [lab]
    finally:
        down_all(lab)
