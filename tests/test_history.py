"""History recording, the jsonl format, validation and op pairing."""

from __future__ import annotations

import json
import math

import pytest

from lab.errors import CheckError, ProtocolError
from lab.history import History, load_history, pair_ops, write_history


def test_record_write_load_round_trip(tmp_path):
    h = History()
    h.invoke(0, "write", "x", 1, 0.1)
    h.invoke(1, "read", "x", None, 0.15)
    h.complete(0, "ok", 1, 0.2)
    h.complete(1, "ok", 1, 0.3)
    path = tmp_path / "history.jsonl"
    h.write(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0]) == {"process": 0, "type": "invoke", "f": "write", "key": "x",
                                    "value": 1, "ts": 0.1}
    # The completion carries the invocation's f and key.
    assert json.loads(lines[3])["f"] == "read" and json.loads(lines[3])["key"] == "x"
    assert load_history(path) == h.events


def test_written_lines_are_byte_stable(tmp_path):
    events = [{"ts": 1.00000049, "value": {"b": 1, "a": 2}, "f": "write", "key": "k",
               "type": "invoke", "process": 3}]
    write_history(events, tmp_path / "a.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == \
        '{"f":"write","key":"k","process":3,"ts":1.00000049,"type":"invoke","value":{"a":2,"b":1}}\n'


def test_one_op_in_flight_per_process():
    h = History()
    h.invoke(0, "read", "x", None, 0.0)
    with pytest.raises(ProtocolError, match="in flight"):
        h.invoke(0, "read", "x", None, 0.1)
    with pytest.raises(ProtocolError, match="no operation in flight"):
        h.complete(7, "ok", None, 0.1)
    with pytest.raises(ProtocolError, match="outcome"):
        h.complete(0, "done", None, 0.1)


def test_info_retires_the_process_and_fresh_process_is_new():
    h = History()
    h.invoke(0, "write", "x", 1, 0.0)
    h.invoke(5, "write", "y", 1, 0.0)
    h.complete(0, "info", None, 1.0)
    with pytest.raises(ProtocolError, match="retired"):
        h.invoke(0, "read", "x", None, 1.1)
    p = h.fresh_process()
    assert p == 6 and h.fresh_process() == 7
    h.invoke(p, "read", "x", None, 1.1)
    assert set(h.in_flight) == {5, 6}


def test_close_turns_in_flight_ops_into_info():
    h = History()
    h.invoke(1, "write", "x", 1, 0.0)
    h.invoke(2, "read", "x", None, 0.5)
    h.complete(2, "ok", None, 0.6)
    h.close(9.0)
    assert h.in_flight == {}
    assert h.events[-1] == {"process": 1, "type": "info", "f": "write", "key": "x",
                            "value": None, "ts": 9.0}


def _write_lines(tmp_path, lines):
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1, "ts": 0.5}'


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"process": 1, "type": "invoke", "f": "read", "key": "x"}', "missing field 'ts'"),
    ('{"process": true, "type": "invoke", "f": "read", "key": "x", "ts": 1}', "process must be"),
    ('{"process": "", "type": "invoke", "f": "read", "key": "x", "ts": 1}', "process must be"),
    ('{"process": 1, "type": "begin", "f": "read", "key": "x", "ts": 1}', "type must be"),
    ('{"process": 1, "type": "invoke", "f": "", "key": "x", "ts": 1}', "f must be"),
    ('{"process": 1, "type": "invoke", "f": "read", "key": [1], "ts": 1}', "key must be"),
    ('{"process": 1, "type": "invoke", "f": "read", "key": "x", "ts": -1}', "ts must be"),
    ('{"process": 1, "type": "ok", "f": "read", "key": "x", "ts": 1}', "no operation in flight"),
    ('{"process": 0, "type": "invoke", "f": "read", "key": "x", "ts": 1}', "still in flight"),
    ('{"process": 0, "type": "ok", "f": "read", "key": "x", "ts": 1}', "but it invoked write"),
    ('{"process": 0, "type": "ok", "f": "write", "key": "x", "ts": 0.1}', "before its invocation"),
])
def test_load_history_names_the_bad_line(tmp_path, bad, message):
    path = _write_lines(tmp_path, [GOOD, "", bad])
    with pytest.raises(CheckError) as err:
        load_history(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_load_history_missing_file(tmp_path):
    with pytest.raises(CheckError, match="cannot read history"):
        load_history(tmp_path / "nope.jsonl")


def test_load_history_defaults_key_and_value(tmp_path):
    path = _write_lines(tmp_path, ['{"process": 0, "type": "invoke", "f": "noop", "ts": 0}'])
    assert load_history(path) == [{"process": 0, "type": "invoke", "f": "noop", "key": None,
                                   "value": None, "ts": 0}]


def test_pair_ops_outcomes_and_order():
    events = [
        {"process": 0, "type": "invoke", "f": "write", "key": "x", "value": 1, "ts": 0.0},
        {"process": 1, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0.1},
        {"process": 2, "type": "invoke", "f": "cas", "key": "x", "value": [1, 2], "ts": 0.2},
        {"process": 1, "type": "ok", "f": "read", "key": "x", "value": 1, "ts": 0.3},
        {"process": 0, "type": "info", "f": "write", "key": "x", "value": None, "ts": 0.4},
        {"process": 2, "type": "fail", "f": "cas", "key": "x", "value": [1, 2], "ts": 0.5},
        {"process": 3, "type": "invoke", "f": "write", "key": "y", "value": 9, "ts": 0.6},
    ]
    ops = pair_ops(events)
    assert [(o.process, o.outcome) for o in ops] == [(0, "info"), (1, "ok"), (2, "fail"), (3, "info")]
    assert ops[0].complete_ts == math.inf and ops[0].value_in == 1 and ops[0].value_out is None
    assert ops[1].value_out == 1 and ops[1].invoke_ts == 0.1 and ops[1].complete_ts == 0.3
    assert ops[2].value_in == [1, 2] and ops[2].complete_ts == 0.5
    assert ops[3].complete_ts == math.inf          # never answered: may have happened
    assert ops[0].as_dict()["complete_ts"] is None


def test_pair_ops_rejects_broken_discipline():
    inv = {"process": 0, "type": "invoke", "f": "read", "key": "x", "value": None, "ts": 0.0}
    with pytest.raises(CheckError, match="event 1"):
        pair_ops([inv, dict(inv)])
    with pytest.raises(CheckError, match="no op in flight"):
        pair_ops([{**inv, "type": "ok"}])
