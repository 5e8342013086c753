"""Single-decree Paxos (nodes/protocols/paxos.py) and the pieces it shares (synod.py), step by step
on the in-memory network, in the order of the tutorial's sections 2.2 to 2.5."""

from __future__ import annotations

from typing import Any

import pytest
from memnet import Net

from lab.checks.paxos import CHECKS
from nodes.protocols import get
from nodes.protocols.core import ConfigValueError, build_config
from nodes.protocols.fsm import IllegalTransition
from nodes.protocols.paxos import MSG_ACCEPTED, PROPOSER_TABLE, Paxos, well_formed
from nodes.protocols.synod import ACC_ACTIVE, Acceptor, Ballots, Phase1, backoff_delay, roles_of
from nodes.storage import MemoryStorage

ALL = ("proposer", "acceptor", "learner")


def specs(*roles: Any) -> dict[str, dict[str, Any]]:
    """n1.. with the given roles (None: the node names no role, so it plays all three)."""
    return {f"n{i}": {"name": f"n{i}", "role": r} for i, r in enumerate(roles, 1)}


def one_proposer(n_acceptors: int = 3, **config: Any) -> Net[Paxos]:
    """The tutorial's 2.4: proposer A (n1) and acceptors/learners n2..; A proposes at start."""
    return Net(Paxos, specs=specs(["proposer"], *(["acceptor", "learner"],) * n_acceptors),
               config=config, delay=0.001)


def learned(net: Net[Paxos]) -> dict[str, Any]:
    return {n: net.core(n).learned for n in net.up()}


def test_roles_come_from_the_spec_and_none_means_all_three() -> None:
    assert roles_of({"role": None}) == frozenset(ALL)
    assert roles_of({"role": "acceptor"}) == {"acceptor"}
    assert roles_of({"role": ["proposer", "learner"]}) == {"proposer", "learner"}
    assert roles_of({"role": "coordinator"}) == frozenset(ALL)     # not a Paxos role


def test_the_tutorials_example_one_proposer_two_phases_and_every_learner_learns() -> None:
    net = one_proposer()
    net.deliver_all()
    assert learned(net) == {"n1": "n1.1", "n2": "n1.1", "n3": "n1.1", "n4": "n1.1"}
    assert net.core("n1").state == "decided" and net.core("n1").won
    # prepare(1) to 3 acceptors, 3 promises, accept(1, v) to 3, and 3 accepted each to the
    # proposer and to the 3 learners (n2..n4 tell themselves without a message)
    kinds = [e["data"]["phase"] for e in net.trace if e["ev"] == "state"]
    assert kinds == ["input", "preparing", "accepting", "decided"]
    v = net.run_checks(CHECKS)
    assert v["agreement"].verdict == v["validity"].verdict == v["decided"].verdict == "holds"


def test_a_proposer_adopts_the_highest_accepted_value_a_promise_carries() -> None:
    net = one_proposer()
    # an earlier round: n2 accepted "old" in ballot (0, n9), n3 "older" in (0, n0); n1 must take "old"
    net.core("n2").acceptor.accept((0, "n9"), [(0, "old")])
    net.core("n3").acceptor.accept((0, "n0"), [(0, "older")])
    net.deliver_all()
    assert set(learned(net).values()) == {"old"}
    assert net.core("n1").proposing == "old"


def test_with_ignore_accepted_value_the_proposer_overrides_a_chosen_value() -> None:
    net = one_proposer(bugs=["ignore_accepted_value"])
    for n in ("n2", "n3"):      # "old" was chosen in (0, n9): a majority accepted it
        net.core(n).acceptor.accept((0, "n9"), [(0, "old")])
    net.deliver_all()
    assert net.core("n1").proposing == "n1.1"          # "old" was chosen; the bug overrides it
    assert set(learned(net).values()) == {"n1.1"}


def test_acceptor_refuses_below_its_promise_and_accepting_raises_the_promise() -> None:
    net = Net(Paxos, specs=specs(["acceptor"]))
    a = net.core("n1").acceptor
    assert a.prepare((3, "x")) == (True, [])
    assert a.prepare((2, "z")) == (False, [])
    assert a.prepare((3, "x"))[0]          # the same ballot again (a retransmission) is fine
    assert not a.accept((2, "z"), [(0, "v")])
    assert a.accept((4, "y"), [(0, "w")]) and a.promised == (4, "y")
    assert a.prepare((5, "x")) == (True, [[0, [4, "y"], "w"]])


def test_accept_below_promise_bug_accepts_what_it_should_refuse() -> None:
    net = Net(Paxos, specs=specs(["acceptor"]), config={"bugs": ["accept_below_promise"]})
    a = net.core("n1").acceptor
    a.prepare((3, "x"))
    assert a.accept((2, "z"), [(0, "v")]) and a.accepted[0] == ((2, "z"), "v")


def test_acceptor_state_is_durable_and_only_the_forgetful_bug_loses_it() -> None:
    for bugs, keeps in (([], True), (["acceptor_forgets_promise"], False)):
        net = Net(Paxos, specs=specs(["acceptor"]), config={"bugs": bugs})
        net.core("n1").acceptor.prepare((2, "p"))
        net.core("n1").acceptor.accept((2, "p"), [(0, "v")])
        net.crash("n1")
        net.restart("n1")
        a = net.core("n1").acceptor
        assert (a.promised == (2, "p") and a.accepted == {0: ((2, "p"), "v")}) is keeps, bugs


def test_promise_is_written_before_the_answer_leaves() -> None:
    """Durable before it is sent: the promise's storage write happens in the handler that sends it."""
    net = one_proposer()
    net.step()                                   # n2 gets prepare(1, n1)
    assert net.storage["n2"].get("promised") == [1, "n1"]


def test_ballots_are_above_everything_seen_and_never_reused_after_a_restart() -> None:
    st = MemoryStorage()
    ctx = type("Ctx", (), {"node": "n1", "storage": st})()
    b = Ballots(ctx, forget=False)
    b.observe((7, "n3"))
    assert b.next() == (8, "n1")
    again = Ballots(ctx, forget=False)            # a restart
    assert again.next() == (9, "n1")
    forgetful = Ballots(type("Ctx", (), {"node": "n1", "storage": MemoryStorage()})(), forget=True)
    forgetful.next()
    assert Ballots(forgetful.ctx, forget=True).next() == (1, "n1")   # the bug: round 1 again


def test_a_restarted_proposer_starts_above_what_its_own_acceptor_promised() -> None:
    net = Net(Paxos, specs=specs(None, ["acceptor", "learner"], ["acceptor", "learner"]),
              config={"own_value": False})
    net.core("n1").acceptor.prepare((40, "n7"))
    net.crash("n1")
    net.restart("n1")
    net.request("n1", {"f": "propose", "value": 5})
    assert net.core("n1").ballot == (41, "n1")


def test_phase1_counts_one_ballot_and_the_stale_bug_counts_old_promises() -> None:
    p = Phase1((1, "n1"), quorum=2)
    assert p.add("a", (1, "n1"), [])
    p.renew((2, "n1"))
    assert not p.add("b", (1, "n1"), [])         # answers the old ballot: not counted
    p.add("b", (2, "n1"), [])
    assert not p.reached
    stale = Phase1((1, "n1"), quorum=2, stale=True)
    stale.add("a", (1, "n1"), [])
    stale.renew((2, "n1"))
    stale.add("b", (2, "n1"), [])
    assert stale.reached                          # a's promise of ballot 1 counted for ballot 2


def test_backoff_none_is_immediate_and_exponential_grows_to_its_cap() -> None:
    import random
    rng = random.Random(1)
    assert backoff_delay(rng, "none", 0.01, 1.0, 5) == 0.0
    draws = [max(backoff_delay(rng, "exponential", 0.01, 0.05, k) for _ in range(200)) for k in range(5)]
    assert draws[0] <= 0.01 and 0.015 < draws[1] <= 0.02 and all(d <= 0.05 for d in draws)
    assert draws[4] > 0.04


def test_duelling_proposers_livelock_without_backoff_and_decide_with_it() -> None:
    """Section 2.5: two proposers retrying at once pre-empt each other forever."""
    roles = specs(list(ALL), list(ALL), ["acceptor", "learner"])
    stuck = Net(Paxos, specs=roles, config={"backoff": "none"}, delay=0.005, jitter=0.001)
    stuck.tick(2.0)
    assert learned(stuck) == dict.fromkeys(stuck.names)
    assert stuck.core("n1").ballot[0] > 100 and stuck.core("n2").ballot[0] > 100
    calm = Net(Paxos, specs=roles, config={"backoff": "exponential"}, delay=0.005, jitter=0.001)
    calm.tick(2.0)
    assert len(set(learned(calm).values())) == 1 and None not in learned(calm).values()


def test_a_lost_accepted_costs_a_poll_not_the_decision() -> None:
    net = one_proposer(retry_timeout="50ms")
    net.ignore(MSG_ACCEPTED)
    net.tick(0.01)
    assert learned(net) == dict.fromkeys(net.names)
    net.recover()
    net.tick(0.2)                                   # learners ask the acceptors, the proposer retries
    assert set(learned(net).values()) == {"n1.1"}


def test_clients_propose_at_a_proposer_and_read_at_a_learner() -> None:
    net = Net(Paxos, specs=specs(["proposer"], ["acceptor", "learner"], ["acceptor", "learner"]),
              config={"own_value": False})
    net.request("n2", {"f": "propose", "value": 7}, client="c1")
    assert net.replies_to("c1") == [{"type": "fail", "error": "not_leader", "leader": "n1"}]
    net.request("n2", {"f": "read"}, client="c2")
    assert net.replies_to("c2") == [{"type": "fail", "error": "undecided"}]
    net.request("n1", {"f": "propose", "value": 7}, client="c3")
    net.request("n1", {"f": "propose", "value": 8}, client="c4")   # too late to choose: told 7
    net.deliver_all()
    assert net.replies_to("c3") == net.replies_to("c4") == [{"type": "ok", "value": 7}]
    net.request("n3", {"f": "read"}, client="c5")
    assert net.replies_to("c5") == [{"type": "ok", "value": 7}]
    net.request("n1", {"f": "read"}, client="c6")
    assert net.replies_to("c6")[0]["error"] == "not_leader"


def test_status_names_the_distinguished_proposer_leader() -> None:
    net = one_proposer()
    assert net.core("n1").status()["role"] == "proposer"
    net.deliver_until(lambda: net.core("n1").state == "accepting")
    st = net.core("n1").status()
    assert st["role"] == "leader" and st["term"] == 1
    assert net.core("n2").status()["role"] == "acceptor"


def test_start_at_holds_the_own_proposal_until_then() -> None:
    net = one_proposer(start_at="300ms")
    net.tick(0.29)
    assert net.core("n1").state == "idle"
    net.tick(0.05)
    assert set(learned(net).values()) == {"n1.1"}


def test_malformed_messages_are_dropped_counted_and_traced() -> None:
    net = one_proposer()
    core = net.core("n2")
    for body in ({"ballot": [1]}, {"ballot": ["x", "n1"]}, {"ballot": [1, "n1"], "value": [1]}, "junk"):
        core.handle_message("n1", "accept", body)            # type: ignore[arg-type]
    core.handle_message("n9", "prepare", {"ballot": [1, "n9"]})
    assert core.dropped == 5
    assert sum(e["ev"] == "drop" for e in net.trace) == 5
    assert not well_formed("promise", {"ballot": [1, "a"], "ok": True, "promised": [1, "a"],
                                       "accepted": [[0, [1], "v"]]})


def test_config_is_validated_and_documented() -> None:
    with pytest.raises(ConfigValueError, match="backoff"):
        build_config(Paxos, {"backoff": "linear"})
    with pytest.raises(ConfigValueError, match="retry_timeout"):
        build_config(Paxos, {"retry_timeout": "0s"})
    assert build_config(Paxos, {"preset": "wan"}).retry_timeout == 1.0
    assert get("paxos") is Paxos
    assert set(Paxos.bugs) == {"acceptor_forgets_promise", "ignore_accepted_value", "accept_below_promise",
                               "stale_promise_counted", "reuse_ballot_after_restart"}


def test_the_proposer_table_refuses_what_it_does_not_list_and_draws_itself() -> None:
    with pytest.raises(IllegalTransition):
        PROPOSER_TABLE.step("decided", "promised")
    text = Paxos.diagram()
    assert text.startswith("stateDiagram-v2") and "preparing --> accepting: promised / send_accept" in text


def test_the_acceptor_log_switch_survives_a_crash_at_any_point() -> None:
    """Collecting rewrites the live entries into the other log and switches last: whatever prefix
    of those writes survives, a restart finds one complete log."""
    ctx = type("Ctx", (), {"node": "n1", "storage": MemoryStorage()})()
    a = Acceptor(ctx)
    a.prepare((1, "n1"))
    for s in range(1, 201):
        a.accept((1, "n1"), [(s, f"c{s}")])
    a.forget_below(150)
    assert ctx.storage.get(ACC_ACTIVE) == "acc.1"
    assert ctx.storage.log_read("acc.1") == [[s, 1, "n1", f"c{s}"] for s in range(151, 201)]
    again = Acceptor(ctx)
    again.load()
    assert again.accepted == {s: ((1, "n1"), f"c{s}") for s in range(151, 201)}
    # a crash after the new log was written but before the switch: the old log is still whole
    ctx2 = type("Ctx", (), {"node": "n1", "storage": MemoryStorage()})()
    b = Acceptor(ctx2)
    for s in range(1, 101):
        b.accept((1, "n1"), [(s, s)])
    ctx2.storage.log_append("acc.1", [[99, 1, "n1", 99]])         # half a rewrite, never switched
    c = Acceptor(ctx2)
    c.load()
    assert len(c.accepted) == 100


def test_the_propose_workload_sends_unique_values_and_reads_every_learner() -> None:
    import random

    from lab.errors import ConfigError
    from lab.scenario import NodeSpec, Scenario, WorkloadSpec
    from lab.workloads.propose import ProposeWorkload
    s = Scenario(name="p", protocol="paxos", nodes=[NodeSpec("n1", role=["proposer"]), NodeSpec("n2"),
                                                     NodeSpec("n3", role="acceptor")])
    w = ProposeWorkload(WorkloadSpec(kind="propose"), s, random.Random(1))
    assert [w.next_op(0)["value"] for _ in range(3)] == [1, 2, 3]
    assert [node for node, _ in w.final_ops()] == ["n2"]          # n2 names no role: all three
    assert w.record_final([{"type": "fail", "error": "undecided"}]) == {"learned": {}, "undecided": ["n2"]}
    with pytest.raises(ConfigError, match="workload.keys"):
        ProposeWorkload(WorkloadSpec(kind="propose", params={"keys": 3}), s, random.Random(1))
