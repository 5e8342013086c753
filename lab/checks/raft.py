"""Raft's safety properties (Figure 3 of the Raft paper), checked on the trace alone.

The core traces (docs/trace.md): ``state`` on every role or term change (a
new leader adds its log above its commit index as ``hashes`` and ``terms``),
``commit`` once per index a node learns is committed, with the entry's chain
hash. A chain hash covers the whole log prefix, so equal hashes at an index
mean equal logs up to it, and every property below becomes a comparison of
hashes.

* election_safety: at most one leader per term.
* log_matching: two entries with the same index and term have the same hash
  (so the logs agree up to there), over every commit and every leader's log.
* leader_completeness: an entry committed in term T is in the log of every
  leader of a term above T, as that leader was elected. The term in which a
  node learnt of a commit bounds the term it was committed in from above, so
  the check uses the committing node's term at the commit event: sound (it
  never flags a correct run, whatever the clocks say) and, for the leader's
  own commits, exact.
* state_machine_safety: no two nodes commit (and so apply) different entries
  at one index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, RunData, Verdict
from lab.errors import CheckError

SHOW = 5     # violations listed in a verdict's data


def _raft_events(trace: list[dict[str, Any]]) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(line, node, ev, data) of every state and commit event, in trace order."""
    for line, e in enumerate(trace, 1):
        ev = e.get("ev")
        if ev not in ("state", "commit") or e.get("node") == "lab":
            continue
        data = e.get("data")
        if not isinstance(data, dict):
            raise CheckError(f"trace event {line}: {ev} event without a data object")
        need = ("role", "term") if ev == "state" else ("index", "term", "hash")
        missing = [k for k in need if k not in data]
        if missing:
            raise CheckError(f"trace event {line}: {ev} event lacks {', '.join(missing)}")
        yield line, str(e.get("node")), ev, data


def _leader_log(data: dict[str, Any]) -> dict[int, tuple[int | None, str]]:
    """index -> (term or None, hash) of a new leader's uncommitted log, as traced."""
    terms = {int(k): v for k, v in (data.get("terms") or {}).items()}
    return {int(k): (terms.get(int(k)), h) for k, h in (data.get("hashes") or {}).items()}


def _no_events(name: str, trace: list[dict[str, Any]]) -> Verdict | None:
    if not any(e.get("ev") == "state" for e in trace):
        return Verdict(name, UNKNOWN, "no Raft state events in the trace")
    return None


def election_safety(run: RunData) -> Verdict:
    name = "election_safety"
    if (v := _no_events(name, run.trace)) is not None:
        return v
    leaders: dict[int, list[str]] = defaultdict(list)
    for _, node, ev, data in _raft_events(run.trace):
        if ev == "state" and data["role"] == "leader" and node not in leaders[data["term"]]:
            leaders[data["term"]].append(node)
    bad = {t: ns for t, ns in sorted(leaders.items()) if len(ns) > 1}
    if bad:
        t, ns = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more terms)" if len(bad) > 1 else ""
        return Verdict(name, VIOLATED, f"term {t} had {len(ns)} leaders: {', '.join(ns)}{more}",
                       {"terms": {str(t): ns for t, ns in list(bad.items())[:SHOW]}, "count": len(bad)})
    if not leaders:
        return Verdict(name, HOLDS, "no leader was elected", {"terms": 0})
    return Verdict(name, HOLDS, f"{len(leaders)} terms had a leader, one each", {"terms": len(leaders)})


def log_matching(run: RunData) -> Verdict:
    name = "log_matching"
    if (v := _no_events(name, run.trace)) is not None:
        return v
    seen: dict[tuple[int, int], tuple[str, str]] = {}     # (index, term) -> (hash, who)
    bad: list[dict[str, Any]] = []

    def see(index: int, term: int, h: str, who: str) -> None:
        first = seen.setdefault((index, term), (h, who))
        if first[0] != h and len(bad) < SHOW:
            bad.append({"index": index, "term": term, "a": first[1], "hash_a": first[0],
                        "b": who, "hash_b": h})

    for _, node, ev, data in _raft_events(run.trace):
        if ev == "commit":
            see(data["index"], data["term"], data["hash"], f"{node} (commit)")
        elif data["role"] == "leader":
            for index, (term, h) in _leader_log(data).items():
                if term is not None:
                    see(index, term, h, f"{node} (leader of term {data['term']})")
    if bad:
        b = bad[0]
        return Verdict(name, VIOLATED,
                       f"index {b['index']} term {b['term']}: {b['a']} has {b['hash_a']}, "
                       f"{b['b']} has {b['hash_b']}: same entry, different logs before it",
                       {"violations": bad})
    return Verdict(name, HOLDS, f"{len(seen)} (index, term) pairs, each with one log prefix",
                   {"entries": len(seen)})


def state_machine_safety(run: RunData) -> Verdict:
    name = "state_machine_safety"
    if (v := _no_events(name, run.trace)) is not None:
        return v
    committed: dict[int, tuple[str, int, str]] = {}        # index -> (hash, term, node)
    bad: list[dict[str, Any]] = []
    for _, node, ev, data in _raft_events(run.trace):
        if ev != "commit":
            continue
        index, h = data["index"], data["hash"]
        first = committed.setdefault(index, (h, data["term"], node))
        if first[0] != h and len(bad) < SHOW:
            bad.append({"index": index, "a": first[2], "hash_a": first[0], "term_a": first[1],
                        "b": node, "hash_b": h, "term_b": data["term"]})
    if bad:
        b = bad[0]
        return Verdict(name, VIOLATED,
                       f"index {b['index']} committed as {b['hash_a']} (term {b['term_a']}) by {b['a']} "
                       f"and as {b['hash_b']} (term {b['term_b']}) by {b['b']}",
                       {"violations": bad})
    return Verdict(name, HOLDS, f"{len(committed)} indexes committed, each with one entry",
                   {"indexes": len(committed)})


def leader_completeness(run: RunData) -> Verdict:
    name = "leader_completeness"
    if (v := _no_events(name, run.trace)) is not None:
        return v
    term_of: dict[str, int] = {}                   # node -> its term, from its state events
    own: dict[str, dict[int, str]] = defaultdict(dict)    # node -> index -> hash it committed
    # index -> hash -> lowest term in which some node knew it committed
    required: dict[int, dict[str, int]] = defaultdict(dict)
    conflicted: set[int] = set()                   # indexes committed with more than one hash so far
    top = 0                                        # highest committed index so far
    bad: list[dict[str, Any]] = []
    leaders = 0

    def check(node: str, term: int, index: int, has: str | None) -> None:
        for h, known_in in required[index].items():
            if known_in < term and has != h and len(bad) < SHOW:
                bad.append({"leader": node, "term": term, "index": index, "committed": h,
                            "committed_in": known_in, "leader_has": has})

    for _, node, ev, data in _raft_events(run.trace):
        if ev == "commit":
            index, h = data["index"], data["hash"]
            own[node][index] = h
            known_in = term_of.get(node, data["term"])
            hashes = required[index]
            if h not in hashes:
                if hashes:
                    conflicted.add(index)
                hashes[h] = known_in
            elif known_in < hashes[h]:
                hashes[h] = known_in
            top = max(top, index)
            continue
        term_of[node] = data["term"]
        if data["role"] != "leader":
            continue
        leaders += 1
        term, commit, last = data["term"], data.get("commit", 0), data.get("last_index", 0)
        mine = own[node]
        # Up to its commit index the leader's log is what it committed itself: that differs
        # from a required entry only where nodes committed different entries at one index.
        for index in sorted(conflicted):
            if index <= commit and index in mine:
                check(node, term, index, mine[index])
        # Above it, the traced hashes; beyond its last index, nothing.
        upper = _leader_log(data)
        for index in range(commit + 1, top + 1):
            if index in required:
                check(node, term, index, upper[index][1] if index in upper and index <= last else None)
    if bad:
        b = bad[0]
        has = "nothing" if b["leader_has"] is None else b["leader_has"]
        return Verdict(name, VIOLATED,
                       f"{b['leader']} became leader of term {b['term']} without index {b['index']} "
                       f"({b['committed']}, committed by term {b['committed_in']}): its log has {has}",
                       {"violations": bad})
    return Verdict(name, HOLDS, f"{leaders} elections, each leader held every earlier commit",
                   {"elections": leaders})


PROTOCOLS = ("raft",)     # whose checks these are (lab/checks/registry.py)
CHECKS: dict[str, Checker] = {
    "election_safety": election_safety,
    "log_matching": log_matching,
    "leader_completeness": leader_completeness,
    "state_machine_safety": state_machine_safety,
}
# The trace lines (``ev``) each check reads: what a trace level must keep for it (registry.py).
TRACE_LINES = dict.fromkeys(CHECKS, frozenset({"state", "commit"}))
