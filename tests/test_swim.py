"""SWIM, step by step on the in-memory network (tests/memnet.py), in the order of the paper.

The ``fast`` preset throughout: probe interval 100 ms, probe timeout 50 ms, so
with five members the base suspicion timeout is 4 x 1 x 0.1 = 0.4 s and a
lone suspicion waits 6 x 0.4 = 2.4 s.
"""

from __future__ import annotations

from typing import Any

import pytest
from memnet import Net

from nodes.protocols.core import ConfigValueError, build_config
from nodes.protocols.swim import (
    ALIVE,
    DEAD,
    INCARNATION,
    SUSPECT,
    Suspicion,
    Swim,
    confirmed_timeout,
    retransmit_limit,
    suspicion_timeout,
)

FAST = {"preset": "fast"}


def net(n: int = 5, seed: int = 1, config: dict[str, Any] | None = None, **kw: Any) -> Net[Swim]:
    return Net(Swim, n=n, seed=seed, config={**FAST, **(config or {})}, **kw)


def status(nt: Net[Swim], node: str, member: str) -> str:
    return nt.core(node).members[member].status


def states(nt: Net[Swim], status_: str, member: str | None = None) -> list[dict[str, Any]]:
    """The ``state`` events of one status (about ``member``), as the cores traced them."""
    return [e for e in nt.trace if e["ev"] == "state" and e["data"].get("status") == status_
            and (member is None or e["data"]["member"] == member) and e["node"] != e["data"]["member"]]


def sends(nt: Net[Swim], type_: str, src: str | None = None) -> list[dict[str, Any]]:
    return [e for e in nt.trace if e["ev"] == "send" and e["type"] == type_
            and (src is None or e["node"] == src)]


# -- the formulas, against memberlist's own test vectors ---------------------------------------

def test_suspicion_timeout_and_retransmit_limit_follow_memberlist() -> None:
    # memberlist util_test.go: suspicionTimeout(3, n, 1s) / 3
    for n, expected in {5: 1.0, 10: 1.0, 50: 1.698, 100: 2.0, 500: 2.698, 1000: 3.0}.items():
        assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=5e-4)
    assert (retransmit_limit(3, 0), retransmit_limit(3, 1), retransmit_limit(3, 99)) == (0, 3, 6)
    assert retransmit_limit(4, 9) == 4 and retransmit_limit(4, 10) == 8


def test_confirmations_shrink_the_timeout_on_a_log_scale() -> None:
    # memberlist suspicion_test.go: k = 3, min 2 s, max 30 s -> 30, 16, 7.81, 2 (then stays at min)
    assert [confirmed_timeout(c, 3, 2.0, 30.0) for c in range(5)] == [30.0, 16.0, 7.81, 2.0, 2.0]
    assert confirmed_timeout(0, 0, 2.0, 30.0) == 2.0      # no confirmations expected: the minimum
    s = Suspicion("n1", k=3, lo=2.0, hi=30.0, now=10.0)
    assert s.deadline == 40.0
    assert not s.confirm("n1")                 # the accuser's repeat is no confirmation
    assert s.confirm("n2") and s.deadline == 26.0
    assert not s.confirm("n2")
    assert s.confirm("n3") and s.confirm("n4") and s.deadline == 12.0
    assert not s.confirm("n5")                 # k reached: the timeout is at its minimum


def test_config_is_checked_and_presets_override_only_what_differs() -> None:
    with pytest.raises(ConfigValueError, match="probe_timeout"):
        build_config(Swim, {"probe_timeout": "2s"})
    with pytest.raises(ConfigValueError, match="awareness_max_multiplier"):
        build_config(Swim, {"awareness_max_multiplier": 0})
    lan, wan = build_config(Swim, {"preset": "lan"}), build_config(Swim, {"preset": "wan"})
    assert (lan.probe_interval, lan.probe_timeout, lan.indirect_checks, lan.suspicion_mult) == (1.0, 0.5, 3, 4)
    assert (wan.probe_interval, wan.suspicion_mult, wan.retransmit_mult) == (5.0, 6, 4)
    classic = build_config(Swim, {"preset": "classic"})
    assert (classic.suspicion_max_timeout_mult, classic.awareness_max_multiplier) == (1, 1)


# -- probing ------------------------------------------------------------------------------------

def test_a_quiet_cluster_probes_round_robin_and_suspects_nobody() -> None:
    nt = net(trace_messages=True)
    nt.tick(2.05)
    assert not states(nt, SUSPECT) and not states(nt, DEAD)
    pings = [e["peer"] for e in sends(nt, "ping", "n1")]
    assert len(pings) >= 16
    # Each round of n-1 probes visits every other member exactly once (a shuffled round robin).
    for r in range(len(pings) // 4):
        assert sorted(pings[4 * r:4 * r + 4]) == ["n2", "n3", "n4", "n5"]
    assert not sends(nt, "ping_req")


def test_a_cut_link_is_bridged_by_indirect_probes() -> None:
    nt = net(trace_messages=True)
    nt.cut("n1", "n2")
    nt.tick(3.0)
    assert sends(nt, "ping_req", "n1"), "n1 never went indirect to reach n2"
    assert not states(nt, SUSPECT), "a one-link fault made a suspicion"


def test_a_crashed_member_is_suspected_then_declared_dead_everywhere() -> None:
    nt = net()
    nt.tick(0.5)
    nt.crash("n3")
    crashed_at = nt.now
    nt.tick(3.0)
    for node in ("n1", "n2", "n4", "n5"):
        assert status(nt, node, "n3") == DEAD
    first_suspect = min(e["ts"] for e in states(nt, SUSPECT, "n3"))
    first_dead = min(e["ts"] for e in states(nt, DEAD, "n3"))
    # Dead no sooner than the base suspicion timeout after the first suspicion, and no later
    # than the lone-accuser timeout plus a probe.
    assert 0.4 - 1e-6 <= first_dead - first_suspect <= 2.4 + 1e-6
    assert first_suspect - crashed_at <= 0.5


def test_a_suspicion_runs_out_on_a_clock_that_moves_between_two_reads() -> None:
    """A real clock is never read twice at the same instant (the simulator's is)."""
    nt = net()
    for name in nt.names:
        ctx = nt.core(name).ctx
        reads = [0]

        def now(reads: list[int] = reads) -> float:
            reads[0] += 1
            return nt.now + reads[0] * 1e-7
        ctx.now = now                               # type: ignore[method-assign]
    nt.tick(0.3)
    nt.crash("n3")
    nt.tick(3.0)
    assert all(status(nt, n, "n3") == DEAD for n in ("n1", "n2", "n4", "n5"))


def test_an_ack_read_after_the_probe_window_counts_for_nothing() -> None:
    """A stalled prober: the ack came in time, but it reads it only after its window closed."""
    nt = net(trace_messages=True)
    nt.tick(0.3)
    n1 = nt.core("n1")
    nt._timer_seq.pop(("n1", "probe"), None)        # keep n1 from starting another probe
    n1.probe = None
    n1.start_probe()
    target = n1.probe.target
    nt.now += 0.5                                   # n1 stalls for five probe intervals
    nt.deliver_all()
    assert status(nt, "n1", target) == SUSPECT
    assert n1.awareness > 0


# -- suspicion, refutation, incarnations ----------------------------------------------------------

def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    nt = net()
    nt.tick(0.3)
    nt.core("n1").handle_suspect("n2", 0, "n1")          # a false suspicion
    nt.tick(1.0)
    assert nt.core("n2").inc == 1 and nt.storage["n2"].get(INCARNATION) == 1
    for node in nt.names:
        assert status(nt, node, "n2") == ALIVE
        assert nt.core(node).members["n2"].inc == 1
    assert not states(nt, DEAD)
    # Being accused is a sign of poor health: the score rose (and successful probes lower it again).
    assert any(e["node"] == "n2" and e.get("data", {}).get("awareness") == 1 for e in nt.trace)


def test_without_refutation_a_false_suspicion_becomes_a_death() -> None:
    nt = net(config={"bugs": ["no_refutation"]})
    nt.tick(0.3)
    nt.core("n1").handle_suspect("n2", 0, "n1")
    nt.tick(3.0)
    assert status(nt, "n1", "n2") == DEAD and nt.core("n2").inc == 0


def test_an_old_alive_does_not_resurrect_the_dead() -> None:
    for bugs, expected in (((), DEAD), (("stale_alive_overrides_dead",), ALIVE)):
        nt = net(config={"bugs": list(bugs)})
        n1 = nt.core("n1")
        n1.handle_dead("n3", 0, "n2")
        n1.handle_alive("n3", 0)                    # an alive from before the death
        assert status(nt, "n1", "n3") == expected, bugs
        n1.handle_alive("n3", 1)                    # a newer incarnation always wins
        assert status(nt, "n1", "n3") == ALIVE


def test_a_restarted_member_rejoins_above_every_incarnation_it_announced() -> None:
    nt = net()
    nt.tick(0.3)
    nt.core("n1").handle_suspect("n3", 0, "n1")
    nt.tick(0.5)
    assert nt.core("n3").inc == 1
    nt.crash("n3")
    nt.tick(3.0)
    assert all(status(nt, n, "n3") == DEAD for n in ("n1", "n2", "n4", "n5"))
    nt.restart("n3")
    assert nt.core("n3").inc == 2                   # stored 1, so back as 2
    nt.tick(1.0)
    for node in ("n1", "n2", "n4", "n5"):
        assert status(nt, node, "n3") == ALIVE and nt.core(node).members["n3"].inc == 2
    assert status(nt, "n3", "n1") == ALIVE


def test_a_restarted_member_learns_who_died_while_it_was_down() -> None:
    nt = net()
    nt.tick(0.3)
    nt.crash("n2")
    nt.crash("n4")
    nt.tick(3.0)
    nt.restart("n2")
    nt.tick(3.0)
    assert status(nt, "n2", "n4") == DEAD and status(nt, "n2", "n1") == ALIVE


# -- dissemination ----------------------------------------------------------------------------

def test_each_update_is_sent_retransmit_limit_times_then_dropped() -> None:
    nt = net(config={"gossip_nodes": 0})
    n1 = nt.core("n1")
    n1.queue_update([ALIVE, "n9", 3, "n9"])
    limit = retransmit_limit(4, 5)
    taken = [n1.take_updates(16) for _ in range(limit + 2)]
    assert [len(t) for t in taken] == [1] * limit + [0, 0]
    n1.queue_update([SUSPECT, "n2", 0, "n1"])
    n1.queue_update([DEAD, "n2", 0, "n1"])          # replaces the suspicion in the queue
    assert n1.take_updates(16) == [[DEAD, "n2", 0, "n1"]]


def test_a_suspect_is_told_it_is_suspected_with_the_ping() -> None:
    nt = net()
    n1 = nt.core("n1")
    n1.members["n2"].status = SUSPECT
    sent: list[tuple[str, str, dict[str, Any]]] = []
    n1.ctx.send = lambda dst, type, body: sent.append((dst, type, body))  # type: ignore[method-assign]
    n1.order, n1.probe_index, n1.probe = ["n2"], 0, None
    n1.start_probe()
    (dst, type_, body), = sent
    assert (dst, type_) == ("n2", "ping") and body["updates"][0] == [SUSPECT, "n2", 0, "n1"]


# -- local health (Lifeguard) ---------------------------------------------------------------------

@pytest.mark.parametrize("bugs", [(), ("no_local_health",)])
def test_a_node_that_hears_nothing_stretches_its_probe_window(bugs: tuple[str, ...]) -> None:
    nt = net(config={"bugs": list(bugs)})
    for other in ("n2", "n3", "n4", "n5"):
        nt.cut(other, "n1", oneway=True)            # n1 sends but hears nobody: it is the slow one
    n1 = nt.core("n1")
    for _ in range(20):
        nt.tick(0.1)
        if n1.awareness == 7:                       # awareness_max_multiplier - 1
            break
    assert n1.awareness == 7
    n1.probe = None
    n1.start_probe()
    window = n1.probe.end - nt.now
    assert window == pytest.approx(0.1 if bugs else 0.8)


def test_nacks_from_helpers_keep_a_prober_healthy_when_the_target_is_really_gone() -> None:
    nt = net()
    nt.tick(0.3)
    nt.crash("n3")
    nt.tick(2.0)
    assert all(nt.core(n).awareness == 0 for n in ("n1", "n2", "n4", "n5"))


# -- the edges ----------------------------------------------------------------------------------

def test_malformed_messages_are_dropped_and_counted() -> None:
    nt = net()
    n1 = nt.core("n1")
    for type_, body in (("ping", {}), ("ping", {"seq": "x"}), ("ack", {"seq": 1, "updates": [["zombie", "n2", 0, "n2"]]}),
                        ("sync", {"members": [], "reply": 1}), ("ping_req", {"seq": 1})):
        n1.handle_message("n2", type_, body)
    n1.handle_message("n9", "ping", {"seq": 1})   # not a member
    assert n1.dropped == 6


def test_members_request_returns_the_view() -> None:
    nt = net()
    nt.request("n1", {"f": "members"})
    nt.request("n1", {"f": "write", "key": "x", "value": 1}, client="c2")
    (res,) = nt.replies_to("c1")
    assert res["type"] == "ok" and res["value"]["n2"] == [ALIVE, 0]
    assert nt.replies_to("c2") == [{"type": "fail", "error": "unsupported"}]
