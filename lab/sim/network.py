"""The simulated network: what happens to one message on one directed link.

Every link starts from the scenario's ``NetworkSpec`` and can be changed at
any virtual time with :meth:`NetworkModel.set_link`; partitions are a set of
cut directed links installed with :meth:`NetworkModel.set_cuts` (a two-way
partition is two cuts per pair, a one-way partition one, intersecting
partitions just more cuts). The model only decides *when* copies of a message
arrive or *why* it is dropped; the backend moves the bytes and writes the trace.

All randomness comes from the one ``random.Random`` the model is given, and it
is drawn only for the knobs that are switched on, in a fixed order, so the
same seed and the same sequence of sends give the same fates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from lab.scenario import LinkParams, NetworkSpec

DISTRIBUTIONS = ("constant", "uniform", "exponential")
ENVELOPE_BYTES = 64   # what the wire envelope adds to a body, for rate limits


class _Link:
    """One directed link's parameters plus the little state FIFO and rate limits need."""

    __slots__ = ("params", "fifo", "stateless", "busy_until", "last_arrival")

    def __init__(self, params: LinkParams) -> None:
        self.busy_until = 0.0      # the link's transmitter is busy until then (rate limit)
        self.last_arrival = 0.0    # latest arrival so far: FIFO links never deliver before it
        self.set(params)

    def set(self, params: LinkParams) -> None:
        if params.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown delay distribution {params.distribution!r} "
                             f"(known: {', '.join(DISTRIBUTIONS)})")
        for name in ("delay", "jitter"):
            if getattr(params, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(params, name)}")
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(params, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(params, name)}")
        self.params = params
        # Without jitter or reordering the link behaves like one TCP stream: in order.
        # With them it behaves like UDP, and overtaking is the point.
        self.fifo = params.reorder == 0.0 and (params.jitter == 0.0 or params.distribution == "constant")
        # Such a link's fate of a message never depends on the messages before it.
        self.stateless = not self.fifo and not params.rate


class NetworkModel:
    """Decides the fate of each message: dropped (and why) or its arrival time(s).

    A link costs nothing while it keeps the default parameters: ``_links`` holds only
    links given their own (``network.links``, :meth:`set_link`) and, when the default
    link has state (FIFO order or a rate limit), the links that have carried a message.
    So a thousand nodes are not a million objects. A bad setting is a ValueError naming its link.
    """

    def __init__(self, spec: NetworkSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        try:
            self._default = _Link(spec.default)
        except ValueError as e:
            raise ValueError(f"every link: {e}") from None
        self._links: dict[tuple[str, str], _Link] = {}
        for rule in spec.links:          # the last rule for a link wins, as in NetworkSpec.link
            try:
                self._links[(rule.src, rule.dst)] = _Link(rule.params)
            except ValueError as e:
                raise ValueError(f"link {rule.src}->{rule.dst}: {e}") from None
        self.cuts: frozenset[tuple[str, str]] = frozenset()

    # -- configuration ---------------------------------------------------------
    def link(self, src: str, dst: str) -> _Link:
        """src -> dst's own link object, made on first use from the default."""
        key = (src, dst)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(self._default.params)
        return link

    def params(self, src: str, dst: str) -> LinkParams:
        return self._links.get((src, dst), self._default).params

    def links_kept(self) -> int:
        """How many directed links hold an object of their own (the rest share the default)."""
        return len(self._links)

    def set_link(self, src: str, dst: str, params: LinkParams) -> None:
        """Give src -> dst exactly these parameters from now on (messages in flight keep theirs)."""
        self.link(src, dst).set(params)

    def set_cuts(self, cuts: Iterable[tuple[str, str]]) -> None:
        """Install exactly these cut directed links (an empty set heals everything)."""
        self.cuts = frozenset((s, d) for s, d in cuts)

    # -- the hot path ------------------------------------------------------------
    def transmit(self, src: str, dst: str, now: float, size: int) -> tuple[str | None, tuple[float, ...]]:
        """A message of ``size`` body bytes leaves src for dst at ``now``.

        Returns ``(reason, ())`` when it is dropped (``partition`` or ``loss``),
        else ``(None, arrivals)``: one arrival time, or two when it is duplicated.
        A cut is judged at send time: what is already on the wire still arrives.
        """
        key = (src, dst)
        if self.cuts and key in self.cuts:
            return "partition", ()
        link = self._links.get(key)
        if link is None:
            link = self._default if self._default.stateless else self.link(src, dst)
        p = link.params
        rng = self.rng
        if p.loss and rng.random() < p.loss:
            return "loss", ()
        copies = 2 if p.duplicate and rng.random() < p.duplicate else 1
        start = now
        if p.rate:
            # A token-bucket-free approximation of tbf: one transmitter per link,
            # messages queue behind each other and take size/rate to go out.
            start = max(now, link.busy_until) + (size + ENVELOPE_BYTES) * 8 / p.rate
            link.busy_until = start
        if copies == 1:
            arrival = start + self._delay(p)
            if link.fifo:
                if arrival < link.last_arrival:
                    arrival = link.last_arrival
                link.last_arrival = arrival
            return None, (arrival,)
        arrivals = []
        for _ in range(copies):
            arrival = start + self._delay(p)
            if link.fifo:
                arrival = max(arrival, link.last_arrival)
                link.last_arrival = arrival
            arrivals.append(arrival)
        return None, tuple(arrivals)

    def _delay(self, p: LinkParams) -> float:
        d = p.delay
        if p.jitter:
            if p.distribution == "uniform":
                d += p.jitter * (2.0 * self.rng.random() - 1.0)
                if d < 0.0:
                    d = 0.0
            elif p.distribution == "exponential":
                # delay is the floor, jitter the mean of the exponential tail above it
                d += self.rng.expovariate(1.0 / p.jitter)
        if p.reorder and self.rng.random() < p.reorder:
            d += self.rng.uniform(0.0, 2.0 * (p.delay + p.jitter))
        return d

