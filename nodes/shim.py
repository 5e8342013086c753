"""The agent's fault shim: per-peer network faults applied inside the agent itself.

Used where the kernel cannot do it (the local runtime, or a container kernel
without ``sch_netem``). Rules are *state*, set by the orchestrator over the
control socket, exactly as the Backend interface gives them:

* ``cut_out``: peers this node's messages to are dropped (a partition, sender side)
* ``cut_in``: peers whose messages to this node are dropped (a partition, receiver side)
* ``links``: peer -> link parameters of this node's *outgoing* link to that peer
  (delay, jitter and its distribution, loss, duplicate, reorder)

A one-way partition is a cut on one side only; the orchestrator installs a cut
at both its ends, so it holds even while one end is paused or restarting.

The shim only decides; the agent acts: :meth:`Shim.outgoing` returns the drop
reason or the delays (one per copy) to send with, and delayed copies go through
the agent's timer heap. Its randomness is a ``random.Random`` seeded from the
lab's seed and the node's name, so a fault's draws repeat with the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

DISTRIBUTIONS = ("constant", "uniform", "normal", "exponential")


@dataclass(frozen=True)
class LinkRule:
    """One outgoing link's behaviour. Field names and units match lab.scenario.LinkParams."""

    delay: float = 0.0               # s, one way
    jitter: float = 0.0              # s
    distribution: str = "uniform"    # shape of the jitter, see DISTRIBUTIONS
    loss: float = 0.0                # fraction dropped
    duplicate: float = 0.0           # fraction sent twice
    reorder: float = 0.0             # fraction given an extra random delay of up to 2x (delay + jitter)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LinkRule:
        """Build from a control message; unknown keys (e.g. ``rate``) are ignored, bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in raw.items() if k in known and v is not None}
        rule = cls(**kw)
        for name in ("delay", "jitter", "loss", "duplicate", "reorder"):
            v = getattr(rule, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        for name in ("loss", "duplicate", "reorder"):
            if getattr(rule, name) > 1:
                raise ValueError(f"{name} is a fraction (0..1), got {getattr(rule, name)!r}")
        if rule.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        return rule

    @property
    def perfect(self) -> bool:
        return self == _PERFECT

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_PERFECT = LinkRule()


class Shim:
    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)
        self.cut_out: frozenset[str] = frozenset()
        self.cut_in: frozenset[str] = frozenset()
        self.links: dict[str, LinkRule] = {}      # only non-perfect links are kept
        self.active = False                        # any rule at all: lets the hot path skip the shim

    def set_rules(self, msg: dict[str, Any]) -> None:
        """Apply a control ``set_rules`` message. Each field given replaces that part of the state:
        ``cut_out``/``cut_in`` replace the whole set, ``links`` replaces the listed peers' rules
        (an empty dict or None makes a link perfect again), ``reset: true`` clears everything first.
        Validates everything before changing anything."""
        links = dict(self.links)
        cut_out, cut_in = self.cut_out, self.cut_in
        if msg.get("reset"):
            links, cut_out, cut_in = {}, frozenset(), frozenset()
        if "cut_out" in msg:
            cut_out = frozenset(_names(msg["cut_out"], "cut_out"))
        if "cut_in" in msg:
            cut_in = frozenset(_names(msg["cut_in"], "cut_in"))
        raw_links = msg.get("links") or {}
        if not isinstance(raw_links, dict):
            raise ValueError("links must map a peer to its link settings")
        for peer, raw in raw_links.items():
            rule = LinkRule.from_dict(raw or {})
            if rule.perfect:
                links.pop(peer, None)
            else:
                links[peer] = rule
        self.links, self.cut_out, self.cut_in = links, cut_out, cut_in
        self.active = bool(links or cut_out or cut_in)

    def rules(self) -> dict[str, Any]:
        return {"cut_out": sorted(self.cut_out), "cut_in": sorted(self.cut_in),
                "links": {p: r.as_dict() for p, r in sorted(self.links.items())}}

    def incoming(self, src: str) -> str | None:
        """The drop reason for a message from ``src``, or None to deliver it."""
        return "partition" if src in self.cut_in else None

    def outgoing(self, dst: str) -> str | list[float]:
        """A drop reason, or the delays (s) of the copies to send (``[0.0]`` on a perfect link)."""
        if dst in self.cut_out:
            return "partition"
        rule = self.links.get(dst)
        if rule is None:
            return [0.0]
        rng = self.rng
        if rule.loss and rng.random() < rule.loss:
            return "loss"
        copies = 2 if rule.duplicate and rng.random() < rule.duplicate else 1
        return [self._delay(rule) for _ in range(copies)]

    def _delay(self, rule: LinkRule) -> float:
        rng = self.rng
        d = rule.delay
        j = rule.jitter
        if j:
            dist = rule.distribution
            if dist == "uniform":
                d += rng.uniform(-j, j)
            elif dist == "normal":
                d += rng.gauss(0.0, j)
            elif dist == "exponential":
                d += rng.expovariate(1.0 / j)
            # constant: jitter has no effect
        if rule.reorder and rng.random() < rule.reorder:
            d += rng.uniform(0.0, 2.0 * (rule.delay + j))
        return d if d > 0.0 else 0.0


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of node names")
    return list(value)
