"""The node agent as a process: fuzzed frames, control authentication, durability, shutdown."""

from __future__ import annotations

import json
import os
import random
import time

import msgpack
import pytest
import zmq

from lab.agent_client import AgentClient
from lab.backends.local import LocalBackend, proc_state
from lab.keys import random_client_keys
from lab.scenario import NodeSpec, Scenario
from nodes import wire

pytestmark = pytest.mark.local


def _register_lab(tmp_path, n=2, name="agent-test"):
    sc = Scenario(name=name, protocol="register", nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)])
    return LocalBackend(sc, 5, str(tmp_path / "run"))


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    b = _register_lab(tmp_path)
    try:
        b.start()
        yield b
    finally:
        b.stop()
        assert all(proc_state(pid) in (None, "Z") for pid in b.pids.values())


def call(b, node, op, timeout=3.0):
    box = []
    b.submit(node, op, box.append)
    assert b.wait_for(lambda: bool(box), timeout), f"{node} did not answer {op}: {b.agent_status(node)}"
    return box[0]


def _trace(b, node):
    return [json.loads(line) for line in b.read_node_file(node, "trace.jsonl").splitlines()]


def test_echo_trace_has_matching_mids_and_lamport_order(lab):
    assert call(lab, "n1", {"f": "echo", "peer": "n2"}) == {"type": "ok", "value": "n2"}
    # A control round trip to each node: its trace lines of earlier loop iterations are written.
    assert lab.agent_status("n1", 5) is not None and lab.agent_status("n2", 5) is not None
    sends = {e["mid"]: e for e in _trace(lab, "n1") if e["ev"] == "send"}
    recvs = [e for e in _trace(lab, "n2") if e["ev"] == "recv"]
    assert recvs and recvs[0]["mid"] in sends
    assert recvs[0]["lc"] > sends[recvs[0]["mid"]]["lc"]
    assert recvs[0]["peer"] == "n1" and recvs[0]["type"] == "echo"


def _envelope(**over):
    m = {"v": 1, "lab": "LAB", "src": "n2", "dst": "n1", "id": "x.1", "type": "echo", "body": {"client": "zz"}}
    m.update(over)
    return m


def test_fuzzed_peer_frames_are_dropped_counted_and_survived(lab):
    rng = random.Random(1234)
    good = msgpack.packb(_envelope(lab=lab.lab))
    kinds = [
        lambda: rng.randbytes(rng.randrange(0, 300)),                              # noise
        lambda: good[: rng.randrange(0, len(good))],                               # truncated
        lambda: msgpack.packb(_envelope(lab="other-lab")),                         # unknown_lab
        lambda: msgpack.packb(_envelope(lab=lab.lab, v=rng.choice([0, 2, "1"]))),  # bad_version
        lambda: msgpack.packb(_envelope(lab=lab.lab, type="nonsense")),            # unknown_type
        lambda: msgpack.packb(_envelope(lab=lab.lab, body=[1, 2])),                # malformed
        lambda: msgpack.packb(_envelope(lab=lab.lab, dst="n7")),                   # not for this node
        lambda: msgpack.packb(_envelope(lab=lab.lab, type="echo_reply", body={})), # the core raises on it
        lambda: msgpack.packb([1, 2, 3]),
    ]
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(lab.addresses["n1"].peer)
    try:
        sent = 0
        for i in range(3000):
            frame = kinds[i % len(kinds)]()
            if i % 500 == 7:
                s.send_multipart([b"a", b"b", frame])                              # wrong frame count
            else:
                s.send(frame)
            sent += 1
        s.send(b"\x00" * (wire.MAX_MESSAGE_SIZE + 10))   # oversize: libzmq drops the connection
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = lab.agent_status("n1")
            c = st["counters"]
            if sum(c["dropped"].values()) + c.get("handler_errors", 0) + c.get("recv", 0) >= sent - 10:
                break
            time.sleep(0.05)
    finally:
        s.close(0)
    dropped = c["dropped"]
    for reason in ("malformed", "unknown_lab", "bad_version", "unknown_type"):
        assert dropped.get(reason, 0) > 100, (reason, dropped)
    assert c["handler_errors"] > 100
    # Still serving: clients, peers, and its own messages.
    assert call(lab, "n1", {"f": "echo", "peer": "n2"})["type"] == "ok"
    assert call(lab, "n1", {"f": "write", "value": 9}) == {"type": "ok"}
    drops = [e for e in _trace(lab, "n1") if e["ev"] == "drop"]
    assert {e["data"]["reason"] for e in drops} >= {"malformed", "unknown_lab", "bad_version", "unknown_type"}


def test_fuzzed_control_frames_from_the_right_client_get_errors_not_a_crash(lab):
    c = lab.clients["n1"]
    rng = random.Random(5)
    for _ in range(500):
        c.socket.send(rng.randbytes(rng.randrange(0, 64)))
    # ids far from the client's own, so no answer is taken for the status call's
    for bad in ({"op": "nope", "id": -1}, {"op": "submit", "id": -2, "req": 5},
                {"op": "set_rules", "id": -3, "links": {"n2": {"loss": 7}}},
                {"op": "read_file", "id": -4, "name": "../../etc/passwd"}, [1, 2]):
        c.socket.send(msgpack.packb(bad))
    ans = c.call("status", 3)
    assert ans is not None and ans["counters"]["control_errors"] >= 4
    assert ans["rules"]["links"] == {}              # the bad set_rules changed nothing


def test_submits_of_one_turn_go_as_one_frame_and_each_gets_its_answer(lab):
    c = lab.clients["n1"]
    box = []
    for i in range(50):
        lab.submit("n1", {"f": "write", "value": i}, box.append)
    c.batch.insert(25, {"op": "submit", "id": -7, "req": 5})     # a bad one amid the batch
    assert len(c.batch) == 51                   # nothing sent until the backend waits
    assert lab.wait_for(lambda: len(box) == 50, 10) and c.batch == []
    assert all(r == {"type": "ok"} for r in box)
    assert call(lab, "n1", {"f": "read"}) == {"type": "ok", "value": 49}
    assert lab.agent_status("n1")["counters"]["requests"] == 51     # the bad one was refused alone


@pytest.mark.parametrize("intruder", ["other_keys", "no_curve"])
def test_control_client_with_the_wrong_key_gets_nothing_and_changes_nothing(lab, intruder):
    ep = lab.addresses["n1"].control
    keys = lab.keys
    if intruder == "other_keys":
        pub, sec = random_client_keys()
        bad = AgentClient(ep, keys.server_public, pub, sec)
        sock = bad.socket
    else:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ep)
    try:
        for msg in ({"op": "set_rules", "id": 1, "cut_out": ["n2"], "cut_in": ["n2"]},
                    {"op": "submit", "id": 2, "req": {"f": "write", "value": "pwned"}},
                    {"op": "shutdown", "id": 3}, {"op": "status", "id": 4}):
            sock.send(msgpack.packb(msg))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        assert poller.poll(1500) == []                  # no answer at all
    finally:
        sock.close(0)
    st = lab.agent_status("n1", 5)
    assert st is not None                                # not shut down
    assert st["rules"] == {"cut_out": [], "cut_in": [], "links": {}}
    assert st["counters"].get("requests", 0) == 0
    assert call(lab, "n1", {"f": "read"}) == {"type": "ok", "value": None}
    if intruder == "other_keys":
        assert st["counters"]["auth_denied"] >= 1


def test_writes_are_group_committed_and_survive_sigkill(lab):
    box = []
    for i in range(300):
        lab.submit("n1", {"f": "write", "value": i}, box.append)
    assert lab.wait_for(lambda: len(box) == 300, 20)
    assert all(r == {"type": "ok"} for r in box)
    fsyncs = lab.agent_status("n1")["counters"]["fsyncs"]
    assert 1 <= fsyncs < 150                             # many writes per fsync
    lc_before = lab.agent_status("n1")["lc"]
    assert call(lab, "n1", {"f": "echo", "peer": "n2"})["type"] == "ok"
    lab.crash("n1")                                      # SIGKILL right after the last ok
    assert lab.status("n1") is None
    lab.restart("n1")
    assert call(lab, "n1", {"f": "read"}) == {"type": "ok", "value": 299}
    st = lab.agent_status("n1")
    assert st["lc"] > lc_before                          # the Lamport clock goes on across restarts
    msgs = [e["data"]["msg"] for e in _trace(lab, "n1") if e["ev"] == "log"]
    assert msgs[0] == "started" and "recovered" in msgs


def test_sigterm_is_a_graceful_stop(tmp_path, monkeypatch):
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    b = _register_lab(tmp_path, n=1, name="term")
    try:
        b.start()
        assert call(b, "n1", {"f": "write", "value": 1}) == {"type": "ok"}
    finally:
        b.stop()
    assert b.procs["n1"].returncode == 0
    events = [json.loads(x) for x in open(os.path.join(b._data_dir("n1"), "trace.jsonl"))]
    assert events[-1]["ev"] == "log" and events[-1]["data"]["msg"] == "stopped"
    assert not os.path.exists(b.state_dir)                # a run's keys go with it


def test_agent_exits_when_its_orchestrator_is_gone(tmp_path, monkeypatch):
    """Agents of a run watch the orchestrator's pid: a SIGKILLed orchestrator leaves no agents."""
    import subprocess
    import sys
    code = (
        "import sys, time\n"
        "from lab.scenario import NodeSpec, Scenario\n"
        "from lab.backends.local import LocalBackend\n"
        "b = LocalBackend(Scenario(name='orphan', protocol='register', nodes=[NodeSpec('n1')]), 1, sys.argv[1])\n"
        "b.start(); print(b.pids['n1'], flush=True); time.sleep(60)\n")
    env = {**os.environ, "ZLAB_HOME": str(tmp_path / "home")}
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, env=env)
    try:
        pid = int(p.stdout.readline())
        p.kill()
        p.wait(5)
        deadline = time.monotonic() + 5
        while proc_state(pid) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc_state(pid) in (None, "Z")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        p.stdout.close()


def test_inline_keys_spec_as_containers_use_it(tmp_path, monkeypatch):
    """The docker runtime passes the keys inside the spec instead of as files."""
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))

    class InlineKeys(LocalBackend):
        def _keys_spec(self):
            return self.keys.spec_inline()

    b = InlineKeys(Scenario(name="inline", protocol="register", nodes=[NodeSpec("n1")]), 1, str(tmp_path / "run"))
    try:
        b.start()
        spec = json.load(open(os.path.join(b.state_dir, "specs", "n1.json")))
        assert set(spec["keys"]) == {"server_public", "server_secret", "client_public"}
        assert call(b, "n1", {"f": "write", "value": 1}) == {"type": "ok"}
    finally:
        b.stop()


def test_agent_that_cannot_start_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    sc = Scenario(name="bad", protocol="register", nodes=[NodeSpec("n1")], config={"no_such_knob": 1})
    b = LocalBackend(sc, 1, str(tmp_path / "run"))
    from lab.errors import BackendError
    with pytest.raises(BackendError, match="n1's agent exited"):
        b.start()
    assert all(proc_state(pid) in (None, "Z") for pid in b.pids.values())
