"""The Raft checkers: each flags a hand-made bad trace and passes a good one, and each named
bug of the core breaks a checker on a crafted schedule (in the manner of the paper's figures)
on which the correct core keeps every property."""

from __future__ import annotations

from typing import Any

import pytest
from raftnet import Net

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, RunData
from lab.checks.raft import (
    CHECKS,
    election_safety,
    leader_completeness,
    log_matching,
    state_machine_safety,
)
from lab.checks.registry import all_checks
from lab.errors import CheckError
from nodes.protocols.raft import LEADER, Raft

pytestmark = pytest.mark.sim

ALL = ("election_safety", "log_matching", "leader_completeness", "state_machine_safety", "linearizable")


# -- hand-made traces ------------------------------------------------------------------------
def state(node: str, term: int, role: str = "leader", ts: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 1, "ev": "state", "data": {"role": role, "term": term, **extra}}


def commit(node: str, index: int, term: int, h: str, ts: float = 0.0) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 1, "ev": "commit", "data": {"index": index, "term": term, "hash": h}}


def run(*events: dict[str, Any]) -> RunData:
    return RunData(scenario={}, trace=list(events), history=[])


def test_registry_lists_the_raft_checks() -> None:
    assert set(ALL) <= set(all_checks())
    assert set(CHECKS) == set(ALL) - {"linearizable"}


def test_election_safety_flags_two_leaders_in_one_term() -> None:
    v = election_safety(run(state("n1", 4), state("n2", 4, "follower"), state("n3", 4)))
    assert v.verdict == VIOLATED
    assert v.detail == "term 4 had 2 leaders: n1, n3"
    assert v.data["terms"] == {"4": ["n1", "n3"]}


def test_election_safety_holds_with_one_leader_a_term() -> None:
    v = election_safety(run(state("n1", 1), state("n2", 2), state("n2", 2), state("n1", 3)))
    assert v.verdict == HOLDS
    assert "3 terms" in v.detail


def test_checks_cannot_decide_without_raft_events() -> None:
    for fn in CHECKS.values():
        assert fn(run({"ts": 0, "node": "lab", "lc": 0, "ev": "fault", "data": {}})).verdict == UNKNOWN


def test_malformed_event_is_a_check_error() -> None:
    with pytest.raises(CheckError, match="lacks hash"):
        state_machine_safety(run(state("n1", 1), {"ts": 0, "node": "n1", "lc": 1, "ev": "commit",
                                                  "data": {"index": 1, "term": 1}}))


def test_log_matching_flags_same_index_and_term_with_different_prefixes() -> None:
    bad = run(state("n1", 2, hashes={"3": "aa"}, terms={"3": 1}, commit=2, last_index=3),
              commit("n2", 3, 1, "bb"))
    v = log_matching(bad)
    assert v.verdict == VIOLATED
    assert "index 3 term 1" in v.detail and "aa" in v.detail and "bb" in v.detail


def test_log_matching_holds_when_entries_differ_only_across_terms() -> None:
    # Index 3 held term 1 on an old leader and term 2 after it was overwritten: no conflict.
    good = run(state("n1", 2, hashes={"3": "aa"}, terms={"3": 1}, commit=2, last_index=3),
               commit("n2", 3, 2, "bb"), commit("n3", 3, 2, "bb"))
    assert log_matching(good).verdict == HOLDS


def test_state_machine_safety_flags_two_entries_committed_at_one_index() -> None:
    v = state_machine_safety(run(state("n1", 1), commit("n1", 1, 1, "aa"), commit("n2", 1, 1, "aa"),
                                 commit("n3", 1, 2, "cc")))
    assert v.verdict == VIOLATED
    assert v.detail == "index 1 committed as aa (term 1) by n1 and as cc (term 2) by n3"


def test_state_machine_safety_holds_when_commits_agree() -> None:
    v = state_machine_safety(run(state("n1", 1), commit("n1", 1, 1, "aa"), commit("n2", 1, 1, "aa")))
    assert v.verdict == HOLDS


def test_leader_completeness_flags_a_leader_missing_a_committed_entry() -> None:
    bad = run(state("n1", 1, commit=0, last_index=0), commit("n1", 1, 1, "aa"), commit("n1", 2, 1, "bb"),
              state("n3", 2, "candidate"), state("n3", 2, commit=0, last_index=1,
                                                  hashes={"1": "aa"}, terms={"1": 1}))
    v = leader_completeness(bad)
    assert v.verdict == VIOLATED
    assert v.detail.startswith("n3 became leader of term 2 without index 2 (bb, committed by term 1)")


def test_leader_completeness_flags_a_leader_holding_another_entry() -> None:
    bad = run(state("n1", 1, commit=0, last_index=0), commit("n1", 1, 1, "aa"),
              state("n3", 2, commit=0, last_index=1, hashes={"1": "zz"}, terms={"1": 2}))
    v = leader_completeness(bad)
    assert v.verdict == VIOLATED and "its log has zz" in v.detail


def test_leader_completeness_ignores_commits_of_the_leaders_own_term_or_later() -> None:
    # n2 learnt of index 1 while in term 3: it may have been committed in term 3, after n3's
    # term-2 election, so n3 need not hold it.
    good = run(state("n1", 1, commit=0, last_index=0), state("n2", 3, "follower"),
               commit("n2", 1, 3, "aa"), state("n3", 2, commit=0, last_index=0))
    assert leader_completeness(good).verdict == HOLDS


def test_leader_completeness_uses_the_leaders_own_commits_below_its_commit_index() -> None:
    good = run(state("n1", 1, commit=0, last_index=0), commit("n1", 1, 1, "aa"), commit("n2", 1, 1, "aa"),
               commit("n1", 2, 1, "bb"), state("n2", 2, commit=1, last_index=2,
                                                hashes={"2": "bb"}, terms={"2": 1}))
    assert leader_completeness(good).verdict == HOLDS


# -- the named bugs, each on the schedule that shows what it breaks --------------------------------
def forget_vote(bugs: list[str]) -> Net:
    """A node restarted within a term votes again in it, electing a second leader."""
    net = Net(3, config={"bugs": bugs})
    net.isolate("n3")
    net.ignore("append_entries")           # keep the logs equal: only votes matter here
    net.elect("n1")                        # term 1: n2 votes for n1
    net.crash("n2")
    net.restart("n2")                      # term 1 survives; with the bug its vote does not
    net.recover()
    net.ignore("append_entries")
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    net.campaign("n3")                     # term 1 again: n3 asks n2 for its vote
    return net


def no_election_restriction(bugs: list[str]) -> Net:
    """A node missing a committed entry is elected and overwrites it (the point of 5.4.1)."""
    net = Net(3, config={"bugs": bugs})
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n3")
    net.request("n1", {"f": "write", "key": "x", "value": 1, "client": "c1", "seq": 1})
    net.deliver_all()                      # index 2 on n1 and n2: committed
    assert net.core("n1").commit == 2
    net.crash("n1")
    net.recover()
    net.campaign("n3")                     # n2 holds index 2, n3 does not
    net.tick(3.0)                          # let whoever leads settle the cluster
    return net


def no_consistency_check(bugs: list[str]) -> Net:
    """A follower that missed entries splices later ones after its shorter log."""
    net = Net(3, config={"bugs": bugs})
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n3")
    for seq in range(1, 4):
        net.request("n1", {"f": "write", "key": "x", "value": seq, "client": "c1", "seq": seq})
    net.deliver_all()
    net.recover()
    net.heartbeat("n1")                    # n3 gets an append whose prev entry it lacks
    net.heartbeat("n1")
    return net


def commit_previous_term(bugs: list[str]) -> Net:
    """Figure 8 of the Raft paper, with no-ops: a leader counts replicas of a term-1 entry."""
    net = Net(5, config={"bugs": bugs, "max_append_entries": 1})
    net.elect("n1")                        # term 1, no-op at index 1
    net.heartbeat("n1")
    # (a) n1 replicates a term-1 entry at index 2 to n2 only.
    net.partition(["n1", "n2"], ["n3", "n4", "n5"])
    net.request("n1", {"f": "write", "key": "x", "value": "a", "client": "c1", "seq": 1})
    net.deliver_all()
    # (b) n1 crashes; n5 wins term 2 with n3 and n4, appends its no-op at index 2, sends nothing.
    net.crash("n1")
    net.recover()
    net.ignore("append_entries")
    net.elect("n5")
    net.crash("n5")
    net.recover()
    # (c) n1 restarts and wins term 3 with n2 and n3 (n4 is cut off), then brings n3 up to
    # index 2, one entry at a time -- and crashes before its own term-3 no-op gets there.
    net.restart("n1")
    net.isolate("n4")
    n1 = net.core("n1")
    net.campaign("n1")                     # term 2: lost, n3 voted for n5 in it
    assert n1.role != LEADER
    net.fire("n1", "election")             # term 3
    net.deliver_until(lambda: n1.role == LEADER and n1.progress["n3"].match >= 2)
    net.crash("n1")
    # (d) n5 restarts and wins term 4 with n3 and n4: its index 2 (term 2) replaces n1's.
    net.recover()
    net.restart("n5")
    net.elect("n5", attempts=4)
    net.heartbeat("n5")
    net.heartbeat("n5")
    return net


def ack_before_commit(bugs: list[str]) -> Net:
    """A leader cut off from the others acknowledges a write it can never commit; the next
    leader's log replaces it, and a read through that leader does not see it."""
    net = Net(3, config={"bugs": bugs})
    net.elect("n1")
    net.heartbeat("n1")
    net.isolate("n1")
    net.client_op("n1", {"f": "write", "key": "x", "value": 1}, process=1)
    net.tick(0.05)
    net.elect("n2")                        # term 2, with n3
    net.recover()
    net.heartbeat("n2")                    # n1 steps down; its index 2 is overwritten
    assert net.client_op("n2", {"f": "read", "key": "x"}, process=2) == {"type": "ok", "value": None}
    return net


SCENARIOS = {
    "ack_before_commit": (ack_before_commit, {"linearizable"}),
    "forget_vote": (forget_vote, {"election_safety"}),
    "no_election_restriction": (no_election_restriction, {"leader_completeness", "state_machine_safety"}),
    "no_consistency_check": (no_consistency_check, {"log_matching", "state_machine_safety"}),
    "commit_previous_term": (commit_previous_term, {"leader_completeness", "state_machine_safety"}),
}


def test_every_bug_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(Raft.bugs)


@pytest.mark.parametrize("bug", sorted(SCENARIOS))
def test_each_schedule_shows_what_the_core_says_the_bug_breaks(bug: str) -> None:
    assert SCENARIOS[bug][1] == set(Raft.bug_breaks[bug])


@pytest.mark.parametrize("bug", sorted(SCENARIOS))
def test_bug_breaks_a_property_on_its_schedule(bug: str) -> None:
    schedule, broken = SCENARIOS[bug]
    verdicts = schedule([bug]).verdicts()
    assert {name for name, v in verdicts.items() if v == VIOLATED} >= broken, verdicts


@pytest.mark.parametrize("bug", sorted(SCENARIOS))
def test_correct_raft_holds_on_the_same_schedule(bug: str) -> None:
    schedule, _ = SCENARIOS[bug]
    net = schedule([])
    assert net.verdicts() == dict.fromkeys(ALL, HOLDS)


def test_forget_vote_elects_two_leaders_in_term_1() -> None:
    net = forget_vote(["forget_vote"])
    assert net.core("n1").role == net.core("n3").role == LEADER
    assert net.core("n1").term == net.core("n3").term == 1
    assert net.checks()["election_safety"].detail == "term 1 had 2 leaders: n1, n3"


def test_figure_8_correct_leader_does_not_commit_the_term_1_entry() -> None:
    correct = commit_previous_term([])
    # n1 was leader of term 3 with index 2 on a majority, and still did not commit it.
    assert [e for e in correct.trace if e["node"] == "n1" and e["ev"] == "commit"
            and e["data"]["index"] == 2] == []
    buggy = commit_previous_term(["commit_previous_term"])
    detail = buggy.checks()["state_machine_safety"].detail
    assert detail.startswith("index 2 committed as") and "by n1" in detail
