"""Run-directory views: Perfetto JSON, space-time SVG, latency/throughput plots."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from lab.views import fault_windows, messages, nodes_of
from lab.views.perfetto import perfetto_events, write_perfetto
from lab.views.plots import latencies, throughput, write_plots
from lab.views.spacetime import write_spacetime

SVG = "{http://www.w3.org/2000/svg}"


def ev(ts, node, kind, **kw):
    return {"ts": ts, "node": node, "lc": 0, "ev": kind, **kw}


def fault(ts, action, target, phase):
    return ev(ts, "lab", "fault", data={"action": action, "target": target, "phase": phase,
                                        "mechanism": "sim"})


def sample_trace():
    """Three nodes; a broadcast in one microsecond; a drop; a duplicate; faults."""
    t = [
        ev(0.0, "n1", "log", data={"msg": "started"}),
        ev(0.001, "n1", "state", data={"role": "candidate", "term": 1}),
        ev(0.001, "n1", "send", mid=1, type="RequestVote", peer="n2"),
        ev(0.001, "n1", "send", mid=2, type="RequestVote", peer="n3"),
        ev(0.001, "n1", "send", mid=3, type="RequestVote", peer="n10"),
        ev(0.002, "n2", "recv", mid=1, type="RequestVote", peer="n1"),
        ev(0.002, "n2", "send", mid=4, type="Vote", peer="n1"),
        ev(0.003, "n3", "drop", mid=2, type="RequestVote", peer="n1", data={"reason": "loss"}),
        ev(0.003, "n10", "recv", mid=3, type="RequestVote", peer="n1"),
        ev(0.0035, "n10", "recv", mid=3, type="RequestVote", peer="n1"),    # duplicated
        ev(0.004, "n1", "recv", mid=4, type="Vote", peer="n2"),
        ev(0.004, "n1", "state", data={"role": "leader", "term": 1}),
        ev(0.005, "n1", "commit", data={"index": 1, "term": 1, "hash": "ab"}),
        ev(0.005, "n2", "timer", type="election"),
        fault(0.006, "partition", [["n1"], ["n2", "n3"]], "apply"),
        fault(0.007, "crash", "n3", "apply"),
        fault(0.008, "partition", [["n1"], ["n2", "n3"]], "revert"),
        ev(0.009, "n1", "send", mid=5, type="Append", peer="n2"),           # never arrives
        fault(0.0095, "pause", "n2", "apply"),
        ev(0.010, "n2", "recv", mid=99, type="Append", peer="n1"),          # recv without a send
    ]
    return t


def matched_pairs(trace):
    return sum(1 for m in messages(trace) if m.recv_ts is not None)


# -- shared helpers --------------------------------------------------------------------

def test_nodes_messages_and_fault_windows():
    trace = sample_trace()
    assert nodes_of(trace) == ["n1", "n2", "n3", "n10"]
    msgs = messages(trace)
    assert [(m.mid, m.recv_ts is not None, m.drop_reason) for m in msgs] == [
        (1, True, None), (2, False, "loss"), (3, True, None), (3, True, None), (4, True, None),
        (5, False, None)]
    windows = fault_windows(trace)
    assert [(w.action, w.start, w.end) for w in windows] == [
        ("partition", 0.006, 0.008), ("crash", 0.007, None), ("pause", 0.0095, None)]
    assert windows[0].label == "partition n1 | n2,n3"


def test_heal_and_restart_close_windows():
    trace = [fault(1, "partition", [["a"], ["b"]], "apply"), fault(2, "crash", "n1", "apply"),
             fault(3, "heal", "all", "apply"), fault(4, "restart", "n1", "apply")]
    assert [(w.action, w.end) for w in fault_windows(trace)] == [("partition", 3), ("crash", 4)]


# -- perfetto ------------------------------------------------------------------------

def ns(us):
    """Perfetto's reading of a float microsecond: whole nanoseconds, truncated."""
    return int(us * 1000)


def slices_by_track(events):
    out = {}
    for e in events:
        if e["ph"] in ("X", "i"):
            start = ns(e["ts"])
            out.setdefault((e["pid"], e["tid"]), []).append((start, start + ns(e.get("dur", 0))))
    return out


def test_perfetto_json_flows_and_tracks(tmp_path):
    trace = sample_trace()
    path = tmp_path / "trace.perfetto.json"
    counts = write_perfetto(trace, path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"]: e["pid"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert set(names) == {"lab", "n1", "n2", "n3", "n10"}
    assert len(set(names.values())) == 5                      # one track per node

    starts = [e for e in events if e["ph"] == "s"]
    ends = [e for e in events if e["ph"] == "f"]
    assert len(starts) == len(ends) == matched_pairs(trace) == counts["flows"] == 4
    assert sorted(e["id"] for e in starts) == sorted(e["id"] for e in ends)
    assert len({e["id"] for e in starts}) == 4                # the duplicate gets its own id
    assert {1, 3, 4} <= {e["id"] for e in starts}             # integer mids are the flow ids
    assert all(e["bp"] == "e" for e in ends)

    # Every flow event lies strictly inside a slice on its own track (that is what it binds
    # to), and the send/recv slices of one track never partly overlap.
    tracks = slices_by_track(events)
    for e in starts + ends:
        inside = [s for s in tracks[(e["pid"], e["tid"])] if s[0] < ns(e["ts"]) < s[1]]
        assert len(inside) == 1, e
    for spans in tracks.values():
        spans = sorted(s for s in spans if s[1] > s[0])
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))

    faults = [e for e in events if e["ph"] == "X" and e["cat"] == "fault"]
    assert counts["faults"] == len(faults) == 3
    assert all(e["pid"] == names["lab"] for e in faults)
    assert len({e["tid"] for e in faults}) >= 2                # overlapping windows: own lanes
    partition = next(e for e in faults if e["args"]["action"] == "partition")
    assert partition["ts"] == pytest.approx(6000) and partition["dur"] == pytest.approx(2000)

    instants = Counter(e["cat"] for e in events if e["ph"] == "i")
    assert instants["state"] == 2 and instants["commit"] == 1 and instants["timer"] == 1
    assert instants["fault"] == 4 and instants["drop"] == 1


def test_perfetto_string_mids_become_integer_ids():
    trace = [ev(0.001, "a", "send", mid="a-1", type="M", peer="b"),
             ev(0.002, "b", "recv", mid="a-1", type="M", peer="a"),
             ev(0.003, "b", "send", mid="b-1", type="M", peer="a"),
             ev(0.004, "a", "recv", mid="b-1", type="M", peer="b")]
    events = perfetto_events(trace)
    ids = [e["id"] for e in events if e["ph"] in ("s", "f")]
    assert all(isinstance(i, int) for i in ids) and sorted(ids) == [1, 1, 2, 2]


def test_perfetto_empty_trace(tmp_path):
    write_perfetto([], tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["traceEvents"]


# -- space-time ----------------------------------------------------------------------

def test_spacetime_svg_parses_and_draws_messages(tmp_path):
    trace = sample_trace()
    path = tmp_path / "spacetime.svg"
    drawn = write_spacetime(trace, path)
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    arrows = [e for e in root.iter(f"{SVG}line") if e.get("marker-end")]
    assert len(arrows) == matched_pairs(trace) == 4 and drawn == 6
    assert len(list(root.iter(f"{SVG}circle"))) == 2          # the two state changes
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "n10" in text and "partition n1 | n2,n3" in text


def test_spacetime_caps_messages(tmp_path):
    trace = []
    for i in range(50):
        trace.append(ev(i * 0.01, "n1", "send", mid=i, type="Ping", peer="n2"))
        trace.append(ev(i * 0.01 + 0.005, "n2", "recv", mid=i, type="Ping", peer="n1"))
    trace.append(ev(0.4, "n2", "state", data={"role": "x"}))    # after the cut: not drawn
    path = tmp_path / "s.svg"
    assert write_spacetime(trace, path, limit=10) == 10
    root = ET.parse(path).getroot()
    assert len([e for e in root.iter(f"{SVG}line") if e.get("marker-end")]) == 10
    assert list(root.iter(f"{SVG}circle")) == []
    assert "first 10 of 50 messages" in path.read_text()


def test_spacetime_escapes_names(tmp_path):
    trace = [ev(0, "a<b", "send", mid=1, type="T&U", peer="c"),
             ev(1, "c", "recv", mid=1, type="T&U", peer="a<b")]
    write_spacetime(trace, tmp_path / "s.svg")
    ET.parse(tmp_path / "s.svg")


# -- plots -----------------------------------------------------------------------------

def sample_history():
    h = []
    for i in range(40):
        t = i * 0.1
        outcome = "ok" if i % 7 else ("fail" if i % 2 else "info")
        h.append({"process": i, "type": "invoke", "f": "write", "key": "x", "value": i, "ts": t})
        h.append({"process": i, "type": outcome, "f": "write", "key": "x", "value": i,
                  "ts": t + 0.01 * (1 + i % 3)})
    return h


def test_latency_and_throughput_series():
    h = sample_history()
    lat = latencies(h)
    assert len(lat) == 40 and {o for _, _, o in lat} == {"ok", "fail", "info"}
    assert lat[1][1] == pytest.approx(0.02)
    tp = throughput(h, 1.0)
    assert sum(tp["ok"][1]) + sum(tp["fail"][1]) + sum(tp["info"][1]) == 40


def test_plots_write_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots.png"
    assert write_plots(sample_history(), sample_trace(), path) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plots([], [], tmp_path / "empty.png") is True


def test_plots_without_matplotlib_write_nothing(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import now raises ImportError
    path = tmp_path / "plots.png"
    assert write_plots(sample_history(), [], path) is False
    assert not path.exists()
