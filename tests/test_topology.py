"""The scenario YAML loader: what each key means, and that every mistake says file:line: field."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import topology
from lab.errors import ConfigError, LabError
from lab.scenario import LinkParams, LinkRule, NodeSpec, Scenario
from lab.topology import (
    duration_text,
    load_scenario,
    load_scenario_text,
    percent_text,
    scenario_to_dict,
)
from nodes import protocols
from nodes.protocols.core import Core, Tunables
from nodes.units import parse_duration, parse_percent

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))

FULL = """\
name: full
description: every key once
protocol: register
nodes:
  - n1
  - {name: n2, role: coordinator, region: eu, rack: 3}
  - {name: n3, region: us}
config: {bugs: []}
network:
  delay: 2ms
  jitter: 500us
  distribution: exponential
  loss: 1%
  links:
    - {from: n1, to: [n2, n3], delay: 80ms}
    - {from: n3, to: n1, oneway: true, loss: 10%, rate: 1mbit}
workload: {kind: kv, clients: 3, rate: 100/s, duration: 25s, timeout: 500ms, keys: 4, read_ratio: 0.25}
faults:
  - {at: 10s, heal: all}
  - {at: 5s, partition: [[n1, n2], [n2, n3]], oneway: true, for: 2s}
  - {at: 12s, crash: leader, for: 1.5s}
  - {at: 13s, restart: [n1, crashed]}
  - {at: 14s, pause: random}
  - {at: 15s, resume: paused}
  - {at: 16s, delay: {from: n1, delay: 100ms, jitter: 10ms, distribution: constant}}
  - {at: 17s, loss: 20%}
  - {at: 18s, duplicate: {from: leader, to: [n2, n3], value: 5%}, oneway: true}
  - {at: 19s, reorder: {nodes: n2, value: 50%}}
  - {at: 20s, rate: {from: n1, rate: 500kbit}}
  - {at: 21s, partition: leader}
checks: [{name: linearizable, time_limit: 2s}]
expect: {linearizable: violated}
seed: 42
settle: 3s
"""


def load(text: str, **kw: Any) -> Scenario:
    return load_scenario_text(textwrap.dedent(text), path="t.yaml", **kw)


def error(text: str, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, **kw)
    return info.value


def normal(s: Scenario) -> Scenario:
    """A scenario without what a round trip may change: source, raw and line numbers."""
    return dataclasses.replace(s, source=None, raw={},
                               faults=[dataclasses.replace(f, line=None) for f in s.faults])


def round_trip(s: Scenario) -> Scenario:
    return load_scenario_text(yaml.safe_dump(scenario_to_dict(s), sort_keys=False))


# -- what a good file means ------------------------------------------------------------

def test_full_scenario_top_level():
    s = load(FULL)
    assert (s.name, s.protocol, s.seed, s.settle) == ("full", "register", 42, 3.0)
    assert s.source == "t.yaml"
    assert s.config == {"bugs": []}
    assert s.checks == ["linearizable"] and s.check_params == {"linearizable": {"time_limit": 2.0}}
    assert s.expect == {"linearizable": "violated"}
    assert s.raw["description"] == "every key once"


def test_nodes_list_keeps_roles_regions_and_extra_keys():
    s = load(FULL)
    assert s.nodes == [NodeSpec("n1"), NodeSpec("n2", role="coordinator", region="eu",
                                                attrs={"rack": 3}), NodeSpec("n3", region="us")]


def test_nodes_count_names_n1_to_nN():
    s = load("name: a\nprotocol: register\nnodes: 4\n")
    assert s.node_names == ["n1", "n2", "n3", "n4"]
    assert s.faults == [] and s.checks == [] and s.seed is None and s.settle == 2.0
    assert s.workload.kind == "none"


def test_network_default_and_links_expand_per_directed_pair():
    net = load(FULL).network
    default = LinkParams(delay=0.002, jitter=0.0005, distribution="exponential", loss=0.01)
    assert net.default == default
    far = default.merged(delay=0.08)
    assert net.link("n1", "n2") == far and net.link("n2", "n1") == far
    assert net.link("n1", "n3") == far
    # the oneway rule layers over the earlier n3 -> n1 rule; n1 -> n3 keeps only the first
    assert net.link("n3", "n1") == far.merged(loss=0.1, rate=1_000_000)
    assert net.link("n2", "n3") == default
    assert len(net.links) == 4                       # one rule per directed pair
    assert LinkRule("n2", "n1", far) in net.links


def test_link_to_all_skips_self_pairs():
    s = load("""\
        name: a
        protocol: register
        nodes: 3
        network: {links: [{from: n1, to: all, delay: 5ms}]}
        """)
    assert sorted((r.src, r.dst) for r in s.network.links) == [
        ("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")]


def test_workload_keys_and_params():
    w = load(FULL).workload
    assert (w.kind, w.clients, w.rate, w.concurrency, w.duration, w.timeout) == \
        ("kv", 3, 100.0, None, 25.0, 0.5)
    assert w.params == {"keys": 4, "read_ratio": 0.25}


def test_faults_are_sorted_by_time_and_keep_their_lines():
    faults = load(FULL).faults
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    first = faults[0]
    assert (first.action, first.args, first.oneway, first.duration, first.line) == \
        ("partition", [["n1", "n2"], ["n2", "n3"]], True, 2.0, 20)
    assert faults[1].action == "heal" and faults[1].line == 19


def test_fault_args_are_plain_data_in_si_units():
    by_action = {(f.action, f.at): f for f in load(FULL).faults}
    assert by_action["crash", 12.0].args == "leader" and by_action["crash", 12.0].duration == 1.5
    assert by_action["restart", 13.0].args == ["n1", "crashed"]
    assert by_action["pause", 14.0].args == "random"
    assert by_action["resume", 15.0].args == "paused"
    assert by_action["delay", 16.0].args == {"from": "n1", "to": "all", "delay": 0.1,
                                             "jitter": 0.01, "distribution": "constant"}
    assert by_action["loss", 17.0].args == {"from": "all", "to": "all", "loss": 0.2}
    dup = by_action["duplicate", 18.0]
    assert dup.args == {"from": "leader", "to": ["n2", "n3"], "duplicate": 0.05} and dup.oneway
    assert by_action["reorder", 19.0].args == {"nodes": "n2", "reorder": 0.5}
    assert by_action["rate", 20.0].args == {"from": "n1", "to": "all", "rate": 500_000}
    assert by_action["partition", 21.0].args == "leader"


def test_yaml_anchors_and_merge_keys_work():
    s = load("""\
        name: a
        protocol: register
        nodes: 3
        network:
          links:
            - &far {from: n1, to: n2, delay: 80ms}
            - {<<: *far, from: n3}
        """)
    assert s.network.link("n3", "n2").delay == 0.08


def test_null_sections_mean_empty():
    s = load("name: a\nprotocol: register\nnodes: 2\nconfig:\nnetwork:\nworkload:\nfaults:\n"
             "checks:\nexpect:\nseed:\nsettle:\n")
    assert (s.config, s.faults, s.checks, s.expect, s.seed) == ({}, [], [], {}, None)
    assert s.network.default == LinkParams() and s.workload.kind == "none" and s.settle == 2.0


def test_load_scenario_reads_a_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(FULL)
    s = load_scenario(str(p))
    assert s.source == str(p) and s.name == "full"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_scenario(str(tmp_path / "nope.yaml"))
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_checks_must_be_registered_and_apply_to_the_protocol():
    e = error(BASE + "checks: [linearizable, linearisable]\n")
    assert (e.line, e.field) == (4, "checks[1]")
    assert "unknown check 'linearisable'" in str(e) and "did you mean linearizable" in str(e)
    # atomicity is a real check, but of 2PC/3PC: on register it would pass vacuously
    e = error(BASE + "checks: [atomicity]\n")
    assert (e.line, e.field) == (4, "checks[0]")
    assert "check 'atomicity' does not apply to register (its checks: linearizable)" in str(e)
    e = error(BASE + "expect:\n  atomicity: violated\n")
    assert (e.line, e.field) == (5, "expect.atomicity") and "does not apply" in e.message
    # an explicit set of known checks overrides the protocol's (for tests of the loader itself)
    assert load(BASE + "checks: [a]\n", known_checks={"a"}).checks == ["a"]


def test_check_parameters_are_converted_and_refused_with_their_line():
    s = load(BASE.replace("register", "twopc").replace("nodes: 3", "nodes:\n  - {name: n1, role: coordinator}\n  - n2\n  - n3")
             + "checks:\n  - atomicity\n  - {name: nonblocking, threshold: 500ms}\n")
    assert s.checks == ["atomicity", "nonblocking"]
    assert s.check_params == {"nonblocking": {"threshold": 0.5}}
    assert round_trip(s).check_params == s.check_params
    e = error(BASE + "checks:\n  - {name: linearizable, time_limit: soon}\n")
    assert (e.line, e.field) == (5, "checks[0].time_limit") and "expected a duration" in e.message
    e = error(BASE + "checks:\n  - {name: linearizable, threshold: 2s}\n")
    assert (e.line, e.field) == (5, "checks[0].threshold")
    assert "takes no parameter 'threshold' (its parameters: time_limit)" in e.message
    e = error(BASE + "checks:\n  - {time_limit: 2s}\n")
    assert e.field == "checks[0].name" and "required" in e.message


def test_expect_may_name_a_check_that_checks_leaves_out():
    s = load(BASE + "checks: [a]\nexpect: {b: violated}\n", known_checks={"a", "b"})
    assert s.checks == ["a"] and s.expect == {"b": "violated"}


# -- round trips ----------------------------------------------------------------------

def test_full_scenario_round_trips():
    s = load(FULL)
    again = round_trip(s)
    assert normal(again) == normal(s)
    assert normal(round_trip(again)) == normal(s)


def test_resolved_scenario_writes_units_as_strings():
    d = scenario_to_dict(load(FULL))
    assert d["network"]["delay"] == "2ms" and d["network"]["jitter"] == "0.5ms"
    assert d["network"]["loss"] == "1%"
    assert d["workload"]["rate"] == "100/s" and d["workload"]["timeout"] == "500ms"
    assert d["settle"] == "3s" and d["seed"] == 42
    assert {"at": "12s", "crash": "leader", "for": "1.5s"} in d["faults"]
    assert {"at": "20s", "rate": {"from": "n1", "to": "all", "rate": "500kbit"}} in d["faults"]
    assert d["nodes"][1] == {"name": "n2", "role": "coordinator", "region": "eu", "rack": 3}


def test_a_role_is_a_name_or_a_list_and_round_trips():
    s = load("name: a\nprotocol: register\nnodes:\n  - {name: n1, role: [proposer, acceptor]}\n"
             "  - {name: n2, role: acceptor}\n  - n3\n")
    assert s.nodes[0].role == ("proposer", "acceptor") and s.nodes[0].roles == ("proposer", "acceptor")
    assert s.nodes[1].role == "acceptor" and s.nodes[1].roles == ("acceptor",)
    assert s.nodes[2].roles == ()
    assert scenario_to_dict(s)["nodes"][0] == {"name": "n1", "role": ["proposer", "acceptor"]}
    assert round_trip(s).nodes == s.nodes


def test_plain_nodes_are_written_as_a_count():
    s = load("name: a\nprotocol: register\nnodes: [n1, n2, n3]\n")
    assert scenario_to_dict(s)["nodes"] == 3


def test_link_equal_to_the_default_survives_a_round_trip():
    s = load("""\
        name: a
        protocol: register
        nodes: 2
        network: {delay: 5ms, links: [{from: n1, to: n2, delay: 5ms}]}
        """)
    assert normal(round_trip(s)) == normal(s)


def _importable(protocol: str) -> bool:
    try:
        protocols.get(protocol)
    except (KeyError, ImportError):
        return False
    return True


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_shipped_topologies_load_and_round_trip(path):
    doc = yaml.safe_load(path.read_text())
    if _importable(doc["protocol"]):
        s = load_scenario(str(path))
    else:
        # Check everything but the protocol config, which needs the core.
        doc["protocol"] = "register"
        doc.pop("config", None)
        s = load_scenario_text(yaml.safe_dump(doc), path=str(path))
    assert s.name == path.stem
    if path.stem.startswith("raft"):
        assert s.workload.kind == "kv" and s.workload.duration > 0
    assert normal(round_trip(s)) == normal(s)


def test_demo_has_the_faults_make_demo_promises():
    doc = yaml.safe_load((ROOT / "topologies" / "raft-5-demo.yaml").read_text())
    actions = [next(k for k in f if k != "at") for f in doc["faults"]]
    assert {"crash", "partition", "heal", "restart"} <= set(actions)
    assert doc["nodes"] == 5


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**7).map(lambda n: n / 1000) | st.floats(0, 1e6, allow_nan=False))
def test_duration_text_reads_back_exactly(seconds):
    assert parse_duration(duration_text(seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10000).map(lambda n: n / 100))
def test_percent_text_reads_back_exactly_for_every_written_percent(p):
    fraction = parse_percent(f"{p}%")
    assert parse_percent(percent_text(fraction)) == fraction


def test_duration_text_prefers_the_short_form():
    assert [duration_text(x) for x in (0.15, 2.0, 0.0, 0.0005, 90.0)] == \
        ["150ms", "2s", "0ms", "0.5ms", "90s"]


# -- errors: file, line, field -----------------------------------------------------------

BASE = "name: a\nprotocol: register\nnodes: 3\n"     # lines 1-3; cases add from line 4

ERRORS = [
    # (extra YAML from line 4, line, field, words in the message)
    ("colour: red\n", 4, "colour", "unknown key"),
    ("netwrk: {}\n", 4, "netwrk", "did you mean network"),
    ("faults:\n  - {at: 1s, crash: n1}\n  - {at: 5, crash: n2}\n", 6, "faults[1].at",
     "expected a duration like 5s"),
    ("faults:\n  - {crash: n1}\n", 5, "faults[0].at", "required"),
    ("faults:\n  - {at: 1s}\n", 5, "faults[0]", "exactly one action"),
    ("faults:\n  - {at: 1s, crash: n1, pause: n2}\n", 5, "faults[0]", "found: crash, pause"),
    ("faults:\n  - {at: 1s, explode: n1}\n", 5, "faults[0].explode", "unknown key"),
    ("faults:\n  - {at: 1s, crash: n9}\n", 5, "faults[0].crash", "no node or target named 'n9'"),
    ("faults:\n  - {at: 1s, crash: [n1, nX]}\n", 5, "faults[0].crash[1]", "'nX'"),
    ("faults:\n  - {at: 1s, crash: []}\n", 5, "faults[0].crash", "at least one"),
    ("faults:\n  - {at: 1s, restart: crashed, for: 2s}\n", 5, "faults[0].for", "cannot be reverted"),
    ("faults:\n  - {at: 1s, crash: n1, oneway: true}\n", 5, "faults[0].oneway", "oneway applies"),
    ("faults:\n  - {at: 1s, crash: n1, for: 0s}\n", 5, "faults[0].for", "above 0s"),
    ("faults:\n  - {at: 1s, partition: [[n1], [n2, n7]]}\n", 5, "faults[0].partition[1][1]",
     "'n7'"),
    ("faults:\n  - {at: 1s, partition: []}\n", 5, "faults[0].partition", "expected groups"),
    ("faults:\n  - {at: 1s, heal: everything}\n", 5, "faults[0].heal", "expected one of all"),
    ("faults:\n  - {at: 1s, loss: 120%}\n", 5, "faults[0].loss", "0% to 100%"),
    ("faults:\n  - {at: 1s, loss: {from: n1}}\n", 5, "faults[0].loss", "needs value"),
    ("faults:\n  - {at: 1s, loss: {from: n1, delay: 5ms}}\n", 5, "faults[0].loss.delay",
     "unknown key"),
    ("faults:\n  - {at: 1s, delay: {nodes: n1, from: n2, delay: 5ms}}\n", 5,
     "faults[0].delay.nodes", "not both"),
    ("faults:\n  - {at: 1s, delay: {to: n1, distribution: normal}}\n", 5,
     "faults[0].delay.distribution", "constant, uniform, exponential"),
    ("faults:\n  - {at: 1s, rate: 1 megabit}\n", 5, "faults[0].rate", "bit rate like 1mbit"),
    ("faults:\n  - crash\n", 5, "faults[0]", "expected a mapping like {at: 5s"),
    ("faults: {at: 1s}\n", 4, "faults", "expected a list of faults"),
    ("network:\n  delay: 5\n", 5, "network.delay", "expected a duration"),
    ("network:\n  jitter: 1ms\n  distribution: pareto\n", 6, "network.distribution", "pareto"),
    ("network:\n  links:\n    - {from: n1, to: n4, delay: 1ms}\n", 6, "network.links[0].to",
     "no node named 'n4'"),
    ("network:\n  links:\n    - {from: n1, delay: 1ms}\n", 6, "network.links[0].to", "required"),
    ("network:\n  links:\n    - {from: n1, to: n2}\n", 6, "network.links[0]", "at least one"),
    ("network:\n  links:\n    - {from: n1, to: n1, delay: 1ms}\n", 6, "network.links[0]",
     "only to itself"),
    ("network:\n  links:\n    - {from: n1, to: n2, delay: 1ms, oneway: yes please}\n", 6,
     "network.links[0].oneway", "true or false"),
    ("workload: {clients: 2, duration: 5s}\n", 4, "workload.kind", "required"),
    ("workload: {kind: bank, duration: 5s}\n", 4, "workload.kind", "transfer, none"),
    ("workload:\n  kind: kv\n  rate: 100\n  duration: 5s\n", 6, "workload.rate", "100/s"),
    ("workload:\n  kind: kv\n  clients: 0\n  duration: 5s\n", 6, "workload.clients", "from 1"),
    ("workload:\n  kind: kv\n  rate: 10/s\n  concurrency: 2\n  duration: 5s\n", 7,
     "workload.concurrency", "not both"),
    ("workload:\n  kind: kv\n", 4, "workload.duration", "needs a duration"),
    ("workload:\n  kind: kv\n  duration: 5s\n  timeout: 0s\n", 7, "workload.timeout", "above 0s"),
    ("checks: election_safety\n", 4, "checks", "expected a list of check names"),
    ("checks: [linearizable, linearizable]\n", 4, "checks[1]", "listed twice"),
    ("expect:\n  linearizable: broken\n", 5, "expect.linearizable", "holds, violated"),
    ("seed: -1\n", 4, "seed", "from 0"),
    ("seed: '42'\n", 4, "seed", "whole number"),
    ("settle: soon\n", 4, "settle", "duration"),
    ("config:\n  bugs: [no_such_bug]\n", 5, "config.bugs", "has no bug named 'no_such_bug'"),
    ("config:\n  bugs: []\n  election_timeout: [1ms, 2ms]\n", 6, "config.election_timeout",
     "unknown setting for register"),
    ("config: [1, 2]\n", 4, "config", "expected a mapping"),
    ("description: 5\n", 4, "description", "expected a text"),
    ("backend: kubernetes\n", 4, "backend", "sim, local, docker"),
]


@pytest.mark.parametrize("extra, line, field, words", ERRORS,
                         ids=[f"{i}-{e[2]}" for i, e in enumerate(ERRORS)])
def test_bad_input_names_file_line_and_field(extra, line, field, words):
    e = error(BASE + extra)
    assert (e.path, e.line, e.field) == ("t.yaml", line, field), str(e)
    assert words in e.message, str(e)
    assert str(e).startswith(f"t.yaml:{line}: {field}: ")
    assert isinstance(e, LabError) and e.exit_code == 3


TOP_ERRORS = [
    ("", None, None, "empty"),
    ("- 1\n- 2\n", 1, None, "expected a mapping of scenario keys"),
    ("name: a\nprotocol: register\nnodes: [n1, {bad\n", 4, None, "not valid YAML"),
    ("protocol: register\nnodes: 3\n", 1, "name", "name is required"),
    ("name: 'my lab!'\nprotocol: register\nnodes: 3\n", 1, "name", "scenario name"),
    ("name: a\nprotocol: paxos9\nnodes: 3\n", 2, "protocol", "unknown protocol 'paxos9'"),
    ("name: a\nprotocol: register\nnodes: 0\n", 3, "nodes", "from 1 to 1000"),
    ("name: a\nprotocol: register\nnodes: {n1: x}\n", 3, "nodes", "node count"),
    ("name: a\nprotocol: register\nnodes: []\n", 3, "nodes", "at least one node"),
    ("name: a\nprotocol: register\nnodes:\n  - n1\n  - n1\n", 5, "nodes[1]", "named twice"),
    ("name: a\nprotocol: register\nnodes:\n  - n1\n  - leader\n", 5, "nodes[1]", "reserved"),
    ("name: a\nprotocol: register\nnodes:\n  - n1\n  - 1node\n", 5, "nodes[1]", "node name"),
    ("name: a\nprotocol: register\nnodes:\n  - n1\n  - {role: x}\n", 5, "nodes[1].name",
     "required"),
    ("name: a\nprotocol: register\nnodes:\n  - {name: n1, role: {x: 1}}\n", 4, "nodes[0].role",
     "role name"),
    ("name: a\nprotocol: register\nnodes:\n  - {name: n1, role: []}\n", 4, "nodes[0].role",
     "non-empty list"),
    ("name: a\nprotocol: register\nnodes:\n  - {name: n1, role: [x, 3]}\n", 4, "nodes[0].role[1]",
     "role name"),
    ("name: a\nprotocol: register\nnodes:\n  - {name: n1, role: [x, x]}\n", 4, "nodes[0].role[1]",
     "listed twice"),
    ("name: a\nname: b\nprotocol: register\nnodes: 3\n", 2, "name", "repeated key"),
    ("name: a\nprotocol: register\nnodes: 2\n7: x\n", 4, None, "keys must be names"),
    ("name: a\nprotocol: register\nnodes: 2\nseed: !!python/int 3\n", 4, "seed",
     "cannot read this value"),
]


@pytest.mark.parametrize("text, line, field, words", TOP_ERRORS,
                         ids=[f"{i}-{e[3]}" for i, e in enumerate(TOP_ERRORS)])
def test_bad_top_level_input(text, line, field, words):
    e = error(text)
    assert (e.path, e.line, e.field) == ("t.yaml", line, field), str(e)
    assert words in e.message, str(e)


def test_unloadable_protocol_is_reported_at_the_protocol_line(monkeypatch):
    monkeypatch.setattr(protocols, "names", lambda: ["ghost", "register"])

    def get(name: str) -> type[Core]:
        raise ImportError("No module named 'nodes.protocols.ghost'")

    monkeypatch.setattr(protocols, "get", get)
    e = error("name: a\nprotocol: ghost\nnodes: 3\n")
    assert (e.line, e.field) == (2, "protocol") and "cannot be loaded" in e.message


@dataclasses.dataclass(frozen=True)
class _TimedTunables(Tunables):
    election_timeout: tuple[float, float] = dataclasses.field(
        default=(0.15, 0.3), metadata={"unit": "s-range", "doc": "x"})
    heartbeat: float = dataclasses.field(default=0.05, metadata={"unit": "s", "doc": "x"})


class _Timed(Core):
    name = "timed"
    tunables = _TimedTunables
    presets = {"slow": {"heartbeat": "5s"}, "broken": {"heartbeat": "soon"}}


@pytest.fixture
def timed(monkeypatch):
    monkeypatch.setattr(protocols, "names", lambda: ["register", "timed"])
    monkeypatch.setattr(protocols, "get", lambda name: _Timed)


@pytest.mark.parametrize("config, line, field, words", [
    ("config:\n  heartbeat: 50ms\n  election_timeout: 150ms\n", 6, "config.election_timeout",
     "expected a range like [150ms, 300ms]"),
    ("config:\n  election_timeout: [300ms, 150ms]\n", 5, "config.election_timeout", "above"),
    ("config:\n  heartbeat: 50\n", 5, "config.heartbeat", "duration"),
    ("config:\n  preset: turbo\n", 5, "config.preset", "unknown preset 'turbo'"),
    # an error from a preset's own value has no line of its own: the config: line stands in
    ("config:\n  preset: broken\n", 4, "config.heartbeat", "duration"),
], ids=["range", "order", "unit", "preset", "preset-value"])
def test_protocol_config_errors_point_at_the_key(timed, config, line, field, words):
    e = error("name: a\nprotocol: timed\nnodes: 3\n" + config)
    assert (e.line, e.field) == (line, field), str(e)
    assert words in e.message


def test_protocol_config_is_kept_raw(timed):
    s = load("name: a\nprotocol: timed\nnodes: 3\nconfig: {preset: slow, election_timeout: [1s, 2s]}\n")
    assert s.config == {"preset": "slow", "election_timeout": ["1s", "2s"]}
    assert normal(round_trip(s)) == normal(s)


def test_module_constants_agree_with_the_fault_plan():
    from lab import faultplan
    assert set(topology.LINK_ACTIONS) == set(faultplan.LINK_FAULTS)
    assert set(topology.NODE_ACTIONS) == set(faultplan.NODE_FAULTS)


class _StatusBackend:
    """Just enough of a backend for TargetResolver: n2 leads."""

    def status(self, node: str) -> dict[str, Any]:
        return {"role": "leader" if node == "n2" else "follower", "term": 1}


def test_every_loaded_target_resolves_in_the_fault_plan():
    from random import Random

    from lab.targets import TargetResolver

    s = load(FULL)
    resolver = TargetResolver(s, _StatusBackend(), Random(1))  # type: ignore[arg-type]
    for f in s.faults:
        resolver.new_step()
        if f.action == "partition":
            groups = resolver.resolve_groups(f.args)
            assert len(groups) >= 2 and all(groups)
        elif f.action in topology.NODE_ACTIONS:
            resolver.resolve(f.args)
        elif f.action in topology.LINK_ACTIONS:
            for key in ("from", "to", "nodes"):
                if key in f.args:
                    assert resolver.resolve(f.args[key])


def test_a_run_directorys_scenario_yaml_loads_again():
    from lab.report import resolved_scenario

    s = load(FULL)
    text = yaml.safe_dump(resolved_scenario(s, 7, "sim"), sort_keys=False)
    again = load_scenario_text(text)
    assert again.seed == 7
    assert normal(dataclasses.replace(again, seed=42)) == normal(s)
