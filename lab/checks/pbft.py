"""PBFT's properties, checked on the trace and the history (docs/pbft.md, "Checkers").

The core traces (docs/pbft.md, "Trace"): ``commit`` ``{seq, view, digest, size}`` the first
time a replica is committed-local for a (seq, digest), and ``state`` on every view change,
with ``new_view`` ``{min_s, O: {seq: digest}}`` when a replica installs a NEW-VIEW. Only
*honest* replicas count: a node the scenario marks ``byzantine`` may trace anything.

* agreement: no two honest replicas (nor one, twice) commit different requests (batch
  digests) at one sequence number.
* committed_survives_view_change: a request an honest replica committed at seq n in view v
  is, in every NEW-VIEW of a view above v that an honest replica installed, re-proposed at
  n (unless n is at or below that NEW-VIEW's stable checkpoint, which holds its effect).
* progress (liveness): of the client operations invoked ``grace`` after the last fault event
  (or after the start, with no faults), at least ``min_ok`` complete (ok or a definite fail),
  and at least one does. A scenario may expect it ``violated`` (f+1 silent replicas).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, Params, RunData, Verdict
from lab.errors import CheckError
from lab.history import FAIL, OK, pair_ops

SHOW = 5


def byzantine_nodes(run: RunData) -> set[str]:
    """The nodes the scenario made faulty (``byzantine: [...]``); their traces prove nothing."""
    nodes = run.scenario.get("nodes") if isinstance(run.scenario, dict) else None
    if not isinstance(nodes, list):
        return set()
    return {n["name"] for n in nodes if isinstance(n, dict) and n.get("byzantine")}


def _events(run: RunData, ev: str, need: tuple[str, ...]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line, node, data) of the honest replicas' ``ev`` events that carry ``need``."""
    faulty = byzantine_nodes(run)
    for line, e in enumerate(run.trace, 1):
        if e.get("ev") != ev or e.get("node") in ("lab", None) or e.get("node") in faulty:
            continue
        data = e.get("data")
        if not isinstance(data, dict):
            raise CheckError(f"trace event {line}: {ev} event without a data object")
        missing = [k for k in need if k not in data]
        if missing:
            raise CheckError(f"trace event {line}: {ev} event lacks {', '.join(missing)}")
        yield line, str(e["node"]), data


def _commits(run: RunData) -> Iterator[tuple[int, str, dict[str, Any]]]:
    return _events(run, "commit", ("seq", "view", "digest"))


def agreement(run: RunData) -> Verdict:
    name = "agreement"
    first: dict[int, tuple[str, str, int]] = {}      # seq -> (digest, node, view)
    bad: list[dict[str, Any]] = []
    seqs = 0
    for _, node, data in _commits(run):
        seq, d = data["seq"], data["digest"]
        got = first.setdefault(seq, (d, node, data["view"]))
        if got == (d, node, data["view"]):
            seqs += 1
        if got[0] != d and len(bad) < SHOW:
            bad.append({"seq": seq, "a": got[1], "digest_a": got[0], "view_a": got[2],
                        "b": node, "digest_b": d, "view_b": data["view"]})
    if not first:
        return Verdict(name, UNKNOWN, "no PBFT commit events in the trace")
    if bad:
        b = bad[0]
        return Verdict(name, VIOLATED,
                       f"seq {b['seq']}: {b['a']} committed {b['digest_a']} (view {b['view_a']}), "
                       f"{b['b']} committed {b['digest_b']} (view {b['view_b']})",
                       {"violations": bad})
    return Verdict(name, HOLDS, f"{len(first)} sequence numbers committed, one request batch each "
                   "at every honest replica", {"seqs": len(first)})


def committed_survives_view_change(run: RunData) -> Verdict:
    name = "committed_survives_view_change"
    by_seq: dict[int, dict[tuple[str, int], str]] = defaultdict(dict)   # seq -> (digest, view) -> node
    for _, node, data in _commits(run):
        by_seq[data["seq"]].setdefault((data["digest"], data["view"]), node)
    if not by_seq:
        return Verdict(name, UNKNOWN, "no PBFT commit events in the trace")
    views: dict[tuple[int, str], tuple[str, int, dict[str, str]]] = {}
    for line, node, data in _events(run, "state", ()):
        nv = data.get("new_view")
        if nv is None:
            continue
        if not isinstance(nv, dict) or "min_s" not in nv or not isinstance(nv.get("O"), dict) \
                or "view" not in data:
            raise CheckError(f"trace event {line}: a new_view lacks view, min_s or O")
        key = (data["view"], json.dumps(nv["O"], sort_keys=True))
        views.setdefault(key, (node, nv["min_s"], nv["O"]))
    bad: list[dict[str, Any]] = []
    for (w, _), (node, min_s, pps) in sorted(views.items()):
        for seq in sorted(s for s in by_seq if s > min_s):
            for (d, v), who in by_seq[seq].items():
                if v < w and pps.get(str(seq)) != d and len(bad) < SHOW:
                    bad.append({"seq": seq, "digest": d, "committed_by": who, "in_view": v,
                                "new_view": w, "installed_by": node,
                                "reproposed": pps.get(str(seq))})
    if bad:
        b = bad[0]
        what = "left out" if b["reproposed"] is None else f"replaced by {b['reproposed']}"
        return Verdict(name, VIOLATED,
                       f"seq {b['seq']}: {b['digest']}, committed by {b['committed_by']} in view "
                       f"{b['in_view']}, is {what} in the NEW-VIEW of view {b['new_view']}",
                       {"violations": bad})
    if not views:
        return Verdict(name, HOLDS, "no view change was installed", {"new_views": 0})
    return Verdict(name, HOLDS, f"{len(views)} NEW-VIEWs installed, each re-proposing every request "
                   "committed before it above its checkpoint", {"new_views": len(views)})


def progress(run: RunData) -> Verdict:
    name = "progress"
    grace = run.params.get("grace", 1.0)
    min_ok = run.params.get("min_ok", 0.5)
    faults = [float(e["ts"]) for e in run.trace if e.get("ev") == "fault"]
    ops = pair_ops(run.history)
    if not ops:
        return Verdict(name, UNKNOWN, "no client operations in the history")
    since = (max(faults) if faults else min(op.invoke_ts for op in ops)) + grace
    after = [op for op in ops if op.invoke_ts >= since]
    if not after:
        return Verdict(name, UNKNOWN, f"no operation was invoked after {since:.3f}s "
                       "(the last fault, plus the grace)")
    done = sum(op.outcome in (OK, FAIL) for op in after)
    frac = done / len(after)
    data = {"since": round(since, 6), "ops": len(after), "completed": done, "fraction": round(frac, 4)}
    what = (f"{done} of {len(after)} operations invoked after {since:.3f}s completed "
            f"({frac:.0%}; needed {min_ok:.0%})")
    if done == 0 or frac < min_ok:
        return Verdict(name, VIOLATED, what, data)
    return Verdict(name, HOLDS, what, data)


PROTOCOLS = ("pbft",)     # whose checks these are (lab/checks/registry.py)
TRACE_LINES = dict.fromkeys(("agreement", "committed_survives_view_change", "progress"),
                            frozenset({"state", "commit", "log", "fault"}))
CHECKS: dict[str, Checker] = {
    "agreement": agreement,
    "committed_survives_view_change": committed_survives_view_change,
    "progress": progress,
}

PARAMS: Params = {
    "progress": {
        "grace": ("s", "time after the last fault event (or the start) before operations count: "
                       "a view change or catch-up may still be under way"),
        "min_ok": ("%", "the fraction of those operations that must complete (ok or fail)"),
    },
}
