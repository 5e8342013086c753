"""Trace levels on the simulator (ZLAB_TRACE all|protocol|none): a lighter level leaves lines
out and changes nothing else, and a check that reads lines its level left out cannot decide."""

from __future__ import annotations

import pytest
from sim_determinism_child import run
from test_sim import ask, make

from lab.checks.base import HOLDS, UNKNOWN, RunData
from lab.checks.registry import run_checks, trace_lines
from lab.errors import ConfigError
from lab.sim import SimBackend
from lab.tracefile import encode_event
from nodes.tracelog import PER_MESSAGE, left_out

pytestmark = pytest.mark.sim


def lines(sim: SimBackend) -> list[str]:
    return [encode_event(e) for e in sim.trace_events()]


@pytest.mark.parametrize("seed", [1, 7])
def test_a_protocol_level_trace_is_the_full_trace_without_the_per_message_lines(seed: int) -> None:
    # A wide crash window, so that the crash and restart of the run drop sends at the crash
    # (found on the heap, not in the send lines this level leaves out).
    full = run(seed, "all", send_window=0.05)
    light = run(seed, "protocol", send_window=0.05)
    events = full.trace_events()
    assert any(e["ev"] == "drop" and e["data"] == {"reason": "sender_crashed"} for e in events)
    assert {"send", "recv", "timer", "request", "reply"} <= {e["ev"] for e in events}
    # Same lines, clocks and all: only the per-message ones are gone.
    assert lines(light) == [encode_event(e) for e in events if e["ev"] not in PER_MESSAGE]
    assert light.counters == full.counters


def test_level_none_keeps_no_line_and_runs_the_same_schedule() -> None:
    full, bare = run(1, "all"), run(1, "none")
    assert bare.trace_events() == []
    assert bare.counters == full.counters
    assert [bare.storage(n).log_read("log") for n in ("n1", "n2")] == \
        [full.storage(n).log_read("log") for n in ("n1", "n2")]


def test_a_crash_at_level_protocol_still_loses_the_sends_of_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_TRACE", "protocol")
    sim = make(delay=0.01)
    out = ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping"}, until=0.01 + SimBackend.send_window / 2)
    sim.crash("n1")
    sim.run_until(1.0)
    assert out == []
    assert [(e["node"], e["ev"]) for e in sim.trace_events()] == [(n, "log") for n in ("n1", "n2", "n3")] + [("n1", "drop")]
    drop = sim.trace_events()[-1]
    assert drop["data"] == {"reason": "sender_crashed"} and drop["peer"] == "n2"
    assert sim.storage("n2").log_read("got") == []


def test_the_level_comes_from_zlab_trace_and_a_wrong_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLAB_TRACE", "protocol")
    assert make().trace_level == "protocol"
    monkeypatch.setenv("ZLAB_TRACE", "some")
    with pytest.raises(ConfigError, match="trace level 'some'"):
        make()


def test_left_out() -> None:
    assert left_out("all", ["send", "commit"]) == []
    assert left_out("protocol", ["send", "commit", "reply"]) == ["reply", "send"]
    assert left_out("none", ["commit"]) == ["commit"]


def test_every_check_says_which_lines_it_reads() -> None:
    from lab.checks.registry import all_checks
    assert set(trace_lines()) == set(all_checks())


def _run_data(sim: SimBackend, level: str, protocol: str = "raft") -> RunData:
    scenario = {"protocol": protocol, "nodes": [{"name": n} for n in ("n1", "n2", "n3", "n4", "n5")]}
    if level != "all":
        scenario["trace"] = level
    return RunData(scenario=scenario, trace=sim.trace_events(), history=[])


def test_raft_checks_decide_at_level_protocol_and_not_at_none() -> None:
    names = ["election_safety", "log_matching", "leader_completeness", "state_machine_safety"]
    verdicts, code = run_checks(names, _run_data(run(1, "protocol"), "protocol"))
    assert [v.verdict for v in verdicts] == [HOLDS] * 4 and code == 0
    verdicts, code = run_checks(names, _run_data(run(1, "none"), "none"))
    assert {v.verdict for v in verdicts} == {UNKNOWN} and code == 2
    assert "trace level none leaves out" in verdicts[0].detail


def test_a_check_that_reads_request_lines_is_unknown_at_level_protocol() -> None:
    (v,), code = run_checks(["validity"], _run_data(run(1, "protocol"), "protocol", protocol="paxos"))
    assert v.verdict == UNKNOWN and "request lines" in v.detail and code == 2


def test_a_wrong_level_in_a_run_directory_is_refused() -> None:
    with pytest.raises(ConfigError, match="trace must be one of"):
        run_checks(["election_safety"], _run_data(run(1, "protocol"), "some"))
