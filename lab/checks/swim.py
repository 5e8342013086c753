"""SWIM's two properties (Das, Gupta and Motivala, DSN 2002), checked on the trace alone.

The core traces every change of its view as ``state`` with ``{member, status,
inc, by}`` (docs/swim.md); the orchestrator's ``fault`` events say when each
node was crashed, paused or cut off. From those two streams:

* completeness: every crashed member is declared dead by every live member
  within ``bound`` of the crash, and stays dead in their views until it
  restarts. Judged for each crash that lasted at least ``bound``; a member
  counts as live for it when nothing crashed, paused or cut it off during
  those ``bound`` seconds.
* accuracy: no live, responsive member is declared dead. A declaration that
  member M (at incarnation k) is dead is *false* when k belongs to M's
  current life and M was neither crashed, paused nor cut off by a partition
  at any moment of the ``window`` before it: M had that long to hear the
  accusation and refute it. By default ``window`` is the protocol's own base
  suspicion timeout, the least time memberlist ever gives a suspect.

Both bounds default to figures computed from the scenario's config and node
count (printed in the verdict), and either can be set in the scenario:
``checks: [{name: completeness, bound: 15s}, {name: accuracy, window: 4s}]``.

The same reading gives the membership workload its figures (detection time,
false positives): :func:`analyse`.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.checks.base import HOLDS, UNKNOWN, VIOLATED, Checker, Params, RunData, Verdict
from lab.targets import partition_cuts
from nodes.protocols.core import build_config
from nodes.protocols.swim import DEAD, Swim, SwimConfig, retransmit_limit, suspicion_timeout

SHOW = 5

PARAMS: Params = {
    "completeness": {"bound": ("s", "time from a crash by which every live member must hold the "
                               "crashed one dead (default: the longest probe window + the longest "
                               "suspicion timeout + one full round of retransmissions)")},
    "accuracy": {"window": ("s", "a member responsive for this long before it is declared dead is "
                            "a false positive (default: the base suspicion timeout, "
                            "suspicion_mult * max(1, log10 n) * probe_interval)")},
}


Interval = tuple[float, float]


@dataclass
class Declaration:
    ts: float
    node: str           # who declared
    member: str         # whom
    inc: int
    kind: str = ""      # false | paused | partitioned | crashed | stale


@dataclass
class Crash:
    member: str
    at: float
    until: float                                   # restart, or +inf
    first_dead: dict[str, float | None] = field(default_factory=dict)   # live member -> when
    resurrected: dict[str, float] = field(default_factory=dict)         # live member -> when


def _is_link(target: Any) -> bool:
    return isinstance(target, list) and len(target) == 2 and all(isinstance(t, str) for t in target)


def _names(scenario: dict[str, Any]) -> list[str]:
    nodes = scenario.get("nodes")
    if isinstance(nodes, int):
        return [f"n{i}" for i in range(1, nodes + 1)]
    return [n["name"] if isinstance(n, dict) else str(n) for n in nodes or []]


def config_of(raw: dict[str, Any] | None) -> SwimConfig:
    cfg = build_config(Swim, raw or {})
    assert isinstance(cfg, SwimConfig)
    return cfg


def default_window(cfg: SwimConfig, n: int) -> float:
    """The base suspicion timeout: the least time a suspect is ever given to refute."""
    return suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)


def default_bound(cfg: SwimConfig, n: int) -> float:
    """Longest probe window + longest suspicion timeout + one round of retransmissions."""
    return round(cfg.probe_interval * cfg.awareness_max_multiplier
                 + cfg.suspicion_max_timeout_mult * default_window(cfg, n)
                 + retransmit_limit(cfg.retransmit_mult, n) * cfg.gossip_interval, 3)


class SwimRun:
    """A SWIM run's trace, read once: views, declarations, and when each node was reachable."""

    def __init__(self, names: list[str], trace: list[dict[str, Any]]) -> None:
        self.names = names
        self.n = len(self.names)
        self.end = max((e.get("ts", 0.0) for e in trace), default=0.0)
        self.down: dict[str, list[Interval]] = defaultdict(list)
        self.paused: dict[str, list[Interval]] = defaultdict(list)
        self.cut: dict[str, list[Interval]] = defaultdict(list)
        self.slow: dict[str, list[Interval]] = defaultdict(list)
        # (node, member) -> [(ts, status, inc)] in trace order; lives: member -> [(ts, inc)]
        self.views: dict[tuple[str, str], list[tuple[float, str, int]]] = defaultdict(list)
        self.lives: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.declarations: list[Declaration] = []
        self.events = 0
        self._read_faults(trace)
        self._read_states(trace)
        self._end_downs_at_rebirth()

    # -- reading ----------------------------------------------------------------------------
    def _read_faults(self, trace: list[dict[str, Any]]) -> None:
        opened: dict[tuple[str, str], float] = {}       # (kind, node) -> since
        partitions: list[tuple[Any, frozenset[tuple[str, str]]]] = []
        touched: set[str] = set()
        delayed: set[tuple[str, str]] = set()          # directed links with a delay fault on
        slowed: set[str] = set()

        def open_(kind: str, node: str, ts: float) -> None:
            opened.setdefault((kind, node), ts)

        def close(kind: str, node: str, ts: float) -> None:
            since = opened.pop((kind, node), None)
            if since is not None:
                getattr(self, kind)[node].append((since, ts))

        for e in trace:
            if e.get("ev") != "fault" or e.get("node") != "lab":
                continue
            d = e.get("data") or {}
            action, target, phase, ts = d.get("action"), d.get("target"), d.get("phase"), e["ts"]
            if action == "crash":
                open_("down", target, ts)
            elif action == "restart":
                close("down", target, ts)
            elif action == "pause":
                open_("paused", target, ts)
            elif action == "resume":
                close("paused", target, ts)
            elif action == "partition" and phase == "apply" and isinstance(target, list):
                partitions.append((target, partition_cuts(target, oneway=bool(d.get("oneway")))))
            elif action == "partition" and phase == "revert":
                for i, (groups, _) in enumerate(partitions):
                    if groups == target:
                        del partitions[i]
                        break
            elif action == "heal" and target in ("all", "partition", "network"):
                partitions.clear()
            elif _is_link(target) and (action == "delay" or phase == "revert"):
                (delayed.add if phase == "apply" else delayed.discard)((target[0], target[1]))
            else:
                continue
            now_slowed = self._slow_nodes(delayed)
            for node in sorted(now_slowed - slowed):
                open_("slow", node, ts)
            for node in sorted(slowed - now_slowed):
                close("slow", node, ts)
            slowed = now_slowed
            now_touched = {n for _, cuts in partitions for cut in cuts for n in cut}
            for node in sorted(now_touched - touched):
                open_("cut", node, ts)
            for node in sorted(touched - now_touched):
                close("cut", node, ts)
            touched = now_touched
        for (kind, node), since in sorted(opened.items()):
            getattr(self, kind)[node].append((since, float("inf")))

    def _slow_nodes(self, delayed: set[tuple[str, str]]) -> set[str]:
        """Nodes with at least half their inbound or half their outbound links delayed: they
        hear, or are heard, late (a starved CPU, a blocked receive loop)."""
        half = max(1, (self.n - 1 + 1) // 2)
        inbound: dict[str, int] = defaultdict(int)
        outbound: dict[str, int] = defaultdict(int)
        for src, dst in delayed:
            outbound[src] += 1
            inbound[dst] += 1
        return {n for n in self.names if inbound[n] >= half or outbound[n] >= half}

    def _read_states(self, trace: list[dict[str, Any]]) -> None:
        for e in trace:
            if e.get("ev") != "state" or e.get("node") == "lab":
                continue
            d = e.get("data") or {}
            member, status, inc = d.get("member"), d.get("status"), d.get("inc")
            if member is None:
                continue                        # an awareness change
            self.events += 1
            node, ts = e["node"], e["ts"]
            if node == member:
                if not d.get("refute"):
                    self.lives[member].append((ts, inc))
                continue
            self.views[(node, member)].append((ts, status, inc))
            if status == DEAD:
                self.declarations.append(Declaration(ts, node, member, inc))

    def _end_downs_at_rebirth(self) -> None:
        """A node is back when its new life starts (its first trace line), which on a real
        runtime comes before the orchestrator's restart event is stamped."""
        for member, downs in self.down.items():
            starts = [t for t, _ in self.lives.get(member, ())]
            self.down[member] = [(a, min([b, *(t for t in starts if a < t < b)])) for a, b in downs]

    # -- questions --------------------------------------------------------------------------
    @staticmethod
    def _hits(intervals: Iterable[Interval], lo: float, hi: float) -> bool:
        """Whether any interval meets [lo, hi]."""
        return any(a <= hi and b >= lo for a, b in intervals)

    def unresponsive(self, node: str, lo: float, hi: float) -> str | None:
        """Why ``node`` could not answer at some moment of [lo, hi], or None."""
        for kind, table in (("crashed", self.down), ("paused", self.paused),
                            ("partitioned", self.cut), ("slow", self.slow)):
            if self._hits(table.get(node, ()), lo, hi):
                return kind
        return None

    def life_inc(self, member: str, ts: float) -> int:
        """The incarnation ``member`` started its life with, as of ``ts``."""
        lives = self.lives.get(member, [])
        i = bisect.bisect_right([t for t, _ in lives], ts)
        return lives[i - 1][1] if i else 0

    def classify(self, window: float) -> list[Declaration]:
        for d in self.declarations:
            if d.inc < self.life_inc(d.member, d.ts):
                d.kind = "stale"
            else:
                d.kind = self.unresponsive(d.member, d.ts - window, d.ts) or "false"
        return self.declarations

    def view_at(self, node: str, member: str, ts: float) -> str:
        status = "alive"
        for t, s, _ in self.views.get((node, member), ()):
            if t > ts:
                break
            status = s
        return status

    def crashes(self) -> list[Crash]:
        """Every crash, with when each member live through it first held the crashed one dead."""
        out = []
        for member in self.names:
            for at, until in self.down.get(member, ()):
                c = Crash(member, at, until)
                stop = min(until, self.end)
                for node in self.names:
                    if node == member or self.unresponsive(node, at, stop):
                        continue
                    c.first_dead[node] = None
                    if self.view_at(node, member, at) == DEAD:
                        c.first_dead[node] = at
                    for t, s, _ in self.views.get((node, member), ()):
                        if t < at or t > stop:
                            continue
                        if s == DEAD and c.first_dead[node] is None:
                            c.first_dead[node] = t
                        elif s != DEAD and c.first_dead[node] is not None and t < until:
                            c.resurrected.setdefault(node, t)
                out.append(c)
        return out


def analyse(names: list[str], config: dict[str, Any] | None,
            trace: list[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json figures: ``detection_s`` (crash to dead in every live view) and false
    positives (members declared dead though responsive; paused members counted apart)."""
    run = SwimRun(names, trace)
    window = default_window(config_of(config), run.n)
    times = []
    undetected = 0
    for c in run.crashes():
        firsts = list(c.first_dead.values())
        if firsts and all(t is not None for t in firsts):
            times.append(max(t for t in firsts if t is not None) - c.at)
        else:
            undetected += 1
    episodes: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for d in run.classify(window):
        episodes[d.kind].add((d.member, d.inc))
    times.sort()
    return {"detection_s": {"p50": round(times[(len(times) - 1) // 2], 3) if times else None,
                            "max": round(times[-1], 3) if times else None,
                            "crashes": len(times) + undetected, "undetected": undetected},
            "false_positives": len(episodes["false"]),
            "false_positives_paused": len(episodes["paused"]),
            "false_positives_slow": len(episodes["slow"])}


def _swim_check(name: str, param: str, default: Callable[[SwimConfig, int], float]
                ) -> Callable[[Callable[[str, SwimRun, float], Verdict]], Checker]:
    """A checker from ``fn(name, run read once, its parameter)``: the parameter as the scenario
    gave it, else its default for the config; no SWIM events at all decide nothing."""
    def wrap(fn: Callable[[str, SwimRun, float], Verdict]) -> Checker:
        def check(run: RunData) -> Verdict:
            swim = SwimRun(_names(run.scenario), run.trace)
            if not swim.events:
                return Verdict(name, UNKNOWN, "no SWIM membership events in the trace")
            return fn(name, swim, run.params.get(param, default(config_of(run.scenario.get("config")),
                                                                swim.n)))
        check.__name__ = check.__qualname__ = fn.__name__
        check.__doc__ = fn.__doc__
        return check
    return wrap


@_swim_check("completeness", "bound", default_bound)
def completeness(name: str, swim: SwimRun, bound: float) -> Verdict:
    judged = 0
    bad: list[dict[str, Any]] = []
    slowest = 0.0
    for c in swim.crashes():
        if min(c.until, swim.end) - c.at < bound:
            continue            # back (or the run over) before the bound: nothing to require
        judged += 1
        for node, first in sorted(c.first_dead.items()):
            late = first is None or first - c.at > bound
            back = c.resurrected.get(node)
            if not late and first is not None:
                slowest = max(slowest, first - c.at)
            if (late or back is not None) and len(bad) < SHOW:
                bad.append({"member": c.member, "crashed_at": c.at, "node": node,
                            "declared_at": first, "alive_again_at": back})
    if bad:
        b = bad[0]
        if b["alive_again_at"] is not None:
            what = (f"{b['node']} held crashed {b['member']} dead at {b['declared_at']:.3f}s, "
                    f"then alive again at {b['alive_again_at']:.3f}s while it was still down")
        elif b["declared_at"] is None:
            what = (f"{b['node']} never declared {b['member']} dead (crashed at "
                    f"{b['crashed_at']:.3f}s, bound {bound:.3f}s)")
        else:
            what = (f"{b['node']} declared {b['member']} dead {b['declared_at'] - b['crashed_at']:.3f}s "
                    f"after its crash, beyond the bound of {bound:.3f}s")
        return Verdict(name, VIOLATED, what, {"bound_s": bound, "violations": bad})
    if not judged:
        return Verdict(name, UNKNOWN, f"no crash lasted the bound of {bound:.3f}s: nothing to judge",
                       {"bound_s": bound})
    return Verdict(name, HOLDS, f"{judged} crash(es): every live member held the crashed one dead "
                   f"within {slowest:.3f}s (bound {bound:.3f}s) until it restarted",
                   {"bound_s": bound, "crashes": judged, "slowest_s": round(slowest, 3)})


@_swim_check("accuracy", "window", default_window)
def accuracy(name: str, swim: SwimRun, window: float) -> Verdict:
    declared = swim.classify(window)
    false = [d for d in declared if d.kind == "false"]
    counts = {k: sum(1 for d in declared if d.kind == k)
              for k in ("crashed", "paused", "partitioned", "slow", "stale", "false")}
    if false:
        d = false[0]
        return Verdict(name, VIOLATED,
                       f"{d.node} declared {d.member} dead at {d.ts:.3f}s (incarnation {d.inc}) though "
                       f"{d.member} was up and reachable for the whole {window:.3f}s before "
                       f"({len(false)} such declaration(s))",
                       {"window_s": window, "counts": counts,
                        "violations": [vars(x) for x in false[:SHOW]]})
    return Verdict(name, HOLDS, f"{len(declared)} declaration(s) of death, none of a member "
                   f"responsive for the {window:.3f}s before it", {"window_s": window, "counts": counts})


PROTOCOLS = ("swim",)     # whose checks these are (lab/checks/registry.py)
CHECKS: dict[str, Checker] = {"completeness": completeness, "accuracy": accuracy}
TRACE_LINES = dict.fromkeys(CHECKS, frozenset({"state", "fault"}))
