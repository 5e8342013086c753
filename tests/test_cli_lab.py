"""`zlab up/status/fault/client/logs/down` on the local runtime, driven through lab.cli.main."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from lab import labstate
from lab.backends.local import proc_state
from lab.cli import main

pytestmark = pytest.mark.local

REGISTER = "name: {name}\nprotocol: register\nnodes: 3\n"
RAFT = """name: {name}
protocol: raft
nodes: 3
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms}}
"""


@pytest.fixture
def zlab(tmp_path, monkeypatch, capsys):
    """run(*argv) -> (exit code, stdout); every lab is brought down and its pids checked afterwards."""
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    pids: list[int] = []

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        for name in labstate.names():
            pids.extend(labstate.load(name).get("runtime", {}).get("pids", {}).values())
        return code, out.out + out.err

    def topology(text: str, name: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.format(name=name))
        return str(path)

    run.topology = topology  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        for name in labstate.names():    # this test's labs only: other workers' labs run beside
            main(["down", name])
        deadline = time.monotonic() + 5
        while any(proc_state(p) not in (None, "Z") for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(proc_state(p) in (None, "Z") for p in pids), "zlab down left an agent running"
        assert labstate.names() == []


def _median(out: str) -> float:
    m = re.search(r"median ([\d.]+) ms", out)
    assert m, out
    return float(m.group(1))


def test_register_lab_end_to_end(zlab):
    code, out = zlab("up", zlab.topology(REGISTER, "reg"))
    assert code == 0 and "lab reg is up" in out
    code, out = zlab("up", zlab.topology(REGISTER, "reg"))
    assert code == 3 and "already up" in out
    code, out = zlab("status")
    assert code == 0 and len(re.findall(r"^n\d\s+up\b", out, re.M)) == 3, out
    assert zlab("client", "reg", "put", "x", "42")[0] == 0
    code, out = zlab("client", "reg", "get", "x")
    assert code == 0 and out.startswith("ok")

    base = _median(zlab("client", "reg", "echo", "n1", "n2", "--count", "5")[1])
    code, out = zlab("fault", "reg", "delay", "n1", "100ms", "--to", "n2", "--jitter", "5ms")
    assert code == 0 and "delay 100ms" in out
    slow = _median(zlab("client", "reg", "echo", "n1", "n2", "--count", "3")[1])
    assert slow >= 90 > base
    # Other links are untouched.
    assert _median(zlab("client", "reg", "echo", "n1", "n3", "--count", "3")[1]) < 50
    code, out = zlab("status", "reg")
    assert "shaped n1->n2" in out
    code, out = zlab("fault", "reg", "partition", "n1", "n2,n3")
    assert code == 0 and "4 directed links cut" in out
    code, out = zlab("client", "reg", "echo", "n1", "n2", "--count", "1")
    assert code == 2 and "no answer" in out
    code, out = zlab("fault", "reg", "heal")
    assert code == 0 and "healed" in out
    assert _median(zlab("client", "reg", "echo", "n1", "n2", "--count", "3")[1]) < 50

    assert zlab("fault", "reg", "crash", "n2")[0] == 0
    code, out = zlab("status", "reg")
    assert re.search(r"^n2\s+down", out, re.M) and "n2 crashed" in out
    assert zlab("fault", "reg", "restart", "n2")[0] == 0
    code, out = zlab("logs", "reg", "n2")
    assert code == 0 and "recovered n2" in out
    assert zlab("fault", "reg", "pause", "n3")[0] == 0
    code, out = zlab("status", "reg")
    assert re.search(r"^n3\s+paused", out, re.M)
    assert zlab("fault", "reg", "resume", "n3")[0] == 0
    code, out = zlab("logs", "reg", "n1", "--trace", "--lines", "3")
    assert code == 0 and all(json.loads(line)["node"] == "n1" for line in out.splitlines())

    code, out = zlab("fault", "reg", "delay", "n9", "5ms")
    assert code == 3 and "no node 'n9'" in out
    code, out = zlab("fault", "reg", "loss", "n1", "lots")
    assert code == 3 and "loss" in out
    state_dir = labstate.lab_dir("reg")
    code, out = zlab("down", "reg")
    assert code == 0 and not os.path.exists(state_dir)
    assert zlab("status", "reg")[0] == 3


def _statuses(zlab, name):
    code, out = zlab("status", name, "--json")
    assert code == 0
    return {n: (a or {}).get("core") for n, a in json.loads(out).items()}


def test_partition_stops_commits_on_the_minority_and_heal_undoes_it(zlab):
    assert zlab("up", zlab.topology(RAFT, "rf"))[0] == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sts = _statuses(zlab, "rf")
        leaders = [n for n, s in sts.items() if s and s["role"] == "leader"]
        if leaders:
            break
        time.sleep(0.1)
    old = leaders[0]
    rest = [n for n in sts if n != old]
    for _ in range(5):
        code, out = zlab("client", "rf", "put", "x", "1")
        if code == 0:
            break
    assert code == 0, out
    code, out = zlab("fault", "rf", "partition", old, ",".join(rest))
    assert code == 0
    # Clients still succeed (through the majority); the minority's commit index stands still.
    for i in range(3):
        for _ in range(5):      # an op cut short by an election (a loaded test box) is retried
            code, out = zlab("client", "rf", "put", "x", str(10 + i))
            if code == 0:
                break
        assert code == 0, out
    sts = _statuses(zlab, "rf")
    assert all(sts[n]["commit"] > sts[old]["commit"] for n in rest), sts
    assert zlab("fault", "rf", "heal")[0] == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sts = _statuses(zlab, "rf")
        if len({s["commit"] for s in sts.values()}) == 1:
            break
        time.sleep(0.1)
    assert len({s["commit"] for s in sts.values()}) == 1, sts
    code, out = zlab("client", "rf", "get", "x")
    assert code == 0 and "x = 12" in out


def test_keys_are_private_and_per_lab(tmp_path):
    from lab.keys import ensure_keys
    a = ensure_keys(str(tmp_path / "a"))
    b = ensure_keys(str(tmp_path / "b"))
    assert a.server_public != b.server_public and a.client_public != b.client_public
    assert ensure_keys(str(tmp_path / "a")) == a                  # loaded, not made again
    for name in ("server.key_secret", "client.key_secret"):
        assert os.stat(tmp_path / "a" / name).st_mode & 0o077 == 0


def test_labstate_names_and_errors(tmp_path, monkeypatch):
    from lab.errors import ConfigError
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path))
    assert labstate.names() == []
    with pytest.raises(ConfigError, match="no lab is up"):
        labstate.only_lab(None)
    labstate.save("one", {"kind": "local"})
    assert labstate.only_lab(None) == "one" and labstate.load("one") == {"kind": "local"}
    labstate.save("two", {"kind": "local"})
    with pytest.raises(ConfigError, match="several labs"):
        labstate.only_lab(None)
    with pytest.raises(ConfigError, match="no lab named 'three'"):
        labstate.load("three")
    with pytest.raises(ConfigError, match="bad lab name"):
        labstate.lab_dir("../x")
    labstate.remove("one")
    assert labstate.names() == ["two"]


def test_down_all_sweeps_only_its_own_owner_label(tmp_path, monkeypatch, capsys) -> None:
    """`zlab down --all` must not remove labs another owner (a test session, a colleague) runs."""
    import lab.backends.docker as dk
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZLAB_OWNER", "alice")
    calls: list[dict] = []

    def fake_down_all(lab=None, *, owner=None, client=None):
        calls.append({"lab": lab, "owner": owner})
        return {"containers": ["x-n1"], "networks": ["x"], "volumes": []}

    monkeypatch.setattr(dk, "docker_client", lambda: object())
    monkeypatch.setattr(dk, "down_all", fake_down_all)
    assert main(["down", "--all"]) == 0
    assert calls == [{"lab": None, "owner": "alice"}]
    assert "removed by label: 1 containers, 1 networks" in capsys.readouterr().out
