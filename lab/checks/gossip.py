"""Gossip's properties, checked on the history, the final reads and the trace (lab/spread.py).

* eventual_delivery: after the heal and the settle, every live node holds every value a client
  saw acknowledged (and nobody tried to delete): Maelstrom's lost count is 0.
* convergence: the live nodes' states are equal after the settle: the values, the deaths, the
  schema, and each node's view of every endpoint's generation, load and schema.
* no_resurrection: a deleted value stays deleted: no node adds a value again after it deleted
  it, and no live node's final read shows a value whose delete was acknowledged.

A live node is one that answered its final read (final.json ``reads``).
"""

from __future__ import annotations

import json
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, RunData, Verdict
from lab.spread import arrivals, facts, missing

SHOW = 5     # examples listed in a verdict


def _examples(items: dict[Any, list[str]]) -> str:
    shown = [f"{v} (on {', '.join(ns)})" for v, ns in list(items.items())[:SHOW]]
    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return "; ".join(shown) + more


def _unanswered(run: RunData) -> str:
    nodes = (run.final or {}).get("unanswered") or []
    return f"; {', '.join(map(str, nodes))} did not answer their final read" if nodes else ""


def eventual_delivery(run: RunData) -> Verdict:
    name = "eventual_delivery"
    f = facts(run.history, run.final)
    if f.finals is None:
        return Verdict(name, UNKNOWN, "no final reads (final.json has no reads)")
    settled = f.settled()
    lost = missing(f)
    if lost:
        return Verdict(name, VIOLATED,
                       f"{len(lost)} of {len(settled)} acknowledged values are missing on live nodes: "
                       f"{_examples(lost)}" + _unanswered(run),
                       {"lost": len(lost), "acknowledged": len(settled),
                        "examples": {str(v): ns for v, ns in list(lost.items())[:SHOW]}})
    return Verdict(name, HOLDS, f"all {len(settled)} acknowledged values are on all "
                   f"{len(f.finals)} live nodes" + _unanswered(run),
                   {"lost": 0, "acknowledged": len(settled), "live": len(f.finals)})


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two nodes' states, in words."""
    out = []
    for key in ("values", "dead"):
        x, y = set(map(json.dumps, a.get(key) or [])), set(map(json.dumps, b.get(key) or []))
        if x != y:
            out.append(f"{key}: {len(x - y)} only on the first, {len(y - x)} only on the second")
    if a.get("schema") != b.get("schema"):
        out.append(f"schema {a.get('schema')} vs {b.get('schema')}")
    ea, eb = a.get("endpoints") or {}, b.get("endpoints") or {}
    differ = sorted(o for o in set(ea) | set(eb) if ea.get(o) != eb.get(o))
    if differ:
        out.append(f"endpoint views of {', '.join(differ[:SHOW])}" + ("..." if len(differ) > SHOW else ""))
    return out


def _nodes(k: int) -> str:
    return "1 node" if k == 1 else f"{k} nodes"


def convergence(run: RunData) -> Verdict:
    name = "convergence"
    final = run.final or {}
    states = {n: s for n, s in (final.get("states") or {}).items() if isinstance(s, dict)}
    if not states:
        reads = final.get("reads") or {}
        if not reads:
            return Verdict(name, UNKNOWN, "no final states or reads (final.json)")
        states = {n: {"values": v} for n, v in reads.items()}
    groups: dict[str, list[str]] = {}
    for node in sorted(states):
        groups.setdefault(json.dumps(states[node], sort_keys=True), []).append(node)
    if len(groups) == 1:
        return Verdict(name, HOLDS, f"the {len(states)} live nodes hold the same state" + _unanswered(run),
                       {"live": len(states)})
    ordered = sorted(groups.values(), key=len, reverse=True)
    first, second = ordered[0], ordered[1]
    why = "; ".join(_differences(states[first[0]], states[second[0]]))
    return Verdict(name, VIOLATED,
                   f"{len(groups)} different states among {len(states)} live nodes: "
                   f"{first[0]} ({_nodes(len(first))}) vs {second[0]} ({_nodes(len(second))}): {why}",
                   {"groups": ordered[:SHOW], "count": len(groups)})


def no_resurrection(run: RunData) -> Verdict:
    name = "no_resurrection"
    f = facts(run.history, run.final)
    a = arrivals(run.trace)
    back: list[dict[str, Any]] = []
    gone: dict[tuple[str, Any], float] = {}
    for ts, node, op, value in a.events:
        if op == "del":
            gone.setdefault((node, value), ts)
        elif (node, value) in gone:
            back.append({"node": node, "value": value, "deleted": gone.pop((node, value)), "back": ts})
    shown: dict[Any, list[str]] = {}
    if f.finals is not None:
        for v in f.deleted:
            nodes = [n for n in sorted(f.finals) if v in f.finals[n]]
            if nodes:
                shown[v] = nodes
    deletions = len(f.deleted) + sum(1 for _, _, op, _ in a.events if op == "del")
    if back or shown:
        parts = []
        if back:
            b = back[0]
            parts.append(f"{len(back)} values came back after a node deleted them, first {b['value']} "
                         f"on {b['node']} (deleted at {b['deleted']:g}s, back at {b['back']:g}s)")
        if shown:
            parts.append(f"{len(shown)} values whose delete was acknowledged are in final reads: "
                         f"{_examples(shown)}")
        return Verdict(name, VIOLATED, "; ".join(parts),
                       {"came_back": back[:SHOW], "in_final_reads": {str(v): ns for v, ns in
                                                                    list(shown.items())[:SHOW]}})
    if not deletions:
        return Verdict(name, HOLDS, "nothing was deleted", {"deletions": 0})
    return Verdict(name, HOLDS, f"{len(f.deleted)} acknowledged deletes; no value came back",
                   {"deletions": deletions})


PROTOCOLS = ("gossip",)     # whose checks these are (lab/checks/registry.py)

TRACE_LINES = {"eventual_delivery": frozenset(), "convergence": frozenset(),   # history, final.json
               "no_resurrection": frozenset({"apply"})}
CHECKS: dict[str, Checker] = {
    "eventual_delivery": eventual_delivery,
    "convergence": convergence,
    "no_resurrection": no_resurrection,
}
