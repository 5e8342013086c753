"""The local runtime with Raft: leader crash, partitions, restarts from the durable log.

Every process a test starts is stopped in the fixture's finally, and the test
checks that no pid it started outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lab.backends.local import LocalBackend, proc_state
from lab.cli_lab import run_op
from lab.runner import run_scenario
from lab.targets import partition_cuts
from lab.topology import load_scenario_text

pytestmark = pytest.mark.local

ELECTION = (0.3, 0.6)     # s; wide enough that a loaded test box does not cause spurious elections

RAFT3 = f"""
name: {{name}}
protocol: raft
nodes: 3
config:
  election_timeout: [{int(ELECTION[0] * 1000)}ms, {int(ELECTION[1] * 1000)}ms]
  heartbeat: 50ms
network: {{{{delay: 1ms}}}}
"""


@pytest.fixture
def backends(tmp_path, monkeypatch):
    """make(name) -> a started LocalBackend; all of them are stopped (and checked) afterwards."""
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    made: list[LocalBackend] = []

    def make(name: str) -> LocalBackend:
        b = LocalBackend(load_scenario_text(RAFT3.format(name=name)), 3, str(tmp_path / name))
        made.append(b)
        b.start()
        return b

    try:
        yield make
    finally:
        for b in made:
            b.stop()
        for b in made:
            assert all(proc_state(pid) in (None, "Z") for pid in b.pids.values()), "an agent outlived its test"


def leader_of(b: LocalBackend, among=None, min_term: int = 0, timeout: float = 5.0) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in among or b.names:
            st = b.status(n)
            if st and st.get("role") == "leader" and st.get("term", 0) > min_term:
                return n, st["term"]
        time.sleep(0.05)
    raise AssertionError(f"no leader among {among or b.names} within {timeout}s")


def test_leader_sigkill_new_leader_fast_and_no_acknowledged_write_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "home"))
    # Longer timeouts than the other tests: on a loaded box (xdist workers on 2 cores) timers fire
    # late, and the bound is a multiple of the timeout.
    text = RAFT3.format(name="raft-kill").replace(
        f"[{int(ELECTION[0] * 1000)}ms, {int(ELECTION[1] * 1000)}ms]", "[400ms, 800ms]") + """
workload: {kind: kv, clients: 3, rate: 60/s, duration: 4s, timeout: 1s, keys: 4, read_ratio: 0.5}
faults:
  - {at: 1s, crash: leader}
  - {at: 2500ms, restart: crashed}
checks: [election_safety, log_matching, leader_completeness, state_machine_safety, linearizable]
settle: 1s
"""
    result = run_scenario(load_scenario_text(text), "local", seed=17, out=str(tmp_path / "run"), quiet=True)
    assert [v.verdict for v in result.verdicts] == ["holds"] * 5, [v.as_dict() for v in result.verdicts]
    assert result.exit_code == 0
    trace = result.trace
    assert "election_timeout: [400ms, 800ms]" in text
    crash = next(e for e in trace if e["ev"] == "fault" and e["data"].get("action") == "crash"
                 and e["data"].get("phase") == "apply")
    victim = crash["data"]["target"]
    victim = victim[0] if isinstance(victim, list) else victim
    old_term = max(e["data"]["term"] for e in trace if e["ev"] == "state" and e["node"] == victim
                   and e["data"].get("role") == "leader" and e["ts"] <= crash["ts"])
    new = next(e for e in trace if e["ev"] == "state" and e["data"].get("role") == "leader"
               and e["ts"] > crash["ts"] and e["data"]["term"] > old_term)
    assert new["node"] != victim
    assert new["ts"] - crash["ts"] <= 2 * 0.8, "no new leader within two election timeouts"
    oks = [h for h in result.history if h["type"] == "ok" and h["f"] == "write"]
    assert len(oks) > 5


def test_minority_cannot_commit_majority_can_heal_converges(backends):
    b = backends("raft-part")
    res, _, _ = run_op(b, {"f": "write", "key": "x", "value": 1})
    assert res is not None and res["type"] == "ok", res
    old, term = leader_of(b)
    rest = [n for n in b.names if n != old]
    b.set_cuts(partition_cuts([[old], rest]))
    # The old leader, alone, cannot commit: no ok within well over an election's time.
    res, _, _ = run_op(b, {"f": "write", "key": "x", "value": 2}, first=old, timeout=1.5, redirect=False)
    assert res is None or res.get("type") != "ok", res
    new, new_term = leader_of(b, among=rest, min_term=term)
    res, node, _ = run_op(b, {"f": "write", "key": "x", "value": 3}, first=new, timeout=3)
    assert res is not None and res["type"] == "ok" and node in rest
    b.set_cuts(frozenset())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sts = [b.status(n) for n in b.names]
        if all(sts) and len({(s["term"], s["commit"], s["last_index"]) for s in sts}) == 1 \
                and sum(s["role"] == "leader" for s in sts) == 1:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no convergence after heal: {sts}")
    assert b.status(old)["role"] != "leader" or b.status(old)["term"] > new_term
    res, _, _ = run_op(b, {"f": "read", "key": "x"})
    assert res is not None and res["type"] == "ok" and res.get("value") == 3, res


def test_whole_cluster_sigkill_restart_recovers_the_durable_log(backends):
    b = backends("raft-restart")
    for i in range(15):
        res, _, _ = run_op(b, {"f": "write", "key": f"k{i}", "value": i})
        assert res is not None and res["type"] == "ok", res
    before = {n: b.status(n)["last_index"] for n in b.names}
    for n in b.names:
        b.crash(n)                 # SIGKILL every node: only what was fsync'd can come back
    for n in b.names:
        b.restart(n)
    leader_of(b)
    for n in b.names:
        assert b.status(n)["last_index"] >= min(before.values()) >= 15
    for i in (0, 7, 14):
        res, _, _ = run_op(b, {"f": "read", "key": f"k{i}"})
        assert res is not None and res.get("value") == i, res


def test_pause_leader_then_resume(backends):
    b = backends("raft-pause")
    old, term = leader_of(b)
    b.pause(old)
    assert b.status(old) is None
    new, _ = leader_of(b, among=[n for n in b.names if n != old], min_term=term)
    b.resume(old)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = b.status(old)
        if st and st["role"] == "follower":
            break
        time.sleep(0.05)
    assert st and st["role"] == "follower" and st["term"] > term


def _agents_under(path: str) -> list[int]:
    """Pids of agent processes whose spec lives under ``path``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"nodes.agent" in argv and any(path.encode() in a for a in argv) \
                    and proc_state(int(entry)) not in (None, "Z"):
                out.append(int(entry))
    return out


def test_make_demo_runs_and_leaves_no_process(tmp_path):
    """What `make demo` runs: the demo topology on the local runtime, through the CLI."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "ZLAB_HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-m", "lab.cli", "run", os.path.join(repo, "topologies", "raft-5-demo.yaml"),
                        "--backend", "local", "--out", str(tmp_path / "run"), "--no-progress"],
                       env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert "[ok] linearizable: holds" in p.stdout
        assert _agents_under(str(tmp_path)) == []
        assert not os.listdir(tmp_path / "home")          # the run's keys went with it
    finally:
        for pid in _agents_under(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)


def test_the_run_loop_makes_no_full_garbage_collection_and_puts_the_threshold_back(tmp_path):
    """The clients' many live ops (every one in flight) are not walked by full collections
    while the loop runs; the young generations still are; afterwards the thresholds are back."""
    import gc

    from lab.backends.base import NO_FULL_COLLECTION

    b = LocalBackend(load_scenario_text("name: gc\nprotocol: raft\nnodes: 3\n"), 1, str(tmp_path))
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []
    b.call_at(0.0, lambda: seen.append(gc.get_threshold()))
    b.run_until(b.now() + 0.01)          # nothing started: only the call is due
    assert seen == [(before[0], before[1], NO_FULL_COLLECTION)]
    assert gc.get_threshold() == before
