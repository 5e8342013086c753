"""TraceWriter's hot-path templates (nodes/tracelog.py) against the generic JSON path.

A core's ``commit``/``apply`` (any event whose data is a flat map of ints, strings and nulls)
is filled into a per-event template instead of going through the JSON encoder. These tests
hold every line to the contract of docs/trace.md: one JSON object a line, keys sorted, ``ts``
rounded to the microsecond, and exactly the object the generic path writes for the same event.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.tracelog import TOP_LEVEL, TraceWriter, core_fields

# Strings that break naive hand-written JSON or %-formatting.
NASTY = ['"', "\\", '\\"', "\x00", "\x1f", "\n", "\t", "\u2028", "\ud800", "\udfff", "é", "日本",
         "\U0001f600", "%", "%s", "%d", "%%", "%(x)s", "{}", "}", "null", "", " "]
texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=12),
                  st.text(alphabet=st.characters(codec=None), max_size=6))
ints = st.one_of(st.integers(), st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**30, -(10**30)]))
scalars = st.one_of(ints, texts, st.none())
# A small pool so keys, and so templates, repeat within one writer (cached plans get reused).
keys = st.one_of(st.sampled_from(["index", "term", "hash", "f", "key", "client", "a%b", 'q"k', "é"]),
                 texts).filter(lambda k: k not in TOP_LEVEL)
flat_data = st.dictionaries(keys, scalars, max_size=6)
json_leaf = st.one_of(scalars, st.booleans(), st.floats(allow_nan=False, allow_infinity=False))
nested = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(texts, c, max_size=3)),
                      max_leaves=6)
# Flat maps that must NOT take the template: a bool, a float, a list or a map among the values.
non_flat_data = st.dictionaries(keys, nested, min_size=1, max_size=5)
evs = st.one_of(st.sampled_from(["commit", "apply", "state", "drop", "log", "custom"]), texts)
# ts as the agent makes them, plus values on a half-microsecond (rounding must match round()).
tss = st.one_of(st.floats(min_value=0, max_value=1e7, allow_nan=False),
                st.sampled_from([0.0, 5e-7, 1.5e-6, 2.5e-6, 0.1234565, 123.4567895, 1e-7, 3600.0000005]))
lcs = st.integers(min_value=0, max_value=2**62)
events = st.tuples(evs, tss, lcs, st.one_of(flat_data, flat_data, non_flat_data))
nodes = st.one_of(st.sampled_from(["n1", "node-2", 'q"%s\\', "é%"]), texts)

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _writer(tmp: str, node: str, level: str = "all") -> TraceWriter:
    return TraceWriter(os.path.join(tmp, "trace.jsonl"), node, level=level)


def _lines(w: TraceWriter) -> list[str]:
    w.close()
    with open(w.path, encoding="utf-8") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return text.splitlines(keepends=True)


def _parse(line: str) -> dict[str, Any]:
    """json.loads, asserting every object in the line has its keys in sorted order."""
    assert line.endswith("\n") and "\n" not in line[:-1]

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [k for k, _ in pairs]
        assert names == sorted(names), line
        assert len(set(names)) == len(names), line
        return dict(pairs)

    return json.loads(line, object_pairs_hook=hook)


def _expected(node: str, ev: str, ts: float, lc: int, data: dict[str, Any]) -> dict[str, Any]:
    """The contract: ts rounded to the microsecond, data as given (absent when empty)."""
    rec: dict[str, Any] = {"ts": round(ts, 6), "node": node, "lc": lc, "ev": ev}
    if data:
        rec["data"] = json.loads(json.dumps(data))   # what JSON makes of the values
    return rec


@FAST
@given(node=nodes, batch=st.lists(events, min_size=1, max_size=12))
def test_core_event_lines_equal_the_generic_path(node: str, batch: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fast = _writer(tmp, node)
        generic = TraceWriter(os.path.join(tmp, "generic.jsonl"), node)
        for ev, ts, lc, data in batch:
            fast.core_event(ev, ts, lc, {"data": dict(data)})
            generic.event(ev, ts, lc, **core_fields({"data": dict(data)}))
        got, want = _lines(fast), _lines(generic)
    assert len(got) == len(batch) == fast.events
    for line, ref, (ev, ts, lc, data) in zip(got, want, batch, strict=True):
        rec = _parse(line)
        assert rec == _parse(ref)
        assert rec == _expected(node, ev, ts, lc, data)
        assert rec["ts"] == round(ts, 6)
        assert type(rec["lc"]) is int


@FAST
@given(data=st.dictionaries(st.sampled_from(["index", "term", "mid", "type", "peer", "x"]),
                            scalars, min_size=1, max_size=6),
       ev=evs, ts=tss, lc=lcs)
def test_core_event_moves_top_level_keys_out_of_data(data: dict[str, Any], ev: str, ts: float,
                                                     lc: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        w.core_event(ev, ts, lc, {"data": dict(data)})
        # the same fields passed as keyword arguments (ctx.trace(ev, index=..., peer=...))
        w.core_event(ev, ts, lc, dict(data))
        lines = _lines(w)
    want: dict[str, Any] = {"ts": round(ts, 6), "node": "n1", "lc": lc, "ev": ev}
    want.update({k: json.loads(json.dumps(v)) for k, v in data.items() if k in TOP_LEVEL})
    rest = {k: json.loads(json.dumps(v)) for k, v in data.items() if k not in TOP_LEVEL}
    if rest:
        want["data"] = rest
    assert [_parse(line) for line in lines] == [want, want]


def test_commit_and_apply_lines_are_exact() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        w.core_event("commit", 1.25, 7, {"data": {"index": 3, "term": 2, "hash": "ab12"}})
        w.core_event("apply", 0.0000005, 8, {"data": {"index": 3, "term": 2, "f": "write", "key": None}})
        w.core_event("apply", 2.0, 9, {"data": {"index": -4, "term": 10**20, "f": 'w"\\', "key": "k\x01"}})
        lines = _lines(w)
    assert [_parse(x) for x in lines] == [
        {"ts": 1.25, "node": "n1", "lc": 7, "ev": "commit", "data": {"index": 3, "term": 2, "hash": "ab12"}},
        {"ts": round(0.0000005, 6), "node": "n1", "lc": 8, "ev": "apply",
         "data": {"index": 3, "term": 2, "f": "write", "key": None}},
        {"ts": 2.0, "node": "n1", "lc": 9, "ev": "apply",
         "data": {"index": -4, "term": 10**20, "f": 'w"\\', "key": "k\x01"}},
    ]


def test_same_keys_with_values_of_other_types_take_the_generic_path() -> None:
    """A template cached for (ev, keys) must not be reused for a bool, a float or a list."""
    values = [1, True, 2.5, "s", None, [1, 2], {"b": 1, "a": [None]}, False, -3, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n")
        for i, v in enumerate(values):
            w.core_event("commit", float(i), i, {"data": {"index": v, "term": i}})
        lines = _lines(w)
    got = [_parse(x)["data"]["index"] for x in lines]
    assert got == values
    assert [type(g) for g in got] == [type(v) for v in values]   # True stays true, not 1


def test_more_templates_than_the_cache_holds() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n")
        for i in range(300):
            w.core_event(f"ev{i}", i / 7, i, {"data": {f"k{i}": i, "s": str(i)}})
        for i in range(300):            # again, now with the cache full
            w.core_event(f"ev{i}", i / 7, i, {"data": {f"k{i}": -i, "s": None}})
        lines = _lines(w)
    recs = [_parse(x) for x in lines]
    assert len(recs) == 600
    for i in range(300):
        assert recs[i] == {"ts": round(i / 7, 6), "node": "n", "lc": i, "ev": f"ev{i}",
                           "data": {f"k{i}": i, "s": str(i)}}
        assert recs[300 + i]["data"] == {f"k{i}": -i, "s": None}


@FAST
@given(node=nodes, ts=tss, lc=lcs, mid=st.one_of(st.integers(), texts), type_=texts, peer=texts,
       reason=st.one_of(texts, st.none()))
def test_message_lines_equal_the_generic_path(node: str, ts: float, lc: int, mid: Any, type_: str,
                                              peer: str, reason: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, node)
        w.message("send", ts, lc, mid, type_, peer)
        w.message("drop", ts, lc, mid, type_, peer, {"reason": reason})
        lines = _lines(w)
    base = {"ts": round(ts, 6), "node": node, "lc": lc, "mid": mid, "type": type_, "peer": peer}
    base = json.loads(json.dumps(base))
    assert [_parse(x) for x in lines] == [{**base, "ev": "send"},
                                          {**base, "ev": "drop", "data": {"reason": reason}}]


def _all_kinds(w: TraceWriter) -> None:
    w.message("send", 0.1, 1, 5, "append_entries", "n2")
    w.message("recv", 0.2, 2, 6, "append_entries", "n2")
    w.message("drop", 0.3, 3, 7, "append_entries", "n2", {"reason": "loss"})
    w.event("timer", 0.4, 4, type="election")
    w.event("request", 0.5, 5, data={"client": "c1", "op": {"f": "read", "key": 1}})
    w.event("reply", 0.6, 6, data={"client": "c1", "result": {"type": "ok"}})
    w.event("log", 0.7, 7, data={"msg": "started"})
    w.event("drop", 0.75, 7, data={"reason": "malformed"})
    w.core_event("state", 0.8, 8, {"data": {"role": "leader", "term": 2}})
    w.core_event("commit", 0.9, 9, {"data": {"index": 1, "term": 2, "hash": "ab"}})
    w.core_event("apply", 1.0, 10, {"data": {"index": 1, "term": 2, "f": "write", "key": "x"}})
    w.core_event("drop", 1.1, 11, {"reason": "malformed", "type": "append_entries", "peer": "n3"})
    # a core tracing a per-message event goes by the level too
    w.core_event("request", 1.2, 12, {"data": {"client": "c", "seq": 1}})
    w.core_event("timer", 1.3, 13, {"type": "quorum"})


def test_level_all_keeps_every_event() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1", "all")
        assert w.messages and w.enabled
        _all_kinds(w)
        evs = [_parse(x)["ev"] for x in _lines(w)]
    assert evs == ["send", "recv", "drop", "timer", "request", "reply", "log", "drop", "state",
                   "commit", "apply", "drop", "request", "timer"]


def test_level_protocol_drops_per_message_lines_only() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1", "protocol")
        assert not w.messages and w.enabled
        _all_kinds(w)
        recs = [_parse(x) for x in _lines(w)]
    assert [r["ev"] for r in recs] == ["drop", "log", "drop", "state", "commit", "apply", "drop"]
    assert w.events == len(recs)
    assert recs[0]["data"] == {"reason": "loss"} and recs[0]["mid"] == 7
    assert recs[-1] == {"ts": 1.1, "node": "n1", "lc": 11, "ev": "drop", "type": "append_entries",
                        "peer": "n3", "data": {"reason": "malformed"}}


def test_level_none_writes_nothing() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1", "none")
        _all_kinds(w)
        w.close()
        assert not os.path.exists(w.path)
    assert w.events == 0


def test_unknown_level_is_refused() -> None:
    import pytest
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(ValueError, match="trace level"):
        _writer(tmp, "n1", "verbose")


def test_restarted_writer_appends() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        w.core_event("commit", 1.0, 1, {"data": {"index": 1}})
        w.close()
        w = _writer(tmp, "n1")
        w.core_event("commit", 2.0, 2, {"data": {"index": 2}})
        recs = [_parse(x) for x in _lines(w)]
    assert [r["data"]["index"] for r in recs] == [1, 2]


@FAST
@given(node=nodes, batch=st.lists(st.tuples(st.sampled_from(["request", "reply"]), texts,
                                            st.sampled_from(["op", "result", "a", "zz", 'q"%s']),
                                            st.one_of(flat_data, non_flat_data), tss, lcs),
                                  min_size=1, max_size=12))
def test_request_and_reply_lines_are_what_the_generic_path_means(node: str, batch: list[Any]) -> None:
    """The agent's request/reply events (data: the client and a flat map) take a template;
    every other shape (a key sorted before "client", nested values) goes through JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, node)
        for ev, client, key, inner, ts, lc in batch:
            w.event(ev, ts, lc, data={"client": client, key: dict(inner)})
        got = _lines(w)
    assert len(got) == len(batch) == w.events
    for line, (ev, client, key, inner, ts, lc) in zip(got, batch, strict=True):
        assert _parse(line) == _expected(node, ev, ts, lc, {"client": client, key: inner})


def test_a_request_line_is_exact() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        op = {"f": "write", "key": "k%s", "value": 7, "client": "bench", "seq": 3}
        w.event("request", 1.5, 9, data={"client": "n1.ab.c1", "op": op})
        w.event("reply", 2.25, 10, data={"client": "n1.ab.c1", "result": {"type": "ok"}})
        assert _lines(w) == [
            '{"data": {"client": "n1.ab.c1", "op": {"client": "bench", "f": "write", "key": "k%s", '
            '"seq": 3, "value": 7}}, "ev": "request", "lc": 9, "node": "n1", "ts": 1.500000}\n',
            '{"data": {"client": "n1.ab.c1", "result": {"type": "ok"}}, "ev": "reply", "lc": 10, '
            '"node": "n1", "ts": 2.250000}\n']


def test_typed_template_gives_way_when_a_value_changes_type() -> None:
    """The template typed from an event's first values (an int as %d, a null written in) must
    not be used for values of other types under the same keys."""
    values = [7, None, "x%d", -(10**30), None, 'q"', 0, True, 1.5]
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n%")
        for i, v in enumerate(values):
            w.core_event("apply", i / 3, i, {"data": {"index": i, "key": v, "f": "write"}})
            w.client_event("reply", i / 3, i, "c", "result", {"type": "ok", "value": v})
        lines = _lines(w)
    got = [_parse(x) for x in lines]
    assert [g["data"]["key"] for g in got[::2]] == values
    assert [g["data"]["result"]["value"] for g in got[1::2]] == values
    assert [type(g["data"]["key"]) for g in got[::2]] == [type(v) for v in values]
    assert got[0] == {"ts": 0.0, "node": "n%", "lc": 0, "ev": "apply",
                      "data": {"index": 0, "key": 7, "f": "write"}}


@FAST
@given(node=nodes, batch=st.lists(events, min_size=1, max_size=16))
def test_core_data_lines_equal_the_generic_path(node: str, batch: list[Any]) -> None:
    """core_data reuses the plan of an event's last keys: never for another key set, even one
    of the same size (the small key pool makes such neighbours common here)."""
    with tempfile.TemporaryDirectory() as tmp:
        fast = _writer(tmp, node)
        for ev, ts, lc, data in batch:
            fast.core_data(ev, ts, lc, dict(data))
        got = _lines(fast)
    assert len(got) == len(batch)
    for line, (ev, ts, lc, data) in zip(got, batch, strict=True):
        assert _parse(line) == _expected(node, ev, ts, lc, data)


def test_core_data_same_size_other_keys() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        w.core_data("commit", 1.0, 1, {"index": 1, "term": 2, "hash": "a"})
        w.core_data("commit", 2.0, 2, {"index": 2, "term": 2, "other": "b"})
        w.core_data("commit", 3.0, 3, {"index": 3, "term": 2})
        w.core_data("commit", 4.0, 4, {"index": 4, "term": 2, "hash": "c"})
        recs = [_parse(x) for x in _lines(w)]
    assert [r["data"] for r in recs] == [{"index": 1, "term": 2, "hash": "a"},
                                         {"index": 2, "term": 2, "other": "b"},
                                         {"index": 3, "term": 2}, {"index": 4, "term": 2, "hash": "c"}]


@FAST
@given(node=nodes, batch=st.lists(st.tuples(st.sampled_from(["request", "reply"]), tss, lcs, texts,
                                            st.one_of(flat_data, flat_data, non_flat_data)),
                                  min_size=1, max_size=16))
def test_client_lines_equal_the_generic_path(node: str, batch: list[Any]) -> None:
    """A request or reply line reuses the plan of the event's last op or result only for the
    same keys: ops of other key sets (a read has no value) and other types follow in any order."""
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, node)
        for ev, ts, lc, client, inner in batch:
            w.client_event(ev, ts, lc, client, "op" if ev == "request" else "result", dict(inner))
        got = _lines(w)
    assert len(got) == len(batch)
    for line, (ev, ts, lc, client, inner) in zip(got, batch, strict=True):
        key = "op" if ev == "request" else "result"
        want = _expected(node, ev, ts, lc, {"client": client, key: inner})
        assert _parse(line) == want


@FAST
@given(sig=st.binary(max_size=70), ts=tss, lc=lcs)
def test_a_signed_request_line_is_what_the_json_encoder_writes(sig: bytes, ts: float, lc: int) -> None:
    """A PBFT request carries its client's signature as bytes: the template writes it as the
    JSON encoder's ``default=str`` does (quotes, backslashes and all), so the line is the same."""
    op = {"f": "write", "key": "k1", "value": 7, "client": "bench", "seq": 3, "sig": sig}
    with tempfile.TemporaryDirectory() as tmp:
        w = _writer(tmp, "n1")
        w.event("request", ts, lc, data={"client": "n1.ab.c1", "op": op})
        w.core_event("custom", ts, lc, {"data": {"sig": sig}})
        got = _lines(w)
    want = [{"ts": round(ts, 6), "node": "n1", "lc": lc, "ev": ev, "data": data}
            for ev, data in (("request", {"client": "n1.ab.c1", "op": op}), ("custom", {"sig": sig}))]
    assert [_parse(x) for x in got] == [json.loads(json.dumps(r, default=str)) for r in want]
    assert _parse(got[0])["data"]["op"]["sig"] == str(sig)
