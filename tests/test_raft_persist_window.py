"""The leader replicates while it writes its own log (Raft thesis 10.2.1): its AppendEntries
leave before its write is durable, and it counts itself in the quorum only once
``handle_persisted`` says the write is on disk. A crash in that window loses the leader's
copy, never an acknowledged write; a leader that counted itself at once (``EagerLeader``,
the bug this guard prevents) loses one."""

from __future__ import annotations

from typing import Any

import pytest
from raftnet import Net
from test_raft_sweep import churn_step, schedule

from lab.checks.base import HOLDS, VIOLATED
from lab.runner import run_scenario
from lab.sim import SimBackend
from nodes.protocols.raft import MSG_APP, Raft


class EagerLeader(Raft):
    """The bug: the leader counts its whole log in the quorum before its write is durable."""

    def own_match(self) -> int:
        return self.last_index


def window(core: type[Raft] = Raft) -> tuple[Net, dict[str, Any] | None]:
    """n1 leads; n3 hears nothing from it; n1's next write is still on its way to its disk when
    n2's acknowledgement comes back. Returns the net and the client's answer (None: none)."""
    net = Net(3, core=core)
    net.elect("n1")
    net.heartbeat("n1")
    net.cut("n1", "n3")
    net.hold_writes("n1")
    answer = net.client_op("n1", {"f": "write", "key": "x", "value": 1}, process=1)
    return net, answer


def crash_and_elect_n3(net: Net) -> dict[str, Any] | None:
    """n1's heartbeat tells n2 its commit index; n1 dies before its fsync; back up, it votes n3 (whose log it now matches) into office,
    and n3's log replaces n2's copy of the write. Returns a read of x through n3."""
    net.heartbeat("n1")
    net.crash("n1")
    net.hold_writes("n1", False)
    net.restart("n1")
    net.recover()
    net.cut("n2", "n3")
    net.elect("n3")
    net.recover()
    net.heartbeat("n3")
    return net.client_op("n3", {"f": "read", "key": "x"}, process=2)


def test_the_appends_leave_before_the_leaders_write_is_durable() -> None:
    assert MSG_APP in Raft.early_sends
    net, answer = window()
    n1 = net.core("n1")
    assert net.core("n2").last_index == n1.last_index == 2        # n2 has it: the append left
    assert net.core("n2").log[2] == n1.log[2]
    assert net.storage["n1"].unsynced                            # n1's own copy is not on disk
    assert n1.progress["n2"].match == 2                          # n2's answer came back
    assert answer is None and n1.commit == 1                     # one durable copy of two: no commit
    net.persist("n1")
    assert n1.commit == 2 and net.replies_to("c1") == [{"type": "ok"}]


def test_a_leader_crash_before_its_fsync_loses_nothing_acknowledged() -> None:
    net, answer = window()
    assert answer is None
    assert crash_and_elect_n3(net) == {"type": "ok", "value": None}
    assert net.verdicts() == dict.fromkeys(net.verdicts(), HOLDS)


def test_a_leader_that_counts_itself_before_its_fsync_loses_a_committed_entry() -> None:
    net, answer = window(EagerLeader)
    # Committed on n2's copy alone (the answer waits for n1's disk, but n2 learns the commit).
    assert net.core("n1").commit == 2 and answer is None
    assert crash_and_elect_n3(net) == {"type": "ok", "value": None}
    verdicts = net.verdicts()
    assert verdicts["state_machine_safety"] == verdicts["leader_completeness"] == VIOLATED, verdicts


def test_writes_a_crash_takes_back_are_the_unsynced_ones_only() -> None:
    net, _ = window()
    before = net.storage["n1"].get("hard")
    net.crash("n1")
    assert net.storage["n1"].get("hard") == before
    assert [e[0] for e in net.storage["n1"].log_read("log")] == [1]       # the no-op only


@pytest.mark.sim
def test_the_simulator_models_the_window_and_every_check_holds_with_crashes_in_it(monkeypatch) -> None:
    """With a disk slower than the network, a leader's followers answer before its own write is
    durable, so random leader crashes strike inside the window; no check may fail."""
    monkeypatch.setattr(SimBackend, "persist_delay", 0.003)
    failures = []
    for i in range(12):
        s, seed = schedule(i, kinds=churn_step, n=3, duration=3.0, steps=(4, 8), delay=0.001,
                           jitter=0.0005, rate=200.0)
        r = run_scenario(s, "sim", seed=seed, quiet=True, write=False, time_limit=10.0)
        if r.exit_code != 0:
            failures.append(f"schedule {i} seed {seed}: " + "; ".join(
                f"{v.check} {v.verdict} {v.detail}" for v in r.verdicts if v.verdict != HOLDS))
    assert not failures, "\n".join(failures)


@pytest.mark.sim
def test_in_the_simulator_the_appends_leave_first_and_a_crash_before_the_disk_loses_its_copy(monkeypatch) -> None:
    from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario

    monkeypatch.setattr(SimBackend, "persist_delay", 0.01)
    scenario = Scenario(name="w", protocol="raft", nodes=[NodeSpec(f"n{i}") for i in (1, 2, 3)],
                        network=NetworkSpec(default=LinkParams(delay=0.001)))
    sim = SimBackend(scenario, 3, "/nonexistent")
    sim.start()
    sim.run_until(1.0)
    while any(sim.storage(n).unsynced for n in ("n1", "n2", "n3")):
        sim.run_until(sim.now() + 0.001)      # start with every disk idle
    (leader,) = [n for n in ("n1", "n2", "n3") if (sim.status(n) or {}).get("role") == "leader"]
    core = sim.core(leader)
    out: list[dict[str, Any]] = []
    sim.submit(leader, {"f": "write", "key": "x", "value": 1, "client": "c", "seq": 1}, out.append)
    index = core.last_index + 1
    sim.run_until(sim.now() + 0.005)           # request in, appends out and taken in: disks still busy
    assert all(sim.core(p).last_index >= index for p in core.peers)
    assert out == [] and sim.storage(leader).unsynced             # its own write is not on disk
    sim.crash(leader)
    sim.run_until(sim.now() + 1.0)
    assert out == [] and len(sim.storage(leader).log_read("log")) == index - 1
    sim.restart(leader)
    sim.run_until(sim.now() + 1.0)
    # The followers' copies made it a committed entry: the new leader has it in its log.
    (new,) = [n for n in ("n1", "n2", "n3") if (sim.status(n) or {}).get("role") == "leader"]
    assert sim.core(new).commit >= index
