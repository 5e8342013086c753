"""The gossip core on the in-memory network: rumor mongering in each mode and stop rule,
Cassandra's anti-entropy, death certificates, the endpoint state and the phi-accrual detector,
restarts, bad input. Each test is a small schedule that reads like the property it shows."""

from __future__ import annotations

from typing import Any

import pytest
from memnet import Net

from lab.checks.gossip import no_resurrection
from nodes.protocols.core import ConfigValueError, build_config
from nodes.protocols.gossip import MSG_ACK, MSG_RUMOR, MSG_SYN, Gossip

pytestmark = pytest.mark.sim

QUIET = {"heartbeat": "0s", "anti_entropy": "0s"}     # rumor mongering alone


def net(n: int = 5, seed: int = 1, **config: Any) -> Net[Gossip]:
    return Net(Gossip, n=n, seed=seed, delay=0.001, config=config, trace_messages=True)


def holders(g: Net[Gossip], value: Any) -> list[str]:
    return [n for n in g.up() if value in g.core(n).visible]


def sent(g: Net[Gossip], type: str) -> int:
    return sum(1 for e in g.trace if e["ev"] == "send" and e["type"] == type)


@pytest.mark.parametrize("mode", ["push", "pull", "push_pull"])
def test_a_rumor_reaches_every_node_in_each_mode(mode: str) -> None:
    g = net(8, mode=mode, **QUIET)
    g.request("n3", {"f": "broadcast", "value": 42})
    assert g.replies_to("c1") == [{"type": "ok"}]
    assert holders(g, 42) == ["n3"]
    g.tick(3.0)
    assert holders(g, 42) == g.names
    assert all(not g.core(n).hot for n in g.names), "the counter stop rule ends every rumor"


def test_a_quiet_push_node_sends_nothing_and_a_blind_counter_stops_after_k_rounds() -> None:
    g = net(5, fanout=2, interval="100ms", stop="counter", stop_k=3, **QUIET)
    g.tick(1.0)
    assert sent(g, MSG_RUMOR) == 0
    g.request("n1", {"f": "broadcast", "value": 1})
    g.tick(0.1)                      # n1's next round: it sends the rumor to 2 peers
    assert g.core("n1").hot[("n1", 1)][0] == 1
    g.tick(0.2)
    assert ("n1", 1) not in g.core("n1").hot, "sent in 3 rounds, then no longer hot"


def test_push_pull_feedback_counts_only_peers_that_already_knew() -> None:
    g = net(3, mode="push_pull", fanout=1, stop="counter", stop_k=2, **QUIET)
    g.request("n1", {"f": "broadcast", "value": 1})
    g.tick(0.2)
    # Every node has it; a rumor stays hot until stop_k answers said "I knew it".
    assert holders(g, 1) == g.names
    g.tick(2.0)
    assert not any(g.core(n).hot for n in g.names)
    assert sent(g, "rumor_reply") > 0


def test_stop_none_keeps_every_rumor_hot() -> None:
    g = net(4, stop="none", **QUIET)
    g.request("n2", {"f": "broadcast", "value": "x"})
    g.tick(2.0)
    assert all(("n2", 1) in g.core(n).hot for n in g.names)


def test_coin_stop_rule_ends_rumors_too() -> None:
    g = net(6, stop="coin", stop_k=2, **QUIET)
    g.request("n1", {"f": "broadcast", "value": 9})
    g.tick(5.0)
    assert not any(g.core(n).hot for n in g.names)


def cut_off_rumor(bugs: tuple[str, ...] = ()) -> Net[Gossip]:
    """n4 and n5 are cut off while a short rumor lives and dies on the other side."""
    g = net(5, fanout=1, stop_k=1, interval="50ms", anti_entropy="200ms", heartbeat="0s",
            bugs=list(bugs))
    g.partition(["n1", "n2", "n3"], ["n4", "n5"])
    g.request("n1", {"f": "broadcast", "value": 7})
    g.tick(1.0)
    assert not any(g.core(n).hot for n in g.names), "the rumor is over"
    assert holders(g, 7)[:1] == ["n1"] and "n4" not in holders(g, 7)
    g.recover()
    g.tick(3.0)
    return g


def test_anti_entropy_repairs_what_a_rumor_missed() -> None:
    g = cut_off_rumor()
    assert holders(g, 7) == g.names
    assert sent(g, MSG_SYN) > 0 and sent(g, MSG_ACK) > 0


def test_no_anti_entropy_bug_leaves_the_residue() -> None:
    g = cut_off_rumor(("no_anti_entropy",))
    assert "n4" not in holders(g, 7) and "n5" not in holders(g, 7)
    assert sent(g, MSG_SYN) == 0


def test_a_death_certificate_spreads_and_beats_the_value_it_kills() -> None:
    g = net(5, anti_entropy="200ms", heartbeat="0s")
    g.request("n1", {"f": "broadcast", "value": 5})
    g.tick(2.0)
    g.isolate("n5")                                  # n5 keeps the live value
    g.request("n2", {"f": "delete", "value": 5})
    g.tick(2.0)
    assert holders(g, 5) == ["n5"]
    g.recover()
    g.tick(3.0)
    assert holders(g, 5) == []
    assert all(5 in g.core(n).dead for n in g.names)
    g.request("n3", {"f": "broadcast", "value": 5}, client="c2")
    assert g.replies_to("c2") == [{"type": "fail", "error": "deleted"}]
    assert no_resurrection(g.run_data()).verdict == "holds"


def test_without_death_certificates_a_deleted_value_comes_back() -> None:
    g = net(5, anti_entropy="200ms", heartbeat="0s", bugs=["no_death_certificates"])
    g.request("n1", {"f": "broadcast", "value": 5})
    g.tick(2.0)
    g.request("n2", {"f": "delete", "value": 5})
    assert 5 not in g.core("n2").visible
    g.tick(2.0)
    assert holders(g, 5) == g.names, "anti-entropy brought it back to n2"
    v = no_resurrection(g.run_data())
    assert v.verdict == "violated"
    assert v.data["came_back"][0]["node"] == "n2"


def test_a_restarted_node_keeps_its_own_values_and_relearns_the_rest() -> None:
    g = net(4, anti_entropy="200ms", heartbeat="0s")
    g.request("n1", {"f": "broadcast", "value": 1})
    g.request("n2", {"f": "broadcast", "value": 2})
    g.request("n2", {"f": "delete", "value": 1})
    g.isolate("n2")                       # n2's updates reach nobody before it crashes
    g.crash("n2")
    g.restart("n2")
    core = g.core("n2")
    assert core.gen == 2 and core.seq == 2
    assert core.visible == {2} and core.dead == {1}
    g.recover()
    g.tick(3.0)
    assert holders(g, 2) == g.names and holders(g, 1) == []


def test_endpoint_state_load_and_schema_converge() -> None:
    g = net(5, anti_entropy="200ms", heartbeat="100ms")
    for i, node in enumerate(("n1", "n1", "n3")):
        g.request(node, {"f": "broadcast", "value": i})
    g.request("n4", {"f": "schema", "value": "v2"})
    g.tick(4.0)
    snaps = [g.core(n).snapshot() for n in g.names]
    assert all(s == snaps[0] for s in snaps)
    assert snaps[0]["schema"] == [1, "v2", "n4"]
    assert snaps[0]["endpoints"]["n1"][1] == 2 and snaps[0]["endpoints"]["n3"][1] == 1
    assert all(e[0] == 1 for e in snaps[0]["endpoints"].values())


def test_the_phi_detector_convicts_a_crashed_node_and_clears_it_when_it_returns() -> None:
    g = net(4, anti_entropy="200ms", heartbeat="100ms", phi_threshold=4)
    g.tick(3.0)
    assert not any(g.core(n).down for n in g.names)
    g.crash("n4")
    g.tick(3.0)
    assert all(g.core(n).down == {"n4"} for n in ("n1", "n2", "n3"))
    assert any(e["ev"] == "state" and e["data"].get("peer") == "n4" and e["data"]["up"] is False
               for e in g.trace)
    g.restart("n4")
    g.tick(3.0)
    assert not any(g.core(n).down for n in g.names)
    assert g.core("n1").endpoints["n4"][0] == 2, "the new generation is known"


def test_malformed_messages_are_dropped_and_counted() -> None:
    g = net(3, **QUIET)
    core = g.core("n1")
    for type, body in [(MSG_RUMOR, {"u": [["n2", 1, "v", 1]]}),           # no hb
                       (MSG_RUMOR, {"u": [["zz", 1, "v", 1]], "hb": [1, 0]}),   # unknown origin
                       (MSG_RUMOR, {"u": [["n2", 0, "v", 1]], "hb": [1, 0]}),   # seq 0
                       (MSG_RUMOR, {"u": [["n2", 1, "v", [1]]], "hb": [1, 0]}),  # bad value
                       (MSG_SYN, {"d": [1, 2], "x": {}}),                        # short digest
                       (MSG_ACK, {"u": [], "e": {"n2": [1]}, "d": {}, "x": {}})]:
        core.handle_message("n2", type, body)
    core.handle_message("zz", MSG_RUMOR, {"u": [], "hb": [1, 0]})
    assert core.dropped == 7
    assert core.visible == set()


def test_client_ops_and_their_errors() -> None:
    g = net(2, **QUIET)
    for op in ({"f": "broadcast", "value": 1.5}, {"f": "cas", "value": 1},
               {"f": "broadcast", "value": "a"}, {"f": "broadcast", "value": 3},
               {"f": "broadcast", "value": 3}, {"f": "read"}):
        g.request("n1", op)
    assert [r["type"] for r in g.replies_to("c1")] == ["fail", "fail", "ok", "ok", "ok", "ok"]
    assert g.replies_to("c1")[-1]["value"] == [3, "a"]
    assert g.core("n1").seq == 2, "a value already held is not broadcast twice"
    g.request("n1", {"f": "read", "full": True}, client="c2")
    assert g.replies_to("c2")[0]["state"]["values"] == [3, "a"]


def test_tunables_are_checked_and_presets_override_only_what_differs() -> None:
    with pytest.raises(ConfigValueError, match="mode"):
        build_config(Gossip, {"mode": "shout"})
    with pytest.raises(ConfigValueError, match="stop"):
        build_config(Gossip, {"stop": "never"})
    with pytest.raises(ConfigValueError, match="interval"):
        build_config(Gossip, {"interval": "0s"})
    cfg = build_config(Gossip, {"preset": "efficient", "fanout": 3})
    assert (cfg.fanout, cfg.interval, cfg.stop_k, cfg.anti_entropy) == (3, 0.06, 3, 1.0)
    assert build_config(Gossip, {"preset": "cassandra"}).fanout == 0
