"""``trace.perfetto.json``: the trace in Chrome's Trace Event format, for ui.perfetto.dev.

One process track per node (and one for ``lab``), every message a short
slice on the sender and on the receiver joined by a flow arrow (``ph: s`` /
``ph: f``, the message id as flow id), every other trace event an instant,
and every fault window (apply -> revert) a slice on the ``lab`` track.

Perfetto binds a v1 flow event to the slice open on its track at that
moment, and needs slices on one track to nest. Trace timestamps are whole
microseconds, so the events a node has within one microsecond are laid out
one after another inside it, and each flow event sits in the middle of its
own slice, clear of its edges.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lab.views import LAB, fault_windows, node_order, time_span

LAB_PID = 1
LANE_TID = 1000          # lab's fault lanes are threads 1000, 1001, ... of the lab process
FLOW_CAT = "msg"


def _name(ev: dict[str, Any]) -> str:
    """A short slice title for one trace event."""
    kind = ev.get("ev", "?")
    data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
    typ = ev.get("type")
    if kind in ("send", "recv"):
        return f"{kind} {typ or ''}".strip()
    if kind == "drop":
        return f"drop {typ or ''} ({data.get('reason', '?')})"
    if kind == "timer":
        return f"timer {typ or ''}".strip()
    if kind == "state":
        parts = [str(data[k]) for k in ("role", "phase", "status") if k in data]
        if "term" in data:
            parts.append(f"t{data['term']}")
        return "state " + " ".join(parts) if parts else "state"
    if kind in ("commit", "apply") and "index" in data:
        return f"{kind} {data['index']}"
    if kind == "fault":
        return f"fault {data.get('action', '?')} {data.get('phase', '')}".strip()
    if kind == "log" and "msg" in data:
        return f"log {data['msg']}"
    return str(kind)


def _flow_ids(trace: list[dict[str, Any]]) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Flow ids: (send's trace index -> ids it starts, recv's trace index -> id it ends).

    The id is the mid itself when every mid is a non-negative integer (Perfetto
    reads ids as integers, or strings as hex), else a number in order of first
    send. A duplicated delivery gets a fresh id above all others, so each
    matched send/recv pair is exactly one flow.
    """
    send_at: dict[Any, int] = {}
    pairs: list[tuple[Any, int, int]] = []
    for i, ev in enumerate(trace):
        mid = ev.get("mid")
        if mid is None or isinstance(mid, list | dict):
            continue
        if ev.get("ev") == "send" and mid not in send_at:
            send_at[mid] = i
        elif ev.get("ev") == "recv" and mid in send_at:
            pairs.append((mid, send_at[mid], i))
    ints = all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in send_at)
    numbering = {m: n for n, m in enumerate(send_at, 1)}
    next_id = max(send_at) + 1 if ints and send_at else len(numbering) + 1
    starts: dict[int, list[int]] = defaultdict(list)
    ends: dict[int, int] = {}
    used: set[Any] = set()
    for mid, s, r in pairs:
        if mid in used:
            fid, next_id = next_id, next_id + 1
        else:
            used.add(mid)
            fid = mid if ints else numbering[mid]
        starts[s].append(fid)
        ends[r] = fid
    return starts, ends


def perfetto_events(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Trace Event list for a trace (see module doc)."""
    names = sorted({str(ev.get("node")) for ev in trace if ev.get("node") is not None} - {LAB},
                   key=node_order)
    pid = {LAB: LAB_PID, **{n: i + 2 for i, n in enumerate(names)}}
    out: list[dict[str, Any]] = []
    for node, p in pid.items():
        out.append({"ph": "M", "name": "process_name", "pid": p, "tid": p, "args": {"name": node}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": p, "tid": p,
                    "args": {"sort_index": p}})
        out.append({"ph": "M", "name": "thread_name", "pid": p, "tid": p,
                    "args": {"name": "events" if node == LAB else node}})

    starts, ends = _flow_ids(trace)
    # Group each node's events by their microsecond, to lay them out inside it.
    slots: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, ev in enumerate(trace):
        slots[(str(ev.get("node")), round(float(ev["ts"]) * 1e6))].append(i)
    for (node, us), idxs in slots.items():
        p = pid.get(node)
        if p is None:
            continue
        # ns each event gets within the microsecond. A slice keeps 1 ns clear at each end of
        # its slot: Perfetto turns float microseconds into whole ns by truncation, and a
        # 1 ns slip must not make neighbours overlap.
        width = max(8, 1000 // len(idxs))
        for j, i in enumerate(idxs):
            ev = trace[i]
            start_ns = us * 1000 + j * width
            ts = start_ns / 1000
            args = {k: ev[k] for k in ("mid", "type", "peer", "lc", "data") if k in ev}
            base = {"name": _name(ev), "cat": ev.get("ev", "?"), "pid": p, "tid": p, "args": args}
            kind = ev.get("ev")
            if kind in ("send", "recv"):
                out.append({**base, "ph": "X", "ts": (start_ns + 1) / 1000,
                            "dur": (width - 2) / 1000})
                mid_ts = (start_ns + width // 2) / 1000
                flow = {"name": "message", "cat": FLOW_CAT, "pid": p, "tid": p, "ts": mid_ts}
                if kind == "send":
                    out.extend({**flow, "ph": "s", "id": fid} for fid in starts.get(i, ()))
                elif i in ends:
                    out.append({**flow, "ph": "f", "bp": "e", "id": ends[i]})
            else:
                out.append({**base, "ph": "i", "s": "t", "ts": ts})

    _, last = time_span(trace)
    lanes: list[float] = []                          # end of the last window in each lane
    for w in fault_windows(trace):
        end = last if w.end is None else w.end
        lane = next((k for k, busy in enumerate(lanes) if busy <= w.start), len(lanes))
        if lane == len(lanes):
            lanes.append(end)
            out.append({"ph": "M", "name": "thread_name", "pid": LAB_PID, "tid": LANE_TID + lane,
                        "args": {"name": f"faults {lane + 1}"}})
        lanes[lane] = end
        out.append({"ph": "X", "name": w.label, "cat": "fault", "pid": LAB_PID,
                    "tid": LANE_TID + lane, "ts": round(w.start * 1e6, 3),
                    "dur": round(max(end - w.start, 1e-6) * 1e6, 3),
                    "args": {"action": w.action, "target": w.target, "mechanism": w.mechanism,
                             "reverted": w.end is not None}})
    # Metadata first, then time order (stable, so a slice stays ahead of its flow event).
    out.sort(key=lambda e: (e["ph"] != "M", e.get("ts", 0.0)))
    return out


def write_perfetto(trace: list[dict[str, Any]], path: str | Path) -> dict[str, int]:
    """Write ``trace.perfetto.json``; returns counts (events, flows, fault windows)."""
    events = perfetto_events(trace)
    with open(path, "w", encoding="utf-8") as fh:
        # displayTimeUnit first: Perfetto reads the outer keys in order.
        json.dump({"displayTimeUnit": "ms", "traceEvents": events}, fh, separators=(",", ":"))
    return {"events": len(events),
            "flows": sum(1 for e in events if e["ph"] == "f"),
            "faults": sum(1 for e in events if e.get("cat") == "fault" and e["ph"] == "X")}
