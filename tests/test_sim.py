"""The simulator: network model, node faults, timers, Lamport clocks, trace files, determinism."""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.errors import BackendError, CheckError, ConfigError, ProtocolError
from lab.scenario import LinkParams, LinkRule, NetworkSpec, NodeSpec, Scenario
from lab.sim import NetworkModel, SimBackend
from lab.targets import partition_cuts
from lab.tracefile import encode_event, merge, read_trace, write_trace
from nodes.protocols.core import Core

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "sim_determinism_child.py"


# -- a probe core: every behaviour the runtime must host, one op each -------------------------

class Probe(Core):
    name = "probe"
    message_types = frozenset({"ping", "pong", "fwd"})

    def start(self) -> None:
        self.volatile = 0
        self.boots = self.ctx.storage.get("boots", 0) + 1
        self.ctx.storage.put("boots", self.boots)
        self.draw = self.ctx.rng.random()

    def handle_request(self, client: str, op: dict[str, Any]) -> None:
        f = op["f"]
        if f == "timer":
            self.ctx.set_timer(op["name"], op["after"])
            self.ctx.reply(client, {"type": "ok"})
        elif f == "cancel":
            self.ctx.cancel_timer(op["name"])
            self.ctx.reply(client, {"type": "ok"})
        elif f == "bump":
            self.volatile += 1
            durable = self.ctx.storage.get("durable", 0) + 1
            self.ctx.storage.put("durable", durable)
            self.ctx.reply(client, {"type": "ok", "volatile": self.volatile, "durable": durable,
                                    "boots": self.boots})
        elif f == "ping":
            self.ctx.send(op["peer"], "ping", {"client": client, "n": op.get("n", 0)})
        elif f == "send":
            self.ctx.send(op["peer"], op["type"], op.get("body", {}))
            self.ctx.reply(client, {"type": "ok"})
        elif f == "forward":        # another node answers this node's client
            self.ctx.send(op["peer"], "fwd", {"client": client})
        elif f == "hold":
            pass            # never answered: the client's request stays pending at this node
        elif f == "spin":
            self.ctx.set_timer("spin", 0.0)

    def handle_message(self, src: str, type: str, body: dict[str, Any]) -> None:
        self.ctx.storage.log_append("got", [[src, type, body.get("n"), self.ctx.now()]])
        if type == "fwd":
            self.ctx.reply(body["client"], {"type": "ok", "by": self.ctx.node})
        elif type == "ping":
            body["mutated"] = True      # must not leak back to the sender's dict
            self.ctx.send(src, "pong", body)
        else:
            self.ctx.reply(body.get("client", "nobody"), {"type": "ok", "n": body.get("n"), "from": src})

    def handle_timer(self, name: str) -> None:
        self.ctx.storage.log_append("fired", [[name, self.ctx.now()]])
        if name == "spin":
            self.ctx.set_timer("spin", 0.0)

    def status(self) -> dict[str, Any]:
        return {"boots": self.boots, "volatile": self.volatile}


def make(n: int = 3, seed: int = 1, core: type[Core] | None = Probe, **link: Any) -> SimBackend:
    scenario = Scenario(name="t", protocol="register", nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)],
                        network=NetworkSpec(default=LinkParams(**{"delay": 0.01, **link})))
    sim = SimBackend(scenario, seed, "/nonexistent", core=core)
    sim.start()
    return sim


def ask(sim: SimBackend, node: str, op: dict[str, Any], until: float | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sim.submit(node, op, out.append)
    if until is not None:
        sim.run_until(until)
    return out


def events(sim: SimBackend, ev: str, node: str | None = None) -> list[dict[str, Any]]:
    return [e for e in sim.trace_events() if e["ev"] == ev and (node is None or e["node"] == node)]


# -- network model ---------------------------------------------------------------------------

def model(**params: Any) -> NetworkModel:
    return NetworkModel(NetworkSpec(default=LinkParams(**params)), random.Random(7))


def test_loss_fraction_matches_setting():
    net = model(delay=0.01, loss=0.3)
    fates = [net.transmit("a", "b", 0.0, 10)[0] for _ in range(20000)]
    assert set(fates) == {None, "loss"}
    assert abs(fates.count("loss") / len(fates) - 0.3) < 0.02


def test_duplicate_fraction_and_both_copies_arrive():
    net = model(delay=0.01, duplicate=0.2)
    copies = [len(net.transmit("a", "b", 0.0, 10)[1]) for _ in range(20000)]
    assert set(copies) == {1, 2}
    assert abs(copies.count(2) / len(copies) - 0.2) < 0.02


@pytest.mark.parametrize("distribution,lo,hi,mean", [
    ("constant", 0.010, 0.010, 0.010),
    ("uniform", 0.008, 0.012, 0.010),
    ("exponential", 0.010, float("inf"), 0.012),
])
def test_delay_bounds_and_mean(distribution, lo, hi, mean):
    net = model(delay=0.010, jitter=0.002, distribution=distribution)
    delays = [net.transmit("a", "b", 5.0, 10)[1][0] - 5.0 for _ in range(20000)]
    assert min(delays) >= lo - 1e-12 and max(delays) <= hi + 1e-12
    assert abs(statistics.fmean(delays) - mean) < 0.0002
    if distribution != "constant":
        assert statistics.pstdev(delays) > 0.0005


def test_uniform_jitter_larger_than_delay_never_goes_back_in_time():
    net = model(delay=0.001, jitter=0.005)
    assert min(net.transmit("a", "b", 1.0, 10)[1][0] for _ in range(5000)) >= 1.0


def test_reorder_lets_messages_overtake_and_plain_links_stay_fifo():
    reordering = model(delay=0.01, reorder=0.25)
    arrivals = [reordering.transmit("a", "b", i * 0.001, 10)[1][0] for i in range(2000)]
    overtaken = sum(1 for x, y in zip(arrivals, arrivals[1:], strict=False) if y < x)
    assert overtaken > 100
    assert max(b - a for a, b in zip((i * 0.001 for i in range(2000)), arrivals, strict=False)) <= 0.03 + 1e-9

    fifo = model(delay=0.05)
    first = fifo.transmit("a", "b", 0.0, 10)[1][0]
    fifo.set_link("a", "b", LinkParams(delay=0.001))      # faster link must not overtake what is in flight
    second = fifo.transmit("a", "b", 0.001, 10)[1][0]
    assert second >= first


def test_rate_limit_queues_messages_behind_each_other():
    net = model(delay=0.0, rate=80_000)                  # 10 kB/s
    a = net.transmit("a", "b", 0.0, 936)[1][0]            # 1000 bytes with the envelope: 0.1 s
    b = net.transmit("a", "b", 0.0, 936)[1][0]
    assert a == pytest.approx(0.1) and b == pytest.approx(0.2)
    assert net.transmit("b", "a", 0.0, 936)[1][0] == pytest.approx(0.1)   # a link of its own


def test_one_way_cut_drops_only_that_direction():
    net = model(delay=0.01)
    net.set_cuts(partition_cuts([["n1"], ["n2", "n3"]], oneway=True))
    assert net.transmit("n1", "n2", 0.0, 1)[0] == "partition"
    assert net.transmit("n1", "n3", 0.0, 1)[0] == "partition"
    assert net.transmit("n2", "n1", 0.0, 1)[0] is None
    assert net.transmit("n2", "n3", 0.0, 1)[0] is None
    net.set_cuts(frozenset())
    assert net.transmit("n1", "n2", 0.0, 1)[0] is None


def test_intersecting_partitions_are_a_union_of_cuts():
    names = ["n1", "n2", "n3", "n4", "n5"]
    net = model(delay=0.01)
    # {n1,n2 | n3,n4,n5} and {n1,n3 | n2,n4,n5}: only pairs on the same side of both talk
    net.set_cuts(partition_cuts([["n1", "n2"], ["n3", "n4", "n5"]]) | partition_cuts([["n1", "n3"], ["n2", "n4", "n5"]]))
    talks = {(a, b) for a in names for b in names if a != b and net.transmit(a, b, 0.0, 1)[0] is None}
    assert talks == {("n4", "n5"), ("n5", "n4")}


def test_link_settings_are_validated():
    net = model()
    for bad in (LinkParams(loss=1.5), LinkParams(delay=-1.0), LinkParams(distribution="pareto")):
        with pytest.raises(ValueError):
            net.set_link("a", "b", bad)
    sim = make()
    with pytest.raises(BackendError):
        sim.set_link("n1", "n2", LinkParams(duplicate=-0.1))
    with pytest.raises(BackendError):
        sim.set_cuts(frozenset({("n1", "n9")}))


def test_bad_settings_are_config_errors_before_the_run():
    nodes = [NodeSpec("n1"), NodeSpec("n2")]
    with pytest.raises(ConfigError, match="every link: unknown delay distribution"):
        SimBackend(Scenario(name="t", protocol="register", nodes=nodes,
                            network=NetworkSpec(default=LinkParams(distribution="normal"))), 1, "/x")
    with pytest.raises(ConfigError, match="config.election_timeout"):
        SimBackend(Scenario(name="t", protocol="register", nodes=nodes, config={"election_timeout": 3}), 1, "/x")
    with pytest.raises(BackendError, match="unknown protocol"):
        SimBackend(Scenario(name="t", protocol="nope", nodes=nodes), 1, "/x")


def test_network_stream_is_seeded():
    def fates(seed: int) -> list[Any]:
        net = NetworkModel(NetworkSpec(default=LinkParams(delay=0.01, jitter=0.01, loss=0.2)), random.Random(seed))
        return [net.transmit("a", "b", 0.0, 1) for _ in range(200)]
    assert fates(3) == fates(3) != fates(4)


# -- the backend: clients, messages, faults --------------------------------------------------------

def test_request_reply_and_message_round_trip_take_link_delays():
    sim = make(delay=0.01)
    out = ask(sim, "n1", {"f": "ping", "peer": "n2", "n": 5}, until=1.0)
    assert out == [{"type": "ok", "n": 5, "from": "n2"}]
    # client link 10 ms, n1->n2 10 ms, n2->n1 10 ms, reply 10 ms
    got = sim.storage("n1").log_read("got")
    assert got == [["n2", "pong", 5, pytest.approx(0.03)]]
    assert sim.now() == 1.0
    sends, recvs = events(sim, "send"), events(sim, "recv")
    assert [e["mid"] for e in sends] == [e["mid"] for e in recvs]
    assert recvs[0]["peer"] == "n1" and sends[0]["peer"] == "n2"


def test_bodies_are_copied_across_the_wire():
    sim = make()
    body = {"n": 1, "client": "x", "nested": [1, 2]}
    sim.core("n1").ctx.send("n2", "ping", body)     # n2 marks its copy and echoes it back
    sim.run_until(1.0)
    assert body == {"n": 1, "client": "x", "nested": [1, 2]}
    assert sim.storage("n1").log_read("got")[0][:3] == ["n2", "pong", 1]


def test_any_node_may_answer_a_client_and_answers_in_flight_survive_a_crash():
    sim = make(delay=0.01)
    out = ask(sim, "n1", {"f": "forward", "peer": "n3"}, until=0.025)   # n3 replies at 0.02
    sim.crash("n3")                                                       # its reply is on the wire
    sim.run_until(1.0)
    assert out == [{"type": "ok", "by": "n3"}]
    (reply,) = events(sim, "reply")
    assert reply["node"] == "n3" and reply["data"]["client"] == events(sim, "request")[0]["data"]["client"]


def test_crash_of_the_forwarding_node_loses_its_clients():
    sim = make(delay=0.01)
    out = ask(sim, "n1", {"f": "forward", "peer": "n3"}, until=0.015)   # request taken by n1
    sim.crash("n1")                                                       # the client was n1's
    sim.run_until(1.0)
    assert out == [] and len(events(sim, "reply")) == 1                  # n3 answered into the void


def test_links_without_jitter_are_fifo_and_reordering_links_are_not():
    def order(**link: Any) -> list[int]:
        sim = make(**link)
        for n in range(60):
            sim.call_at(n * 0.001, lambda n=n: sim.core("n1").ctx.send("n2", "ping", {"n": n}))
        sim.run_until(2.0)
        return [g[2] for g in sim.storage("n2").log_read("got")]
    assert order(delay=0.01) == list(range(60))
    assert order(delay=0.01, distribution="constant", jitter=0.05) == list(range(60))
    jumbled = order(delay=0.01, reorder=0.5)
    assert sorted(jumbled) == list(range(60)) and jumbled != list(range(60))


def test_same_seed_same_events_in_one_process_and_seeds_differ():
    def trace(seed: int) -> list[dict[str, Any]]:
        sim = make(n=3, seed=seed, delay=0.01, jitter=0.01, loss=0.1, duplicate=0.1)
        for n in range(100):
            sim.call_at(n * 0.01, lambda n=n: sim.submit(f"n{n % 3 + 1}", {"f": "ping", "peer": f"n{(n + 1) % 3 + 1}"},
                                                         lambda r: None))
        sim.run_until(3.0)
        return sim.trace_events()
    assert trace(8) == trace(8) != trace(9)


def test_unencodable_body_and_unknown_peer_are_protocol_errors():
    sim = make()
    ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping"}, until=0.5)   # fine
    with pytest.raises(ProtocolError, match="wire"):
        sim.core("n1").ctx.send("n2", "ping", {"x": {1, 2}})
    with pytest.raises(ProtocolError, match="unknown node"):
        sim.core("n1").ctx.send("n9", "ping", {})


def test_unknown_message_type_is_dropped_and_traced():
    sim = make()
    ask(sim, "n1", {"f": "send", "peer": "n2", "type": "bogus"}, until=0.5)
    (drop,) = events(sim, "drop")
    assert drop["node"] == "n2" and drop["data"] == {"reason": "unknown_type"} and drop["type"] == "bogus"
    assert sim.storage("n2").log_read("got") == []


def test_partition_drops_between_nodes_but_not_client_traffic():
    sim = make()
    sim.set_cuts(partition_cuts([["n1"], ["n2", "n3"]]))
    out = ask(sim, "n1", {"f": "ping", "peer": "n2"}, until=1.0)
    assert out == []
    (drop,) = events(sim, "drop")
    assert drop["node"] == "n1" and drop["peer"] == "n2" and drop["data"]["reason"] == "partition"
    assert ask(sim, "n1", {"f": "bump"}, until=2.0)[0]["type"] == "ok"     # the client still gets through
    sim.set_cuts(frozenset())
    assert ask(sim, "n1", {"f": "ping", "peer": "n2"}, until=3.0)[0]["from"] == "n2"


def test_crash_keeps_storage_drops_volatile_state_and_pending_requests():
    sim = make()
    for t in (1, 2, 3):
        ask(sim, "n1", {"f": "bump"}, until=t)
    assert sim.status("n1") == {"boots": 1, "volatile": 3}
    held = ask(sim, "n1", {"f": "hold"}, until=3.5)                      # pending at n1
    draw_before = sim.core("n1").draw
    sim.crash("n1")
    assert sim.status("n1") is None and sim.node_state("n1") == "down" and sim.core("n1") is None
    lost = ask(sim, "n1", {"f": "bump"}, until=4.0)
    ask(sim, "n2", {"f": "send", "peer": "n1", "type": "ping", "body": {"n": 9}}, until=4.5)
    assert lost == [] and held == []
    (drop,) = events(sim, "drop")
    assert drop["node"] == "n1" and drop["data"]["reason"] == "node_down" and drop["peer"] == "n2"

    sim.restart("n1")
    logs = [e["data"]["msg"] for e in events(sim, "log", "n1")]
    assert logs == ["started", "recovered"]
    out = ask(sim, "n1", {"f": "bump"}, until=5.0)
    assert out == [{"type": "ok", "volatile": 1, "durable": 4, "boots": 2}]
    assert sim.core("n1").draw != draw_before                            # a fresh rng per incarnation
    # the request that was pending when n1 crashed stays unanswered, even after the restart
    sim.run_until(10.0)
    assert held == []


def test_restart_of_a_running_node_is_crash_then_start():
    sim = make()
    ask(sim, "n2", {"f": "bump"}, until=1.0)
    sim.restart("n2")
    assert sim.status("n2") == {"boots": 2, "volatile": 0}


def test_crash_discards_timers_and_restart_does_not_revive_them():
    sim = make()
    ask(sim, "n1", {"f": "timer", "name": "t", "after": 2.0}, until=0.5)
    sim.crash("n1")
    sim.run_until(1.0)
    sim.restart("n1")
    sim.run_until(5.0)
    assert sim.storage("n1").log_read("fired") == [] and events(sim, "timer") == []


def test_timers_are_replaced_and_cancelled():
    sim = make()
    ask(sim, "n1", {"f": "timer", "name": "a", "after": 1.0}, until=0.5)        # would fire at 1.01
    ask(sim, "n1", {"f": "timer", "name": "a", "after": 1.0}, until=0.8)        # replaces: fires at 1.51
    ask(sim, "n1", {"f": "timer", "name": "b", "after": 0.5}, until=0.9)
    ask(sim, "n1", {"f": "cancel", "name": "b"}, until=1.2)                     # b was due at 1.01
    ask(sim, "n1", {"f": "timer", "name": "c", "after": 0.3}, until=1.3)
    ask(sim, "n1", {"f": "cancel", "name": "c"}, until=3.0)                     # c was due at 1.61
    fired = sim.storage("n1").log_read("fired")
    assert fired == [["a", pytest.approx(1.51)]]
    (timer,) = events(sim, "timer")
    assert timer["type"] == "a" and timer["ts"] == pytest.approx(1.51)


def test_a_timer_set_again_fires_once_at_its_last_time_in_the_order_it_was_set():
    sim = make()
    ctx = sim.core("n1").ctx
    seen: list[tuple[str, float]] = []
    fired = lambda: [(e["type"], e["ts"]) for e in events(sim, "timer")]  # noqa: E731
    sim.call_at(0.0, lambda: ctx.set_timer("a", 1.0))                   # due 1.0
    sim.call_at(1.5, lambda: seen.append(("set before", len(fired()))))
    sim.call_at(0.2, lambda: ctx.set_timer("a", 1.6))                   # later: 1.8
    sim.call_at(0.4, lambda: ctx.set_timer("a", 1.1))                   # back to 1.5
    sim.call_at(0.5, lambda: ctx.set_timer("a", 1.0))                   # 1.5 again, set last
    sim.call_at(0.6, lambda: sim.call_at(1.5, lambda: seen.append(("set after", len(fired())))))
    sim.call_at(0.1, lambda: ctx.set_timer("b", 2.0))                   # due 2.1 ...
    sim.call_at(0.3, lambda: ctx.set_timer("b", 0.2))                   # ... then sooner: 0.5
    for i in range(100):                                                # many resets: one heap entry
        sim.call_at(0.01 * i, lambda: ctx.set_timer("c", 10.0))
    sim.run_until(1.2)
    assert sum(1 for e in sim._heap if e[2] == sim._wake) <= 3
    sim.run_until(12.0)
    assert fired() == [("b", 0.5), ("a", 1.5), ("c", pytest.approx(10.99))]
    assert seen == [("set before", 1), ("set after", 2)]                 # ties keep scheduling order
    for i in range(50):                 # timers named per transaction, as 2PC's: nothing stays behind
        ctx.set_timer(f"t{i}", 1.0 + i % 3)
        if i % 2:
            ctx.cancel_timer(f"t{i}")
    sim.run_until(20.0)
    slot = sim._nodes["n1"]
    assert len(fired()) == 3 + 25 and not (slot.timers or slot.due or slot.armed)


def test_pause_holds_messages_timers_and_requests_and_resume_delivers_them_in_order():
    sim = make()
    ask(sim, "n2", {"f": "timer", "name": "t", "after": 0.5}, until=0.1)       # due at 0.51
    sim.pause("n2")
    assert sim.status("n2") is None and sim.node_state("n2") == "paused"
    for n in range(3):
        ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping", "body": {"n": n, "client": "x"}})
    bumped = ask(sim, "n2", {"f": "bump"}, until=2.0)
    assert bumped == [] and sim.storage("n2").log_read("got") == [] and events(sim, "recv", "n2") == []
    assert sim.storage("n2").log_read("fired") == []
    sim.resume("n2")
    sim.run_until(2.0)
    assert [g[2] for g in sim.storage("n2").log_read("got")] == [0, 1, 2]
    assert all(g[3] == 2.0 for g in sim.storage("n2").log_read("got"))
    assert sim.storage("n2").log_read("fired") == [["t", 2.0]]
    sim.run_until(3.0)
    assert bumped and bumped[0]["volatile"] == 1                            # state survived the pause


def test_crash_while_paused_drops_what_was_held():
    sim = make()
    sim.pause("n2")
    ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping", "body": {"n": 1}}, until=1.0)
    sim.crash("n2")
    sim.restart("n2")
    sim.run_until(2.0)
    assert sim.storage("n2").log_read("got") == []
    assert [e["data"]["reason"] for e in events(sim, "drop")] == ["node_down"]


def test_call_at_and_run_until_follow_virtual_time():
    sim = make()
    seen = []
    sim.call_at(2.0, lambda: seen.append(("a", sim.now())))
    sim.call_at(1.0, lambda: seen.append(("b", sim.now())))
    sim.call_at(1.0, lambda: seen.append(("c", sim.now())))
    sim.run_until(1.0)
    assert seen == [("b", 1.0), ("c", 1.0)]
    sim.call_at(0.5, lambda: seen.append(("past", sim.now())))          # in the past: runs now
    sim.run_until(3.0)
    assert seen[2:] == [("past", 1.0), ("a", 2.0)] and sim.now() == 3.0


def test_zero_delay_timer_loop_is_reported_not_hung():
    sim = make()
    sim.max_same_instant = 1000
    ask(sim, "n1", {"f": "spin"})
    with pytest.raises(BackendError, match="without time moving"):
        sim.run_until(1.0)


def test_core_exceptions_propagate_with_where_and_when():
    class Broken(Probe):
        def handle_timer(self, name: str) -> None:
            raise RuntimeError("boom")
    sim = make(core=Broken)
    ask(sim, "n3", {"f": "timer", "name": "x", "after": 0.1})
    thresholds = gc.get_threshold()
    with pytest.raises(RuntimeError, match="boom") as info:
        sim.run_until(1.0)
    assert any("node n3" in note and "seed 1" in note for note in info.value.__notes__)
    assert gc.get_threshold() == thresholds         # the loop's setting does not outlive it


def test_the_loop_collects_only_the_youngest_generation_and_puts_the_setting_back():
    sim = make()
    seen = []
    sim.call_at(0.5, lambda: seen.append(gc.get_threshold()))
    thresholds = gc.get_threshold()
    sim.run_until(1.0)
    assert seen[0][0] == thresholds[0] and min(seen[0][1:]) > 1_000_000 and gc.get_threshold() == thresholds


# -- Lamport clocks ---------------------------------------------------------------------------

def test_lamport_clocks_respect_happens_before():
    sim = make(n=4, seed=5, delay=0.01, jitter=0.02, reorder=0.3, duplicate=0.2, loss=0.1)
    rng = random.Random(1)
    for i in range(300):
        a, b = rng.sample(["n1", "n2", "n3", "n4"], 2)
        sim.call_at(i * 0.01, lambda a=a, b=b, i=i: sim.submit(a, {"f": "ping", "peer": b, "n": i}, lambda r: None))
    sim.call_at(1.5, lambda: sim.pause("n3"))
    sim.call_at(2.0, lambda: sim.resume("n3"))
    sim.call_at(2.2, lambda: sim.crash("n4"))
    sim.call_at(2.6, lambda: sim.restart("n4"))
    sim.run_until(5.0)
    trace = sim.trace_events()
    sends = {e["mid"]: e for e in trace if e["ev"] == "send"}
    recvs = [e for e in trace if e["ev"] == "recv"]
    assert len(recvs) > 300
    for r in recvs:
        s = sends[r["mid"]]
        assert r["lc"] > s["lc"] and r["ts"] >= s["ts"] and r["peer"] == s["node"] and s["peer"] == r["node"]
    per_node: dict[str, list[int]] = {}
    for e in trace:
        per_node.setdefault(e["node"], []).append(e["lc"])
    for clocks in per_node.values():
        assert all(x < y for x, y in zip(clocks, clocks[1:], strict=False))
    assert any(e["data"]["reason"] == "loss" for e in trace if e["ev"] == "drop")
    assert len(recvs) > len({r["mid"] for r in recvs})                  # duplicates were delivered


def test_trace_events_are_sorted_by_time_then_node():
    sim = make(delay=0.0)
    for node in ("n3", "n1", "n2"):
        ask(sim, node, {"f": "bump"})
    sim.run_until(1.0)
    trace = sim.trace_events()
    assert trace == sorted(trace, key=lambda e: (e["ts"], e["node"]))
    requests = [e for e in trace if e["ev"] == "request"]
    assert [e["node"] for e in requests] == ["n1", "n2", "n3"]


def test_core_trace_fields_go_under_data_except_message_fields():
    sim = make()
    sim.core("n1").ctx.trace("state", role="leader", term=3, peer="n2")
    (e,) = events(sim, "state")
    assert e["data"] == {"role": "leader", "term": 3} and e["peer"] == "n2" and e["node"] == "n1"


# -- trace files --------------------------------------------------------------------------------

def test_trace_file_round_trip_is_canonical(tmp_path):
    evs = [{"ts": 0.1 + 0.2, "node": "n1", "lc": 1, "ev": "log", "data": {"msg": "started", "b": 1, "a": 2}},
           {"ts": 1.0, "node": "n2", "lc": 3, "ev": "send", "mid": 1, "type": "x", "peer": "n1"}]
    path = tmp_path / "trace.jsonl"
    assert write_trace(evs, path) == 2
    lines = path.read_text().splitlines()
    assert lines[0] == '{"data":{"a":2,"b":1,"msg":"started"},"ev":"log","lc":1,"node":"n1","ts":0.3}'
    back = read_trace(path)
    assert back[1] == evs[1] and back[0]["ts"] == 0.3
    write_trace(back, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_a_message_event_is_the_line_the_json_encoder_writes():
    rng = random.Random(3)
    texts = ["n1", "append_entries", 'quo"te', "back\\slash", "tab\t", "é", "\u2603", "", "\x00"]
    floats = [0.0, -0.0, 1.5, 1e-07, 123456.123456, 1e22, 2.5e-05, float("nan"), float("inf")]
    ints = [0, -1, 7, 2**70, -(2**64)]
    reference = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    for _ in range(500):
        ev = {"ts": rng.choice(floats), "node": rng.choice(texts), "lc": rng.choice(ints),
              "ev": rng.choice(["send", "recv", *texts]), "mid": rng.choice(ints),
              "type": rng.choice(texts), "peer": rng.choice(texts)}
        if rng.random() < 0.2:      # not a message's shape, or a value of another type
            ev[rng.choice(["mid", "lc", "peer", "extra"])] = rng.choice([True, None, "7", 1.0, [1]])
        assert encode_event(ev) == reference.encode({**ev, "ts": round(ev["ts"], 6)}), ev


def test_read_trace_names_the_bad_line(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"ts": 0, "node": "n1"}\n{oops\n')
    with pytest.raises(CheckError, match="trace.jsonl:2"):
        read_trace(path)
    with pytest.raises(CheckError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")


def test_merge_sorts_by_time_then_node_and_is_stable():
    a = [{"ts": 1.0, "node": "n2", "ev": "x", "i": 0}, {"ts": 2.0, "node": "n2", "ev": "y", "i": 1}]
    b = [{"ts": 1.0, "node": "lab", "ev": "fault", "i": 2}, {"ts": 1.0, "node": "n2", "ev": "z", "i": 3}]
    assert [e["i"] for e in merge([a, b])] == [2, 0, 3, 1]


# -- determinism across processes -----------------------------------------------------------------

def run_children(tmp_path: Path, runs: list[tuple[int, str]]) -> list[bytes]:
    """Run the child once per (seed, PYTHONHASHSEED), all at once; return each trace file's bytes."""
    procs, outs = [], []
    for i, (seed, hashseed) in enumerate(runs):
        out = tmp_path / f"trace{i}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        procs.append(subprocess.Popen([sys.executable, str(CHILD), str(seed), str(out)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        outs.append(out)
    try:
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [o.read_bytes() for o in outs]


def test_same_seed_gives_byte_identical_trace_across_processes(tmp_path):
    first, second, other = run_children(tmp_path, [(42, "1"), (42, "2"), (43, "1")])
    assert first.count(b"\n") > 1000
    assert first == second
    assert first != other


# -- with the real protocols -----------------------------------------------------------------------

def raft_available() -> bool:
    try:
        from nodes.protocols import get
        get("raft")
    except (ImportError, KeyError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not raft_available(), reason="nodes/protocols/raft.py not importable")
def test_raft_in_the_sim_recovers_from_a_leader_crash():
    scenario = Scenario(name="t", protocol="raft", nodes=[NodeSpec(f"n{i}") for i in range(1, 6)],
                        network=NetworkSpec(default=LinkParams(delay=0.002, jitter=0.001)))
    sim = SimBackend(scenario, 3, "/nonexistent")
    sim.start()
    sim.run_until(2.0)

    def leaders() -> list[str]:
        return [n for n in scenario.node_names if (sim.status(n) or {}).get("role") == "leader"]

    (old,) = leaders()
    written = ask(sim, old, {"f": "write", "key": "x", "value": 1, "client": "t", "seq": 1}, until=2.5)
    assert written and written[0]["type"] == "ok"
    sim.crash(old)
    sim.run_until(5.0)
    (new,) = leaders()
    assert new != old
    sim.restart(old)
    sim.run_until(6.0)
    assert leaders() == [new]
    read = ask(sim, new, {"f": "read", "key": "x", "client": "t", "seq": 2}, until=6.5)
    assert read and read[0]["type"] == "ok" and read[0]["value"] == 1


def test_bench_drives_a_closed_loop_without_timeouts():
    sys.path.insert(0, str(ROOT))
    try:
        from bench.sim_bench import measure
    finally:
        sys.path.remove(str(ROOT))
    protocol = "raft" if raft_available() else "register"
    out = measure(protocol, seconds=1.0, clients=4)
    assert out["ops_ok"] > 50 and out["timeouts"] == 0 and out["sim_per_wall"] > 0
    assert out["trace_level"] == "all"
    lean = measure(protocol, seconds=1.0, clients=4, trace="protocol")
    # The same run, fewer lines; the row says which level it used (a string, not the events).
    assert lean["trace_level"] == "protocol" and lean["ops_ok"] == out["ops_ok"]
    assert 0 < lean["trace_events"] < out["trace_events"]


# -- scale ------------------------------------------------------------------------------------------

def test_a_thousand_node_lab_starts_without_a_cost_per_pair_of_nodes():
    """A million directed links: those on the default parameters must cost nothing (one
    object per link made this start take 1.6 GB); only the overridden one holds an object."""
    import tracemalloc
    names = [f"n{i}" for i in range(1, 1001)]
    slow = LinkRule("n1", "n2", LinkParams(delay=0.05))
    sc = Scenario(name="big", protocol="register", nodes=[NodeSpec(n) for n in names],
                  network=NetworkSpec(default=LinkParams(delay=0.002), links=(slow,)))
    tracemalloc.start()
    try:
        sim = SimBackend(sc, 1, "/nonexistent")
        sim.start()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000, f"{peak / 1e6:.0f} MB to start 1,000 nodes"
    assert sim.network.links_kept() == 1
    answers: list[dict[str, Any]] = []
    for src, dst in (("n1", "n2"), ("n999", "n1000"), ("n500", "n1")):
        sim.submit(src, {"f": "echo", "peer": dst}, answers.append)
    sim.run_until(1.0)
    assert [a["value"] for a in answers] == ["n1000", "n1", "n2"]      # n1->n2 is the slow link
    assert sim.network.links_kept() == 6   # FIFO default links get one once they carry a message
