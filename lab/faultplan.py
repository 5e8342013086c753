"""Turning a scenario's fault timeline into backend calls (rule 4 of DESIGN.md).

The plan is the one owner of the lab's fault state: the set of cut links, the
links whose parameters differ from the scenario's, the nodes it crashed and
the nodes it paused. Backends take network faults as *state* (``set_cuts``,
``set_link``), so every apply and every revert is a plain install of the new
state, and the plan can always put the lab back the way the scenario made it.

Every apply and revert appends a ``fault`` trace event (node ``lab``, lc 0)
carrying the mechanism the backend reported.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

from lab.backends.base import Backend, Cut
from lab.errors import ConfigError
from lab.scenario import FaultStep, LinkParams, Scenario
from lab.targets import REST, TargetResolver, partition_cuts
from nodes.units import parse_bitrate, parse_duration, parse_percent

NODE_FAULTS = {"crash": "restart", "pause": "resume", "restart": None, "resume": None}
LINK_FAULTS = ("delay", "loss", "duplicate", "reorder", "rate")
# How each LinkParams field is written in YAML, so link faults accept "100ms" and "5%".
_LINK_FIELDS: dict[str, Callable[[Any], Any]] = {
    "delay": parse_duration, "jitter": parse_duration, "loss": parse_percent,
    "duplicate": parse_percent, "reorder": parse_percent, "rate": parse_bitrate,
    "distribution": str,
}
_LINK_TARGET_KEYS = ("from", "to", "nodes", "target")
# What a node fault is made with when the backend does not say (its methods return None).
_NODE_MECHANISM = {"sim": "sim", "local": "signal", "docker": "docker"}


class FaultPlan:
    """Applies the steps of ``scenario.faults`` to ``backend`` and reverts them."""

    def __init__(self, scenario: Scenario, backend: Backend, rng: Random) -> None:
        self.scenario = scenario
        self.backend = backend
        self.targets = TargetResolver(scenario, backend, rng)
        self.events: list[dict[str, Any]] = []
        self.cuts: dict[int, frozenset[Cut]] = {}          # step id -> the cuts it made
        self._groups: dict[int, list[list[str]]] = {}       # step id -> its resolved groups
        self.links: dict[tuple[str, str], LinkParams] = {}  # links that differ from the scenario
        self._link_steps: dict[int, list[tuple[str, str]]] = {}
        self._crashed_by: dict[int, list[str]] = {}
        self._paused_by: dict[int, list[str]] = {}
        self.closed = False
        self._next_id = 0

    # -- scheduling ------------------------------------------------------------
    def schedule(self, t0: float, until: float | None = None) -> None:
        """``call_at`` every step at ``t0 + step.at``; steps at or after ``until`` (the end of
        the workload, relative to t0) are left out: the runner heals everything there."""
        for step in self.scenario.faults:
            if until is not None and step.at >= until:
                continue
            self.backend.call_at(t0 + step.at, lambda s=step: self.apply(s))

    @property
    def crashed(self) -> set[str]:
        return self.targets.crashed

    @property
    def paused(self) -> set[str]:
        return self.targets.paused

    def active(self) -> list[str]:
        """Short words for the faults in force, for the progress line."""
        out = []
        if self.cuts:
            out.append(f"{len(self._all_cuts())} cut links")
        if self.links:
            out.append(f"{len(self.links)} shaped links")
        out += [f"{n} crashed" for n in sorted(self.crashed)]
        out += [f"{n} paused" for n in sorted(self.paused)]
        return out

    # -- applying ------------------------------------------------------------------
    def apply(self, step: FaultStep) -> None:
        """Resolve ``step``'s targets now and apply it; schedule its revert if it has ``for:``."""
        if self.closed:
            return
        self.targets.new_step()
        sid = self._next_id
        self._next_id += 1
        action = step.action
        if action == "partition":
            self._apply_partition(sid, step)
        elif action == "heal":
            self._apply_heal(step)
        elif action in NODE_FAULTS:
            self._apply_node(sid, step)
        elif action in LINK_FAULTS:
            self._apply_link(sid, step)
        else:
            raise ConfigError(f"unknown fault {action!r}", path=self.scenario.source, line=step.line)
        if step.duration is not None and (action in ("partition", "crash", "pause")
                                          or action in LINK_FAULTS):
            t = self.backend.now() + step.duration
            self.backend.call_at(t, lambda: self.revert(sid, step))

    def revert(self, sid: int, step: FaultStep) -> None:
        """Undo one step (its ``for:`` ran out)."""
        if self.closed:
            return
        if step.action == "partition" and sid in self.cuts:
            cuts = self.cuts.pop(sid)
            self._emit("partition", self._groups.pop(sid), "revert",
                       self.backend.set_cuts(self._all_cuts()), cuts=len(cuts))
        elif step.action == "crash":
            self._restart([n for n in self._crashed_by.pop(sid, []) if n in self.crashed])
        elif step.action == "pause":
            self._resume([n for n in self._paused_by.pop(sid, []) if n in self.paused])
        elif step.action in LINK_FAULTS and sid in self._link_steps:
            self._reset_links(step.action, self._link_steps.pop(sid))

    def revert_all(self, close: bool = True) -> bool:
        """Heal cuts, reset links, resume paused and restart crashed nodes; whether any fault
        was in force. With ``close``, then ignore anything still scheduled (a ``for:`` running
        past the workload's end); without, the plan takes further faults (a Lab's final reads)."""
        was = bool(self.cuts or self.links or self.paused or self.crashed)
        if self.cuts:
            cuts = self._all_cuts()
            self.cuts.clear()
            self._groups.clear()
            self._emit("heal", "all", "revert", self.backend.set_cuts(frozenset()), cuts=len(cuts))
        if self.links:
            self._reset_links("heal", sorted(self.links))
        self._resume(sorted(self.paused))
        self._restart(sorted(self.crashed))
        self._link_steps.clear()
        self.closed = close
        return was

    # -- the kinds of fault ---------------------------------------------------------
    def _apply_partition(self, sid: int, step: FaultStep) -> None:
        groups = self.targets.resolve_groups(step.args, line=step.line)
        cuts = partition_cuts(groups, oneway=step.oneway)
        self.cuts[sid] = cuts
        self._groups[sid] = groups
        mech = self.backend.set_cuts(self._all_cuts())
        extra: dict[str, Any] = {"oneway": step.oneway, "cuts": len(cuts)}
        if not cuts:
            # e.g. `partition: leader` with no leader: nothing to cut; say so in the trace.
            extra["skipped"] = f"{step.args!r} made no cut"
        self._emit("partition", groups, "apply", mech, **extra)

    def _apply_heal(self, step: FaultStep) -> None:
        what = step.args if isinstance(step.args, str) else "all"
        if what not in ("all", "partition", "network", "links"):
            raise ConfigError(f"heal wants all, partition or links, got {step.args!r}",
                              path=self.scenario.source, line=step.line)
        if what in ("all", "partition", "network"):
            cuts = self._all_cuts()
            self.cuts.clear()
            self._groups.clear()
            self._emit("heal", what, "apply", self.backend.set_cuts(frozenset()), cuts=len(cuts))
        if what in ("all", "links", "network") and self.links:
            self._reset_links("heal", sorted(self.links))
            self._link_steps.clear()

    def _apply_node(self, sid: int, step: FaultStep) -> None:
        nodes = self.targets.resolve(step.args, line=step.line)
        if step.action == "crash":
            nodes = [n for n in nodes if n not in self.crashed]
            self._crashed_by[sid] = nodes
            self._node_call("crash", nodes, "apply")
            self.crashed.update(nodes)
        elif step.action == "pause":
            nodes = [n for n in nodes if n not in self.paused and n not in self.crashed]
            self._paused_by[sid] = nodes
            self._node_call("pause", nodes, "apply")
            self.paused.update(nodes)
        elif step.action == "restart":
            self._restart([n for n in nodes if n in self.crashed], phase="apply")
        else:
            self._resume([n for n in nodes if n in self.paused], phase="apply")
        if not nodes:
            # The target meant nobody right now (no leader mid-election): say so in the trace.
            self._emit(step.action, [], "apply", "none", skipped=f"{step.args!r} matched no node")

    def _apply_link(self, sid: int, step: FaultStep) -> None:
        links, changes = self._link_args(step)
        for src, dst in links:
            params = self.links.get((src, dst), self.scenario.network.link(src, dst)).merged(**changes)
            self.links[(src, dst)] = params
            mech = self.backend.set_link(src, dst, params)
            self._emit(step.action, [src, dst], "apply", mech,
                       params={k: v for k, v in params.__dict__.items() if v is not None})
        self._link_steps[sid] = links

    # -- helpers ----------------------------------------------------------------
    def _restart(self, nodes: list[str], phase: str = "revert") -> None:
        for n in nodes:
            self.crashed.discard(n)
        self._node_call("restart", nodes, phase)

    def _resume(self, nodes: list[str], phase: str = "revert") -> None:
        for n in nodes:
            self.paused.discard(n)
        self._node_call("resume", nodes, phase)

    def _node_call(self, action: str, nodes: list[str], phase: str) -> None:
        for n in nodes:
            mech = getattr(self.backend, action)(n)
            if not isinstance(mech, str):
                mech = _NODE_MECHANISM.get(self.backend.kind, self.backend.kind)
            self._emit(action, n, phase, mech)

    def _reset_links(self, action: str, links: list[tuple[str, str]]) -> None:
        for src, dst in links:
            if self.links.pop((src, dst), None) is None:
                continue
            mech = self.backend.set_link(src, dst, self.scenario.network.link(src, dst))
            self._emit(action, [src, dst], "revert", mech)

    def _link_args(self, step: FaultStep) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """(directed links, LinkParams changes) of a link fault.

        ``{at: 5s, delay: 100ms}`` shapes every link; a dict picks links with
        ``from``/``to`` (both directions unless ``oneway``) or ``nodes``/``target``
        (every link into or out of those nodes) and sets any LinkParams field.
        """
        args = step.args if isinstance(step.args, dict) else {step.action: step.args}
        changes: dict[str, Any] = {}
        for key, value in args.items():
            if key in _LINK_TARGET_KEYS or key == "oneway":
                continue
            conv = _LINK_FIELDS.get(key)
            if conv is None:
                raise ConfigError(f"unknown link setting {key!r} (known: {', '.join(_LINK_FIELDS)})",
                                  path=self.scenario.source, line=step.line)
            try:
                changes[key] = value if isinstance(value, (int, float)) and key != "distribution" \
                    else conv(value)
            except ValueError as e:
                raise ConfigError(str(e), path=self.scenario.source, line=step.line,
                                  field=key) from None
        names = self.scenario.node_names
        oneway = step.oneway or bool(args.get("oneway"))
        if "nodes" in args or "target" in args:
            hit = set(self.targets.resolve(args.get("nodes", args.get("target")), line=step.line))
            pairs = {(a, b) for a in names for b in names if a != b and (a in hit or b in hit)}
        else:
            src_spec, dst_spec = args.get("from", "all"), args.get("to", "all")
            if src_spec == REST and dst_spec == REST:
                raise ConfigError("from and to cannot both be rest", path=self.scenario.source,
                                  line=step.line)
            srcs = [] if src_spec == REST else self.targets.resolve(src_spec, line=step.line)
            dsts = self.targets.resolve(dst_spec, line=step.line) if dst_spec != REST \
                else self.targets.rest(srcs)
            if src_spec == REST:
                srcs = self.targets.rest(dsts)
            pairs = {(a, b) for a in srcs for b in dsts if a != b}
            if not oneway:
                pairs |= {(b, a) for a, b in pairs}
        order = {n: i for i, n in enumerate(names)}
        return sorted(pairs, key=lambda p: (order[p[0]], order[p[1]])), changes

    def _all_cuts(self) -> frozenset[Cut]:
        out: set[Cut] = set()
        for cuts in self.cuts.values():
            out |= cuts
        return frozenset(out)

    def _emit(self, action: str, target: Any, phase: str, mechanism: str, **extra: Any) -> None:
        data = {"action": action, "target": target, "phase": phase, "mechanism": mechanism, **extra}
        # Rounded like every other trace timestamp, so 0.1 + 0.2 reads 0.3 in the report too.
        self.events.append({"ts": round(self.backend.now(), 6), "node": "lab", "lc": 0, "ev": "fault",
                            "data": data})

