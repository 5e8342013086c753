"""A simulated crash strikes where a SIGKILL does: after a handler's durable writes, before its
sends have left. What a node sent in its last ``send_window`` dies with it; its storage stays."""

from __future__ import annotations

import pytest
from test_sim import ask, events, make

from lab.sim import SimBackend

pytestmark = pytest.mark.sim

WINDOW = SimBackend.send_window


def test_the_window_is_short_and_on_by_default() -> None:
    assert 0 < WINDOW <= 0.005


def test_a_crash_just_after_a_handler_keeps_its_writes_and_loses_its_sends() -> None:
    sim = make(delay=0.01)
    # n1 takes the request at 0.01: bumps its durable counter, and its answer is on its way.
    out = ask(sim, "n1", {"f": "bump"}, until=0.01 + WINDOW / 2)
    sim.crash("n1")
    sim.run_until(1.0)
    assert out == []                                        # the reply never left the process
    assert sim.storage("n1").get("durable") == 1            # the write it made first survived
    sim.restart("n1")
    assert ask(sim, "n1", {"f": "bump"}, until=2.0)[0]["durable"] == 2


def test_a_message_sent_in_the_window_is_dropped_at_the_crash_and_never_arrives() -> None:
    sim = make(delay=0.01)
    ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping", "body": {"n": 7}}, until=0.01 + WINDOW / 2)
    sim.crash("n1")
    sim.run_until(1.0)
    (send,) = events(sim, "send", "n1")
    (drop,) = [e for e in events(sim, "drop") if e["mid"] == send["mid"]]
    assert drop["node"] == "n1" and drop["data"] == {"reason": "sender_crashed"}
    assert drop["ts"] == round(0.01 + WINDOW / 2, 6) and drop["lc"] > send["lc"]
    assert events(sim, "recv", "n2") == [] and sim.storage("n2").log_read("got") == []


def test_sends_older_than_the_window_still_arrive() -> None:
    sim = make(delay=0.01)
    out = ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping", "body": {"n": 7}},
              until=0.01 + 2 * WINDOW)
    sim.crash("n1")
    sim.run_until(1.0)
    assert out == [{"type": "ok"}]
    assert [e["type"] for e in events(sim, "recv", "n2")] == ["ping"]
    assert [e for e in events(sim, "drop") if e["data"]["reason"] == "sender_crashed"] == []


def test_a_duplicated_message_lost_in_the_window_loses_both_copies() -> None:
    sim = make(delay=0.01, duplicate=1.0)
    ask(sim, "n1", {"f": "send", "peer": "n2", "type": "ping"}, until=0.01 + WINDOW / 2)
    sim.crash("n1")
    sim.run_until(1.0)
    assert events(sim, "recv", "n2") == []


def test_without_the_window_a_crash_loses_nothing_that_was_sent() -> None:
    sim = make(delay=0.01)
    sim.send_window = 0.0
    out = ask(sim, "n1", {"f": "bump"}, until=0.01 + WINDOW / 2)
    sim.crash("n1")
    sim.run_until(1.0)
    assert out == [{"type": "ok", "volatile": 1, "durable": 1, "boots": 1}]
