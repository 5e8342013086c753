"""Exact tc/iptables commands for every fault, and the planner's idempotency and revert."""

from __future__ import annotations

import pytest

from lab import netfaults as nf
from lab.scenario import LinkParams

A, B, C = "10.213.7.10", "10.213.7.11", "10.213.7.12"
CFG = nf.NetConfig.for_peers("lab1", [A, B, C])
CHAIN = nf.chain_name("lab1")


def cmd(s: str) -> list[str]:
    return s.split()


def test_chain_name_is_short_stable_and_per_lab() -> None:
    assert CHAIN == nf.chain_name("lab1")
    assert CHAIN.startswith("ZLAB-") and len(CHAIN) <= 28
    assert nf.chain_name("lab2") != CHAIN


def test_peer_minors_are_hex_above_the_reserved_range() -> None:
    assert CFG.minors == {A: 0x10, B: 0x11, C: 0x12}
    assert nf.handle(0x10) == "1:10" and nf.handle(0x1A) == "1:1a"
    with pytest.raises(ValueError, match="not a peer"):
        CFG.minor("10.0.0.1")


def test_root_is_htb_with_an_unshaped_default_class() -> None:
    assert nf.tc_root() == [
        cmd("tc qdisc replace dev eth0 root handle 1: htb default 1"),
        cmd("tc class replace dev eth0 parent 1: classid 1:1 htb rate 10gbit ceil 10gbit "
            "quantum 60000 burst 64k cburst 64k"),
        cmd("tc qdisc replace dev eth0 parent 1:1 handle 2: pfifo limit 1000"),
    ]


def test_filter_matches_destination_address_with_a_fixed_handle() -> None:
    assert nf.tc_peer_filter(0x11, B) == cmd(
        f"tc filter replace dev eth0 parent 1: protocol ip prio 1 handle 800::11 u32 "
        f"match ip dst {B}/32 flowid 1:11")
    assert nf.tc_peer_filter_del(0x11) == cmd(
        "tc filter del dev eth0 parent 1: protocol ip prio 1 handle 800::11 u32")


@pytest.mark.parametrize("params, args", [
    (LinkParams(delay=0.08), "delay 80ms"),
    (LinkParams(delay=0.08, jitter=0.01), "delay 80ms 10ms"),
    (LinkParams(delay=0.0015, jitter=0.0005), "delay 1500us 500us"),
    (LinkParams(delay=0.08, jitter=0.01, distribution="exponential"),
     "delay 80ms 10ms distribution pareto"),
    (LinkParams(delay=0.08, jitter=0.01, distribution="normal"), "delay 80ms 10ms distribution normal"),
    (LinkParams(delay=0.08, jitter=0.01, distribution="constant"), "delay 80ms"),
    (LinkParams(loss=0.05), "loss 5%"),
    (LinkParams(loss=0.005), "loss 0.5%"),
    (LinkParams(duplicate=0.01), "duplicate 1%"),
    (LinkParams(delay=0.02, reorder=0.25), "delay 20ms reorder 25%"),
    # netem reorders by sending some packets undelayed: it needs a delay to reorder against
    (LinkParams(reorder=0.25), "delay 10ms reorder 25%"),
    (LinkParams(delay=0.01, loss=0.1, rate=1_000_000), "delay 10ms loss 10% rate 1000000bit"),
])
def test_netem_leaf_for_every_link_fault(params: LinkParams, args: str) -> None:
    assert nf.tc_leaf(0x10, params) == cmd(
        f"tc qdisc replace dev eth0 parent 1:10 handle 10: netem {args}")


def test_rate_alone_is_a_tbf_leaf() -> None:
    assert nf.tc_leaf(0x12, LinkParams(rate=1_000_000), verb="add") == cmd(
        "tc qdisc add dev eth0 parent 1:12 handle 12: tbf rate 1000000bit burst 32768 latency 200ms")
    # a fast link gets 20 ms worth of burst
    assert nf.tbf_args(100_000_000)[:4] == ["rate", "100000000bit", "burst", "250000"]


def test_perfect_link_has_no_leaf() -> None:
    assert nf.leaf_kind(LinkParams()) is None
    with pytest.raises(ValueError):
        nf.tc_leaf(0x10, LinkParams())


def test_without_netem_only_the_rate_stays_in_the_kernel() -> None:
    p = LinkParams(delay=0.05, loss=0.1, rate=2_000_000)
    kernel, shim = nf.split_params(p, netem=False)
    assert kernel == LinkParams(rate=2_000_000)
    assert shim == LinkParams(delay=0.05, loss=0.1)
    assert nf.split_params(p, netem=True) == (p, LinkParams())
    assert nf.mechanism(p, nf.Caps(htb=True, tbf=True, iptables=True)) == "tbf+shim"
    assert nf.mechanism(p, nf.Caps(netem=True, htb=True, tbf=True)) == "netem"
    assert nf.mechanism(LinkParams(rate=1000), nf.Caps(htb=True, tbf=True)) == "tbf"


@pytest.mark.parametrize("drop, rule", [
    (nf.Drop(B), f"-d {B}/32 -j DROP"),
    (nf.Drop(B, "in"), f"-s {B}/32 -j DROP"),
    (nf.Drop(B, "out", 7000), f"-d {B}/32 -p tcp --dport 7000 -j DROP"),
    (nf.Drop(B, "in", 7001), f"-s {B}/32 -p tcp --dport 7001 -j DROP"),
])
def test_iptables_drop_rules(drop: nf.Drop, rule: str) -> None:
    assert nf.ipt_add(CHAIN, drop) == cmd(f"iptables -w -A {CHAIN} {rule}")
    assert nf.ipt_del(CHAIN, drop) == cmd(f"iptables -w -D {CHAIN} {rule}")


def test_iptables_bad_direction() -> None:
    with pytest.raises(ValueError):
        nf.ipt_rule(nf.Drop(B, "sideways"))


def test_iptables_chain_lifecycle() -> None:
    assert nf.ipt_chain_create(CHAIN) == [
        cmd(f"iptables -w -N {CHAIN}"),
        cmd(f"iptables -w -I INPUT 1 -j {CHAIN}"),
        cmd(f"iptables -w -I OUTPUT 1 -j {CHAIN}"),
    ]
    assert nf.ipt_teardown(CHAIN) == [
        cmd(f"iptables -w -D INPUT -j {CHAIN}"),
        cmd(f"iptables -w -D OUTPUT -j {CHAIN}"),
        cmd(f"iptables -w -F {CHAIN}"),
        cmd(f"iptables -w -X {CHAIN}"),
    ]


def test_probes_leave_nothing_behind() -> None:
    probes = nf.probe_commands()
    assert set(probes) == {"netem", "htb", "tbf", "iptables"}
    assert probes["netem"] == [cmd("tc qdisc replace dev eth0 root handle ffff: netem delay 1ms"),
                               cmd("tc qdisc del dev eth0 root")]
    for steps in probes.values():
        assert steps[-1][:2] in (["tc", "qdisc"], ["iptables", "-w"])
        assert steps[-1][2] in ("del", "-X")


# -- the planner -----------------------------------------------------------------

def test_plan_first_link_installs_root_class_leaf_filter() -> None:
    want = nf.NetState(links={B: LinkParams(delay=0.08)})
    cmds, after = nf.plan(CFG, nf.NetState(), want)
    assert cmds == [
        *nf.tc_root(),
        nf.tc_peer_class(0x11),
        cmd("tc qdisc add dev eth0 parent 1:11 handle 11: netem delay 80ms"),
        nf.tc_peer_filter(0x11, B),
    ]
    assert after == want


def test_plan_changing_a_link_replaces_only_its_leaf() -> None:
    cur = nf.NetState(links={B: LinkParams(delay=0.08), C: LinkParams(loss=0.1)})
    want = nf.NetState(links={B: LinkParams(delay=0.02), C: LinkParams(loss=0.1)})
    cmds, _ = nf.plan(CFG, cur, want)
    assert cmds == [cmd("tc qdisc replace dev eth0 parent 1:11 handle 11: netem delay 20ms")]


def test_plan_changing_leaf_kind_deletes_then_adds() -> None:
    cur = nf.NetState(links={B: LinkParams(delay=0.08)})
    want = nf.NetState(links={B: LinkParams(rate=1_000_000)})
    cmds, _ = nf.plan(CFG, cur, want)
    assert cmds == [cmd("tc qdisc del dev eth0 parent 1:11 handle 11:"),
                    nf.tc_leaf(0x11, LinkParams(rate=1_000_000), verb="add")]


def test_plan_removing_one_of_two_links_keeps_the_root() -> None:
    cur = nf.NetState(links={B: LinkParams(delay=0.08), C: LinkParams(loss=0.1)})
    want = nf.NetState(links={B: LinkParams(delay=0.08), C: LinkParams()})   # perfect = no class
    cmds, after = nf.plan(CFG, cur, want)
    assert cmds == [nf.tc_peer_filter_del(0x12), nf.tc_peer_class_del(0x12)]
    assert dict(after.links) == {B: LinkParams(delay=0.08)}


def test_plan_removing_the_last_link_deletes_the_root() -> None:
    cur = nf.NetState(links={B: LinkParams(delay=0.08)})
    cmds, after = nf.plan(CFG, cur, nf.NetState())
    assert cmds == [cmd("tc qdisc del dev eth0 root")]
    assert after.links == {}


def test_plan_cuts_create_chain_once_then_diff_rules() -> None:
    want = nf.NetState(drops=frozenset({nf.Drop(B), nf.Drop(C)}))
    cmds, s1 = nf.plan(CFG, nf.NetState(), want)
    assert cmds == [*nf.ipt_chain_create(CHAIN), nf.ipt_add(CHAIN, nf.Drop(B)), nf.ipt_add(CHAIN, nf.Drop(C))]
    assert s1.chain
    # heal C only: one delete, the chain stays
    cmds, s2 = nf.plan(CFG, s1, nf.NetState(drops=frozenset({nf.Drop(B)})))
    assert cmds == [nf.ipt_del(CHAIN, nf.Drop(C))]
    # heal all: rules go, the chain stays (until teardown)
    cmds, s3 = nf.plan(CFG, s2, nf.NetState())
    assert cmds == [nf.ipt_del(CHAIN, nf.Drop(B))]
    assert s3.chain and not s3.drops
    # a new cut reuses the chain
    cmds, _ = nf.plan(CFG, s3, nf.NetState(drops=frozenset({nf.Drop(A, "in")})))
    assert cmds == [nf.ipt_add(CHAIN, nf.Drop(A, "in"))]


STATES = [
    nf.NetState(),
    nf.NetState(links={A: LinkParams(delay=0.01, jitter=0.002)}),
    nf.NetState(links={A: LinkParams(rate=500_000), C: LinkParams(loss=0.2, duplicate=0.1)}),
    nf.NetState(drops=frozenset({nf.Drop(B, "out", 7000)})),
    nf.NetState(links={B: LinkParams(reorder=0.5, delay=0.03)},
                drops=frozenset({nf.Drop(A), nf.Drop(C, "in")})),
]


@pytest.mark.parametrize("cur", STATES)
@pytest.mark.parametrize("want", STATES)
def test_plan_is_idempotent(cur: nf.NetState, want: nf.NetState) -> None:
    assert nf.plan(CFG, cur, cur)[0] == []
    _, after = nf.plan(CFG, cur, want)
    assert nf.plan(CFG, after, want)[0] == []


@pytest.mark.parametrize("state", STATES[1:])
def test_revert_is_the_plan_back_and_teardown_removes_all(state: nf.NetState) -> None:
    cmds, after = nf.plan(CFG, nf.NetState(), state)
    back, reverted = nf.plan(CFG, after, nf.NetState())
    assert not reverted.links and not reverted.drops
    # every rule added is deleted, every root added is deleted
    added = [c for c in cmds if c[:4] == ["iptables", "-w", "-A", CHAIN]]
    deleted = [c for c in back if c[:4] == ["iptables", "-w", "-D", CHAIN]]
    assert sorted(c[4:] for c in added) == sorted(c[4:] for c in deleted)
    assert (nf.tc_teardown() in back) == bool(state.links)
    down = nf.teardown(CFG, after)
    assert (nf.tc_teardown() in down) == bool(state.links)
    assert (nf.ipt_teardown(CHAIN)[-1] in down) == bool(state.drops)


def test_teardown_of_nothing_is_nothing() -> None:
    assert nf.teardown(CFG, nf.NetState()) == []
