"""Symbolic fault targets, resolved at the moment a fault applies.

A scenario says *what kind* of node to hit (``crash: leader``) because it
cannot know *which* node that will be. :class:`TargetResolver` answers that
question against the running backend, with the plan's own random stream so
that the choice replays from the seed.

Target specs (a string, or a list of them, whose results are united):

``n3``          that node
``leader``      the up node reporting ``role: leader`` with the highest term
``primary``     the up node reporting ``role: primary`` (PBFT, primary-backup)
``coordinator`` the node whose spec in the scenario has ``role: coordinator`` (or lists it)
``random``      one node drawn uniformly (from the plan's rng, not the workload's)
``minority``    a random minority, ``(n-1)//2`` nodes, holding the leader when there is one
``majority``    the rest: every node not in ``minority``
``crashed``     the nodes this plan crashed and has not restarted
``paused``      the nodes this plan paused and has not resumed
``all``         every node
``rest``        the nodes the step's other targets leave out: a partition group
                (``partition: [leader, rest]``) or a link fault's ``from``/``to``

``minority`` and ``majority`` are drawn once per fault step, so that
``partition: [minority, majority]`` splits the cluster cleanly, and the
leader's side is the minority: that is the partition that forces an election
and leaves an old leader that still believes it leads.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random
from typing import Any

from lab.backends.base import Backend
from lab.errors import ConfigError
from lab.scenario import Scenario

REST = "rest"
SYMBOLS = ("leader", "primary", "coordinator", "random", "minority", "majority",
           "crashed", "paused", "all", REST)
REST_USE = ("rest means the nodes the step's other targets leave out: use it as a partition "
            "group or as a link fault's from or to")


class TargetResolver:
    """Resolves target specs for one fault plan. ``crashed``/``paused`` are the plan's own sets."""

    def __init__(self, scenario: Scenario, backend: Backend, rng: Random) -> None:
        self.scenario = scenario
        self.backend = backend
        self.rng = rng
        self.crashed: set[str] = set()
        self.paused: set[str] = set()
        self._split: tuple[list[str], list[str]] | None = None

    @property
    def names(self) -> list[str]:
        return self.scenario.node_names

    def new_step(self) -> None:
        """Forget the minority/majority split: each fault step draws its own."""
        self._split = None

    # -- roles ---------------------------------------------------------------
    def _up(self) -> list[str]:
        return [n for n in self.names if n not in self.crashed and n not in self.paused]

    def by_status_role(self, role: str) -> str | None:
        """The up node that reports ``role`` with the highest term (ties: first in the scenario)."""
        best: tuple[int, str] | None = None
        for name in self._up():
            st = self.backend.status(name)
            if not st or st.get("role") != role:
                continue
            term = st.get("term") or st.get("view") or 0
            if best is None or term > best[0]:
                best = (term, name)
        return best[1] if best else None

    def leader(self) -> str | None:
        return self.by_status_role("leader")

    def coordinator(self) -> str | None:
        for n in self.scenario.nodes:
            if "coordinator" in n.roles:
                return n.name
        return None

    def split(self) -> tuple[list[str], list[str]]:
        """(minority, majority) for the current step; the leader, if any, is in the minority."""
        if self._split is None:
            names = self.names
            size = (len(names) - 1) // 2
            leader = self.leader() or self.by_status_role("primary")
            minority: list[str] = []
            if leader is not None and size > 0:
                minority.append(leader)
            rest = [n for n in names if n not in minority]
            minority += self.rng.sample(rest, size - len(minority))
            chosen = set(minority)
            self._split = ([n for n in names if n in chosen], [n for n in names if n not in chosen])
        return self._split

    # -- resolution ------------------------------------------------------------
    def resolve(self, spec: Any, *, line: int | None = None) -> list[str]:
        """The node names ``spec`` means right now, in scenario order. May be empty
        (no leader during an election, nothing crashed yet)."""
        specs: Iterable[Any] = spec if isinstance(spec, (list, tuple)) else [spec]
        chosen: set[str] = set()
        for s in specs:
            chosen.update(self._resolve_one(s, line))
        return [n for n in self.names if n in chosen]

    def _resolve_one(self, spec: Any, line: int | None) -> list[str]:
        if not isinstance(spec, str):
            raise ConfigError(f"a fault target must be a node name or one of {', '.join(SYMBOLS)}, "
                              f"got {spec!r}", path=self.scenario.source, line=line)
        if spec in self.names:
            return [spec]
        if spec == "all":
            return list(self.names)
        if spec == "leader":
            return _opt(self.leader())
        if spec == "primary":
            return _opt(self.by_status_role("primary"))
        if spec == "coordinator":
            return _opt(self.coordinator())
        if spec == "random":
            return [self.rng.choice(self.names)]
        if spec == "minority":
            return self.split()[0]
        if spec == "majority":
            return self.split()[1]
        if spec == "crashed":
            return sorted(self.crashed)
        if spec == "paused":
            return sorted(self.paused)
        if spec == REST:
            raise ConfigError(REST_USE, path=self.scenario.source, line=line)
        raise ConfigError(f"unknown fault target {spec!r} (nodes: {', '.join(self.names)}; "
                          f"symbols: {', '.join(SYMBOLS)})", path=self.scenario.source, line=line)

    def resolve_groups(self, args: Any, *, line: int | None = None) -> list[list[str]]:
        """Partition groups: each item of the list is a group, given as a target spec
        (``n1``, ``leader``, ``minority``) or a list of them. A single group -- or a bare
        spec, ``partition: leader`` -- is set against the rest of the nodes."""
        if isinstance(args, str):
            args = [args]
        if not isinstance(args, (list, tuple)) or not args:
            raise ConfigError(f"partition wants a list of groups, got {args!r}",
                              path=self.scenario.source, line=line)
        if list(args).count(REST) > 1:
            raise ConfigError("a partition has at most one rest group", path=self.scenario.source,
                              line=line)
        groups = [[] if g == REST else self.resolve(g, line=line) for g in args]
        if REST not in args and len(groups) == 1:
            args, groups = [*args, REST], [*groups, []]
        if REST in args:
            named = {n for g in groups for n in g}
            groups[list(args).index(REST)] = self.rest(named)
        return groups

    def rest(self, named: Iterable[str]) -> list[str]:
        """Every node not in ``named``, in scenario order."""
        taken = set(named)
        return [n for n in self.names if n not in taken]


def _opt(name: str | None) -> list[str]:
    return [name] if name is not None else []


def partition_cuts(groups: list[list[str]], *, oneway: bool = False) -> frozenset[tuple[str, str]]:
    """The directed cuts a partition makes.

    ``a -> b`` is cut when a and b both appear in some group and no group holds
    both (groups may intersect: ``[[n1, n2, n3], [n3, n4, n5]]`` leaves n3 as a
    bridge). ``oneway`` cuts only from ``groups[0]`` to the nodes of the other groups
    that ``groups[0]`` does not share a group with.
    """
    together: set[tuple[str, str]] = set()
    for g in groups:
        for a in g:
            for b in g:
                together.add((a, b))
    if oneway:
        srcs = list(groups[0]) if groups else []
        dsts = [n for g in groups[1:] for n in g]
    else:
        srcs = dsts = [n for g in groups for n in g]
    return frozenset((a, b) for a in srcs for b in dsts if a != b and (a, b) not in together)
