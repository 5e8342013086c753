"""The agent and the simulator place a core's trace fields the same way (docs/trace.md)."""

from __future__ import annotations

from nodes.tracelog import core_fields


def test_protocol_fields_go_under_data() -> None:
    assert core_fields({"role": "leader", "term": 3}) == {"data": {"role": "leader", "term": 3}}


def test_message_fields_stay_on_top() -> None:
    out = core_fields({"type": "append", "peer": "n2", "reason": "malformed"})
    assert out == {"type": "append", "peer": "n2", "data": {"reason": "malformed"}}


def test_explicit_data_is_merged_with_the_rest() -> None:
    out = core_fields({"data": {"index": 4}, "term": 2, "mid": 9})
    assert out == {"mid": 9, "data": {"index": 4, "term": 2}}


def test_no_fields_no_data() -> None:
    assert core_fields({}) == {}
