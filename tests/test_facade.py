"""zlab.Lab on the simulator: blocking calls and their history, typed errors, faults by the
timeline's verbs and targets, checks with final reads, the run directory, determinism.

The examples (examples/test_*.py) run the same facade on local processes and containers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.cli import check_run_dir
from lab.errors import ConfigError, LabError
from lab.history import pair_ops
from lab.topology import load_scenario
from zlab import Lab, Unavailable, Unknown, Unsafe, WaitTimeout

pytestmark = pytest.mark.sim

RAFT3 = """
name: lab-raft
protocol: raft
nodes: 3
config: {election_timeout: [150ms, 300ms], heartbeat: 50ms}
network: {delay: 2ms}
settle: 500ms
"""
BANK = """
name: lab-bank
protocol: twopc
nodes:
  - {name: coord, role: coordinator}
  - {name: p1, role: participant}
  - {name: p2, role: participant}
config: {accounts: 4, initial_balance: 100}
network: {delay: 2ms}
settle: 500ms
"""


def lab(text: str = RAFT3, **kw: Any) -> Lab:
    return Lab(text, backend="sim", **kw).start()


def ops(lab: Lab) -> list[tuple[str, Any, Any, Any, str]]:
    return [(o.f, o.key, o.value_in, o.value_out, o.outcome) for o in pair_ops(lab.history.events)]


def test_calls_block_until_their_outcome_and_record_a_jepsen_history() -> None:
    with lab() as la:
        la.wait_for_leader()
        la.put("x", 1)
        # the call returned at the very event that recorded its outcome, not at a polling step
        assert la.history.events[-1]["type"] == "ok"
        assert la.history.events[-1]["ts"] == round(la.backend.now(), 6)
        assert la.get("x") == 1 and la.get("nope") is None
        assert la.cas("x", 1, 2) is True
        assert la.cas("x", 1, 3) is False           # a failed compare is an answer, not an error
        la.delete("x")
        assert la.get("x") is None
        assert ops(la) == [("write", "x", 1, 1, "ok"), ("read", "x", None, 1, "ok"),
                           ("read", "nope", None, None, "ok"), ("cas", "x", [1, 2], [1, 2], "ok"),
                           ("cas", "x", [1, 3], [1, 3], "fail"), ("delete", "x", None, None, "ok"),
                           ("read", "x", None, None, "ok")]
        assert {e["process"] for e in la.history.events} == {0}    # one client, one op at a time


def test_no_answer_is_unknown_and_the_client_goes_on_as_a_fresh_process() -> None:
    with lab(timeout="300ms") as la:
        old = la.wait_for_leader()
        la.put("x", 1)
        la.partition(old, "rest")
        t = la.now()
        with pytest.raises(Unknown) as e:
            la.put("x", 2, node=old)                # taken by a leader that cannot commit it
        assert e.value.outcome == "info" and e.value.error == "timeout"
        assert la.now() - t == pytest.approx(0.3, abs=0.002)    # the lab's timeout, in virtual time
        la.wait_for_leader(exclude=old)
        la.put("x", 3)
        procs = [ev["process"] for ev in la.history.events]
        assert procs[-1] == procs[-2] != procs[0]   # the info retired process 0
        la.heal()
        assert la.get("x") == 3


def test_an_op_every_node_refuses_is_unavailable_and_definitely_failed() -> None:
    cfg = {"check_quorum": True}
    with lab(config=cfg, timeout="1s") as la:
        la.wait_for_leader()
        la.partition(["n1"], ["n2"], ["n3"])        # nobody can lead: each answers not_leader
        la.sleep(1)
        assert la.leader() is None
        with pytest.raises(Unavailable) as e:
            la.put("x", 1)
        assert e.value.outcome == "fail" and e.value.error == "unavailable"
        assert ops(la)[-1] == ("write", "x", 1, 1, "fail")


def test_faults_take_the_timelines_verbs_and_symbolic_targets() -> None:
    with lab() as la:
        leader = la.wait_for_leader()
        assert la.crash("leader") == [leader]
        assert la.status()[leader]["state"] == "crashed"
        la.wait_for_leader(exclude=leader)
        assert la.restart() == [leader]             # default target: crashed
        assert la.partition("leader", "rest")[1] == [n for n in la.nodes if n != la.leader()]
        la.heal()
        assert la.delay("100ms", from_="n1", to="rest", oneway=True) == [("n1", "n2"), ("n1", "n3")]
        assert sorted(la.loss("20%", nodes="n3")) == [("n1", "n3"), ("n2", "n3"), ("n3", "n1"),
                                                     ("n3", "n2")]
        assert la.pause("n2", duration=0.5) == ["n2"]
        assert la.status()["n2"]["state"] == "paused"
        la.sleep(0.6)                               # its `for` ran out: resumed
        assert la.status()["n2"]["state"] == "up"
        assert la.crash("n3", at="200ms") is None   # scheduled, applied while the lab runs
        la.sleep(0.1)
        assert la.status()["n3"]["state"] == "up"
        la.sleep(0.2)
        assert la.status()["n3"]["state"] == "crashed"
        faults = [(e["data"]["action"], e["data"]["phase"]) for e in la.trace() if e["ev"] == "fault"]
        assert ("pause", "apply") in faults and ("resume", "revert") in faults


def test_bad_fault_arguments_say_which_call_and_what() -> None:
    with lab() as la:
        with pytest.raises(ConfigError, match=r"lab\.crash\(\): crash: no node or target named 'n9'"):
            la.crash("n9")
        with pytest.raises(ConfigError, match="rest means the nodes"):
            la.crash("rest")
        with pytest.raises(ConfigError, match="expected a percentage like 5%"):
            la.loss(0.05)
        with pytest.raises(ConfigError, match="heal cannot be reverted"):
            la.fault(heal="all", duration="1s")


def test_status_is_a_table_of_states_and_the_cores_status() -> None:
    with lab() as la:
        leader = la.wait_for_leader()
        la.crash([n for n in la.nodes if n != leader][0])
        st = la.status()
        assert st[leader]["role"] == "leader" and st[leader]["state"] == "up"
        lines = str(st).splitlines()
        assert lines[0].split()[:4] == ["node", "state", "role", "term"]
        assert len(lines) == 4 and "crashed" in str(st)


def test_wait_for_leader_times_out_with_the_status_table() -> None:
    with lab() as la:
        la.wait_for_leader()
        leader = la.crash("leader")[0]
        la.crash(next(n for n in la.nodes if n != leader))      # two of three down: no majority
        with pytest.raises(WaitTimeout, match="waited 1s for a leader in vain") as e:
            la.wait_for_leader(timeout=1)
        assert isinstance(e.value, TimeoutError) and "crashed" in str(e.value)
        t = la.now()
        assert la.wait_until(lambda: la.now() >= t + 0.3 and "late") == "late"
        with pytest.raises(WaitTimeout, match="waited 0.2s for the condition in vain"):
            la.wait_until(lambda: False, "200ms")


def test_check_heals_settles_and_reads_back_every_key_touched() -> None:
    with lab() as la:
        la.wait_for_leader()
        la.put("a", 1)
        la.put("b", 2)
        la.partition("leader", "rest")
        la.crash("n1")
        verdicts = la.check()
        assert verdicts.ok and not verdicts.violated
        assert la.status()["n1"]["state"] == "up"   # healed and restarted for the final reads
        final = [o for o in ops(la)[2:] if o[0] == "read"]
        assert [(o[1], o[3], o[4]) for o in final] == [("a", 1, "ok"), ("b", 2, "ok")]
        assert verdicts.result.final == {"reads": {"a": 1, "b": 2}, "unanswered": []}
        heal = [e for e in la.trace() if e["ev"] == "fault" and e["data"]["phase"] == "revert"]
        assert {e["data"]["action"] for e in heal} == {"heal", "restart"}


def test_transfers_commit_abort_and_conserve_money() -> None:
    with lab(BANK) as la:
        assert la.transfer(0, 1, 30) is True
        assert la.transfer(1, 2, 10_000) is False   # more than the bank holds: a participant votes no
        verdicts = la.check()
        assert verdicts.ok, str(verdicts)
        final = verdicts.result.final
        assert final["balances"]["0"] == 70 and final["balances"]["1"] == 130
        assert sum(final["balances"].values()) == final["initial_total"]


def test_a_failing_check_writes_a_run_directory_that_zlab_check_reads_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-made lie in the history: the checker catches it, and the run directory has
    the data of `zlab run`, with the faults the test applied as its timeline. (The views are
    left out to save seconds: examples/test_raft_named_bug.py checks them.)"""
    from lab import report
    monkeypatch.setattr(report, "VIEWS", ())
    with lab(results=tmp_path) as la:
        la.wait_for_leader()
        la.put("x", 1)
        la.partition("leader", "rest", duration=0.5)
        la.sleep(1)
        # a read that saw a value never written: not linearizable
        la.history.invoke(99, "read", "x", None, la.backend.now())
        la.history.complete(99, "ok", 42, la.backend.now())
        with pytest.raises(Unsafe) as caught:
            la.assert_safe()
    failure = caught.value
    run_dir = failure.run_dir
    assert run_dir.parent == tmp_path.resolve() and str(run_dir) in str(failure)
    assert "[XX] linearizable: violated -- key 'x'" in str(failure)
    assert "[ok] election_safety: holds" in str(failure)
    for name in ("scenario.yaml", "trace.jsonl", "history.jsonl", "final.json", "checks.json",
                 "metrics.json", "report.md"):
        assert (run_dir / name).exists(), name
    report = (run_dir / "report.md").read_text()
    assert "made by zlab.Lab" in report and "pytest 'tests/test_facade.py::" in report
    ran = load_scenario(str(run_dir / "scenario.yaml"))
    assert [(f.action, f.args, f.duration) for f in ran.faults] == [("partition", ["leader", "rest"], 0.5)]
    assert ran.workload.kind == "none"
    assert check_run_dir(run_dir) == 1
    assert json.loads((run_dir / "checks.json").read_text())["exit_code"] == 1


def test_the_same_test_code_replays_exactly_on_the_simulator() -> None:
    def script() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with lab(timeout="500ms", seed=7) as la:
            la.wait_for_leader()
            for i in range(5):
                la.put(f"k{i % 2}", i)
            la.partition("minority", "majority")
            la.crash("random", at="100ms", duration="400ms")
            for i in range(5):
                try:
                    la.put("k0", 10 + i)
                except Unknown:
                    pass
            la.check()
            return list(la.history.events), la.trace()

    first, second = script(), script()
    assert first == second
    assert yaml.safe_dump(first[1]) == yaml.safe_dump(second[1])
    assert any(e["ev"] == "fault" and e["data"]["action"] == "crash" for e in first[1])


def test_a_lab_that_is_not_running_says_so() -> None:
    la = Lab(RAFT3, backend="sim")
    with pytest.raises(LabError, match="not running"):
        la.put("x", 1)
    la.start()
    la.stop()
    la.stop()                                       # idempotent
    with pytest.raises(LabError, match="not running"):
        la.get("x")


def test_check_reads_back_what_the_topologys_workload_reads_at_the_end() -> None:
    with lab(BANK + "workload: {kind: transfer, duration: 5s}\n") as la:
        verdicts = la.check()                       # no call made: the balances are read anyway
        assert verdicts.result.final["balances"] == {str(a): 100 for a in range(4)}
        assert {e["f"] for e in la.history.events} == {"balances"}


def test_broadcasts_spread_and_a_gossip_bug_is_caught() -> None:
    """lab.broadcast on the gossip core: values broadcast before and during a partition reach
    every node once it heals; without anti-entropy the partition's rumors are lost."""
    topology = str(Path(__file__).resolve().parent.parent / "topologies" / "gossip-broadcast.yaml")
    with Lab(topology, backend="sim", seed=3) as lab:
        lab.broadcast(101)
        lab.partition(["n1", "n2"], ["n3", "n4", "n5"])
        lab.broadcast(102, node="n1")
        lab.heal()
        verdicts = lab.assert_safe()
        assert "all 2 acknowledged values are on all 5 live nodes" in str(verdicts)
    with Lab(topology, backend="sim", seed=3, config={"bugs": ["no_anti_entropy"]}) as lab:
        lab.partition(["n1", "n2"], ["n3", "n4", "n5"])
        for value in range(200, 205):
            lab.broadcast(value, node="n1")
        lab.sleep(3)            # the rumors die inside the minority before the heal
        lab.heal()
        with pytest.raises(Unsafe, match="eventual_delivery"):
            lab.assert_safe()
