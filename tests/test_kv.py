"""The key-value state machine: the history contract's results and exactly-once retries."""

from __future__ import annotations

import pytest

from nodes.protocols import kv


def op(f: str, key: str = "x", value: object = None, client: str | None = "c1", seq: int | None = None) -> dict:
    out: dict = {"f": f, "key": key}
    if value is not None or f == "write":
        out["value"] = value
    if client is not None and seq is not None:
        out["client"], out["seq"] = client, seq
    return out


def test_read_of_an_absent_key_is_none() -> None:
    assert kv.KV().apply(op("read")) == {"type": "ok", "value": None}


def test_write_then_read() -> None:
    m = kv.KV()
    assert m.apply(op("write", value=[1, 2])) == {"type": "ok"}
    assert m.apply(op("read")) == {"type": "ok", "value": [1, 2]}
    assert m.apply(op("read", key="y")) == {"type": "ok", "value": None}


def test_cas_swaps_only_on_a_match() -> None:
    m = kv.KV()
    m.apply(op("write", value=1))
    assert m.apply(op("cas", value=[2, 3])) == {"type": "fail", "error": "cas_mismatch"}
    assert m.apply(op("read"))["value"] == 1
    assert m.apply(op("cas", value=[1, 3])) == {"type": "ok"}
    assert m.apply(op("read"))["value"] == 3


def test_cas_on_an_absent_key_matches_null() -> None:
    m = kv.KV()
    assert m.apply(op("cas", value=[None, 5])) == {"type": "ok"}
    assert m.apply(op("read"))["value"] == 5


def test_delete_and_writing_null_both_make_a_key_absent() -> None:
    m = kv.KV()
    m.apply(op("write", value=1))
    assert m.apply(op("delete")) == {"type": "ok"}
    assert m.apply(op("read"))["value"] is None
    m.apply(op("write", value=1))
    m.apply(op("write", value=None))
    assert "x" not in m.data


def test_retried_request_is_answered_from_the_table_not_applied_twice() -> None:
    m = kv.KV()
    m.apply(op("write", value=0))
    first = m.apply(op("cas", value=[0, 1], seq=7))
    m.apply(op("write", value=0, client="c2", seq=1))     # someone else resets x
    again = m.apply(op("cas", value=[0, 1], seq=7))       # the same request, retried
    assert first == again == {"type": "ok"}
    assert m.apply(op("read"))["value"] == 0               # the retry did not swap again


def test_reads_are_deduplicated_too() -> None:
    m = kv.KV()
    m.apply(op("write", value=1))
    assert m.apply(op("read", seq=3)) == {"type": "ok", "value": 1}
    m.apply(op("write", value=2))
    assert m.apply(op("read", seq=3)) == {"type": "ok", "value": 1}
    assert m.answered(op("read", seq=4)) is None


def test_ops_without_client_and_seq_are_not_deduplicated() -> None:
    m = kv.KV()
    m.apply(op("write", value=0))
    assert m.apply(op("cas", value=[0, 1])) == {"type": "ok"}
    assert m.apply(op("cas", value=[0, 1]))["type"] == "fail"


def test_old_retries_past_the_window_are_info_never_reapplied() -> None:
    m = kv.KV()
    m.apply(op("write", value=0, seq=0))
    for seq in range(1, kv.DEDUP_WINDOW + 1):
        m.apply(op("write", value=seq, seq=seq))
    assert len(m.sessions["c1"]) <= kv.DEDUP_WINDOW
    assert m.apply(op("write", value=0, seq=0)) == {"type": "info", "error": "dedup_expired"}
    assert m.apply(op("read"))["value"] == kv.DEDUP_WINDOW
    assert m.apply(op("write", value=1, seq=kv.DEDUP_WINDOW)) == {"type": "ok"}   # recent: remembered


@pytest.mark.parametrize("bad, why", [
    ("nope", "not a mapping"),
    ({"f": "incr", "key": "x"}, "unsupported op"),
    ({"f": "read"}, "key must be"),
    ({"f": "read", "key": True}, "key must be"),
    ({"f": "cas", "key": "x", "value": 3}, "cas value"),
    ({"f": "cas", "key": "x", "value": [1]}, "cas value"),
])
def test_validate_names_what_is_wrong(bad: object, why: str) -> None:
    assert why in (kv.validate(bad) or "")


def test_validate_accepts_every_contract_op() -> None:
    for good in (op("read"), op("write", value=1), op("cas", value=[1, 2]), op("delete"), op("read", key=3)):
        assert kv.validate(good) is None
