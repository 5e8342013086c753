"""PBFT's checkers on hand-made traces and histories: each can hold, be violated, or not decide.
(Broken protocol variants making them fail: tests/test_pbft_sweep.py and test_pbft.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from lab.checks.base import RunData
from lab.checks.pbft import agreement, byzantine_nodes, committed_survives_view_change, progress
from lab.checks.registry import all_checks, convert_params
from lab.errors import CheckError
from nodes.protocols import get

SCENARIO = {"nodes": [{"name": "n1", "byzantine": ["equivocate"]}, {"name": "n2"}, {"name": "n3"},
                      {"name": "n4"}]}


def commit(node: str, seq: int, digest: str, view: int = 0, ts: float = 1.0) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 1, "ev": "commit",
            "data": {"seq": seq, "view": view, "digest": digest, "size": 1}}


def new_view(node: str, view: int, min_s: int, pps: dict[int, str], ts: float = 2.0) -> dict[str, Any]:
    return {"ts": ts, "node": node, "lc": 2, "ev": "state",
            "data": {"role": "backup", "view": view,
                     "new_view": {"min_s": min_s, "O": {str(k): v for k, v in pps.items()}}}}


def run(trace: list[dict[str, Any]], history: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None) -> RunData:
    return RunData(scenario=SCENARIO, trace=trace, history=history or [], params=params or {})


def test_registered_and_applicable_to_pbft() -> None:
    checks = all_checks()
    assert {"agreement", "committed_survives_view_change", "progress", "linearizable"} <= set(checks)
    assert set(get("pbft").applicable_checks()) == {"agreement", "committed_survives_view_change",
                                                     "linearizable", "progress"}
    assert convert_params("progress", {"grace": "2s", "min_ok": "90%"}) == {"grace": 2.0, "min_ok": 0.9}
    assert byzantine_nodes(run([])) == {"n1"}


def test_agreement() -> None:
    same = [commit(n, 1, "a") for n in ("n2", "n3", "n4")] + [commit("n2", 2, "b")]
    v = agreement(run(same))
    assert v.verdict == "holds" and v.data == {"seqs": 2}
    split = same + [commit("n4", 2, "c", view=1)]
    v = agreement(run(split))
    assert v.verdict == "violated" and "seq 2" in v.detail
    assert v.data["violations"][0] == {"seq": 2, "a": "n2", "digest_a": "b", "view_a": 0,
                                       "b": "n4", "digest_b": "c", "view_b": 1}
    # One honest replica committing two requests at one seq (across views) breaks it too.
    assert agreement(run(same + [commit("n3", 1, "z", view=2)])).verdict == "violated"
    # A Byzantine replica's commits prove nothing either way.
    assert agreement(run(same + [commit("n1", 1, "lie")])).verdict == "holds"
    assert agreement(run([])).verdict == "unknown"
    with pytest.raises(CheckError, match="lacks digest"):
        agreement(run([{"ts": 0, "node": "n2", "ev": "commit", "data": {"seq": 1, "view": 0}}]))


def test_committed_survives_view_change() -> None:
    trace = [commit("n2", 1, "a"), commit("n3", 1, "a"), commit("n2", 2, "b"),
             new_view("n2", 1, 0, {1: "a", 2: "b"}), new_view("n3", 1, 0, {1: "a", 2: "b"})]
    v = committed_survives_view_change(run(trace))
    assert v.verdict == "holds" and v.data == {"new_views": 1}
    v = committed_survives_view_change(run([*trace, commit("n4", 9, "q")]))
    assert v.verdict == "violated" and "left out" in v.detail      # above min-s, not re-proposed
    below = [commit("n2", 1, "a"), commit("n2", 2, "b"), new_view("n2", 1, 1, {2: "b"})]
    v = committed_survives_view_change(run(below))
    assert v.verdict == "holds" and v.data == {"new_views": 1}    # seq 1 is in the checkpoint
    lost = [commit("n2", 1, "a"), commit("n2", 2, "b"), new_view("n3", 1, 0, {1: "a", 2: "null"})]
    v = committed_survives_view_change(run(lost))
    assert v.verdict == "violated"
    assert "replaced by null in the NEW-VIEW of view 1" in v.detail
    # A commit made in the new view itself is not owed to it; nor does a Byzantine node count.
    later = [commit("n2", 1, "a", view=1), new_view("n2", 1, 0, {}), new_view("n1", 2, 0, {})]
    assert committed_survives_view_change(run(later[:2])).verdict == "holds"
    assert committed_survives_view_change(run(later)).verdict == "holds"
    assert committed_survives_view_change(run(later + [new_view("n4", 2, 0, {})])).verdict == "violated"
    assert committed_survives_view_change(run([commit("n2", 1, "a")])).detail == "no view change was installed"
    assert committed_survives_view_change(run([])).verdict == "unknown"


def _op(p: int, t0: float, t1: float | None, kind: str = "ok") -> list[dict[str, Any]]:
    evs = [{"process": p, "type": "invoke", "f": "read", "key": "k", "value": None, "ts": t0}]
    if t1 is not None:
        evs.append({"process": p, "type": kind, "f": "read", "key": "k", "value": None, "ts": t1})
    return evs


def test_progress() -> None:
    fault = [{"ts": 3.0, "node": "lab", "lc": 0, "ev": "fault", "data": {"action": "heal"}}]
    history = _op(1, 0.5, 0.6) + _op(2, 3.5, None) + _op(3, 4.5, 4.6) + _op(4, 5.0, 5.1, "fail")
    v = progress(run(fault, history))
    assert v.verdict == "holds" and v.data["since"] == 4.0 and v.data["completed"] == 2
    stuck = _op(1, 0.5, 0.6) + _op(2, 4.5, 5.5, "info") + _op(3, 5.0, None)
    v = progress(run(fault, stuck))
    assert v.verdict == "violated" and "0 of 2" in v.detail
    assert progress(run(fault, stuck, {"grace": 10.0})).verdict == "unknown"
    half = _op(1, 4.5, 4.6) + _op(2, 4.6, None) + _op(3, 4.7, None)
    assert progress(run(fault, half)).verdict == "violated"                 # 1 of 3 < 50%
    assert progress(run(fault, half, {"min_ok": 0.3})).verdict == "holds"
    # No fault at all: counted from the first operation on.
    assert progress(run([], _op(1, 0.0, None) + _op(2, 1.5, 1.6))).verdict == "holds"
    assert progress(run([], [])).verdict == "unknown"
