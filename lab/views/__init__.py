"""The run directory's pictures: each a pure function from trace/history to a file.

* :func:`lab.views.perfetto.write_perfetto` -- ``trace.perfetto.json`` for ui.perfetto.dev
* :func:`lab.views.plots.write_plots` -- latency and throughput over time (PNG, matplotlib)
* :func:`lab.views.spacetime.write_spacetime` -- a space-time diagram (SVG, no dependency)

This module holds what they share: node order, message matching, fault windows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LAB = "lab"
# A revert may be spelled as its own action (heal, restart, resume); these close the
# windows opened by the actions they undo.
_UNDOES = {"heal": ("partition",), "restart": ("crash",), "resume": ("pause",)}


def node_order(name: str) -> tuple[Any, ...]:
    """Natural order: n2 before n10; ``lab`` first."""
    parts = re.split(r"(\d+)", name)
    return (name != LAB, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts])


def nodes_of(trace: Iterable[dict[str, Any]]) -> list[str]:
    """Every node that appears in the trace (as ``node`` or ``peer``), ``lab`` excluded."""
    names = set()
    for ev in trace:
        for name in (ev.get("node"), ev.get("peer")):
            if isinstance(name, str) and name != LAB:
                names.add(name)
    return sorted(names, key=node_order)


@dataclass(frozen=True)
class Message:
    mid: Any
    src: str
    dst: str
    type: str
    send_ts: float
    recv_ts: float | None           # None: dropped or never delivered
    drop_reason: str | None = None


def messages(trace: Iterable[dict[str, Any]]) -> list[Message]:
    """Sends matched to their recv (or drop) by ``mid``, in send order.

    A duplicated delivery gives one Message per recv; a recv with no send is
    left out (nothing to draw it from).
    """
    sends: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    ends: dict[Any, list[dict[str, Any]]] = {}
    for ev in trace:
        kind, mid = ev.get("ev"), ev.get("mid")
        if mid is None:
            continue
        mid = _hashable(mid)
        if kind == "send" and mid not in sends:
            sends[mid] = ev
            order.append(mid)
        elif kind in ("recv", "drop") and mid in sends:
            ends.setdefault(mid, []).append(ev)
    out: list[Message] = []
    for mid in order:
        s = sends[mid]
        src, dst = str(s.get("node")), str(s.get("peer"))
        typ = str(s.get("type") or "")
        got = ends.get(mid)
        if not got:
            out.append(Message(mid, src, dst, typ, s["ts"], None))
            continue
        for end in got:
            if end["ev"] == "recv":
                out.append(Message(mid, src, dst, typ, s["ts"], end["ts"]))
            else:
                reason = (end.get("data") or {}).get("reason")
                out.append(Message(mid, src, dst, typ, s["ts"], None, reason))
    return out


@dataclass(frozen=True)
class FaultWindow:
    action: str
    target: Any
    start: float
    end: float | None               # None: never reverted within the trace
    mechanism: str | None = None

    @property
    def label(self) -> str:
        target = self.target
        if isinstance(target, list):
            target = " | ".join(",".join(map(str, g)) if isinstance(g, list) else str(g)
                                for g in target)
        return f"{self.action} {target}" if target not in (None, "") else self.action


def _hashable(x: Any) -> Any:
    return json.dumps(x, sort_keys=True) if isinstance(x, list | dict) else x


def fault_windows(trace: Iterable[dict[str, Any]]) -> list[FaultWindow]:
    """Fault apply -> revert pairs from the ``lab`` node's ``fault`` events, by start time.

    A revert closes the earliest open window of the same action and target
    (else of the same action); an applied heal/restart/resume closes the
    partitions/crashes/pauses it undoes.
    """
    open_: list[dict[str, Any]] = []
    done: list[FaultWindow] = []

    def close(w: dict[str, Any], ts: float) -> None:
        open_.remove(w)
        done.append(FaultWindow(w["action"], w["target"], w["start"], ts, w["mechanism"]))

    for ev in trace:
        if ev.get("ev") != "fault":
            continue
        data = ev.get("data") or {}
        action, target, phase = data.get("action"), data.get("target"), data.get("phase")
        ts = ev["ts"]
        if not isinstance(action, str):
            continue
        undone = _UNDOES.get(action)
        if phase == "apply" and undone:
            for w in [w for w in open_ if w["action"] in undone]:
                if target in (None, "all") or _hashable(w["target"]) == _hashable(target) \
                        or action == "heal":
                    close(w, ts)
            continue
        if phase == "apply":
            open_.append({"action": action, "target": target, "start": ts,
                          "mechanism": data.get("mechanism")})
        elif phase == "revert":
            same = [w for w in open_ if w["action"] == action]
            exact = [w for w in same if _hashable(w["target"]) == _hashable(target)]
            if exact or same:
                close((exact or same)[0], ts)
    done.extend(FaultWindow(w["action"], w["target"], w["start"], None, w["mechanism"])
                for w in open_)
    return sorted(done, key=lambda w: (w.start, w.action))


def time_span(trace: Iterable[dict[str, Any]]) -> tuple[float, float]:
    """(first ts, last ts) of a trace; (0, 0) when empty."""
    ts = [ev["ts"] for ev in trace if isinstance(ev.get("ts"), int | float)]
    return (min(ts), max(ts)) if ts else (0.0, 0.0)
