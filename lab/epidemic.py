"""What theory predicts for a gossip run: a Monte Carlo of the core's own model, and Serf's formula.

:func:`spread` plays one rumor through the model ``nodes/protocols/gossip.py`` implements,
written again from its description rather than from its code, so the two can be compared:
``n`` nodes, each with a round every ``interval`` at its own random phase; in each round a
node contacts ``fanout`` distinct peers drawn uniformly; a message arrives ``delay`` (plus
uniform ``jitter``) later or is lost with probability ``loss``. ``push`` sends the rumor while
it is hot, ``pull`` asks for it, ``push_pull`` does both (and the answer says whether the peer
already knew it). The stop rule (``none``, ``counter``, ``coin`` with ``k``) is the core's: a
strike is a round that sent the rumor (push), a pull it answered (pull) or an answer saying
the peer knew it (push_pull). Anti-entropy is not modelled: it is the backstop, not the spread.

:func:`serf_fraction` is the closed form Serf's convergence simulator uses (HashiCorp),
``1 / (1 + (n+1) e^(-c n x))`` with ``c = fanout / n · (1 - loss)``: the fraction of nodes
informed after ``x`` rounds of push gossip with immediate forwarding.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Model:
    n: int
    fanout: int = 3
    interval: float = 0.2
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    mode: str = "push"
    stop: str = "counter"
    stop_k: int = 4

    @classmethod
    def of(cls, n: int, config: object, delay: float = 0.0, jitter: float = 0.0,
           loss: float = 0.0) -> Model:
        """The model of ``n`` nodes running a gossip core with tunables ``config``."""
        fields = ("fanout", "interval", "mode", "stop", "stop_k")
        return cls(n=n, delay=delay, jitter=jitter, loss=loss, **{f: getattr(config, f) for f in fields})


_TICK, _PUSH, _PULL, _ANSWER = range(4)


def spread(m: Model, rng: random.Random, *, until_all: bool = True) -> list[float]:
    """One rumor from a random node at time 0: each node's time of learning it (inf: never).
    ``until_all`` stops as soon as every node knows it (the tail after that changes nothing)."""
    n, f, period = m.n, min(m.fanout, m.n - 1), m.interval
    if n <= 1 or f <= 0:
        return [0.0] + [math.inf] * (n - 1)
    phase = [rng.uniform(0.0, period) for _ in range(n)]
    informed = [math.inf] * n
    strikes: list[int | None] = [None] * n        # None: not hot (never knew, or lost interest)
    heap: list[tuple[float, int, int, int, int]] = []
    seq = 0
    hot = 0                                       # nodes holding the rumor hot

    def push(t: float, kind: int, node: int, arg: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, node, arg))

    def next_tick(i: int, t: float) -> float:
        k = math.floor((t - phase[i]) / period) + 1
        return phase[i] + k * period

    def hop() -> float | None:
        if m.loss and rng.random() < m.loss:
            return None
        d = m.delay
        if m.jitter:
            d = max(0.0, d + m.jitter * (2.0 * rng.random() - 1.0))
        return d

    def strike(i: int) -> None:
        nonlocal hot
        s = strikes[i]
        if s is None or m.stop == "none":
            return
        if m.stop == "counter":
            strikes[i] = None if s + 1 >= m.stop_k else s + 1
        elif rng.random() < 1.0 / m.stop_k:
            strikes[i] = None
        hot -= strikes[i] is None

    def learn(i: int, t: float) -> bool:
        nonlocal hot
        if informed[i] != math.inf:
            return False
        informed[i] = t
        strikes[i] = 0
        hot += 1
        if m.mode == "push":
            push(next_tick(i, t), _TICK, i)
        return True

    def peers(i: int) -> list[int]:
        return [j + (j >= i) for j in rng.sample(range(n - 1), f)]

    origin = rng.randrange(n)
    learn(origin, 0.0)
    if m.mode != "push":      # every node pulls, informed or not
        for i in range(n):
            push(phase[i], _TICK, i)
    left = n - 1
    in_flight = 0
    while heap and not (until_all and left == 0):
        t, _, kind, i, arg = heapq.heappop(heap)
        if kind == _TICK:
            has = strikes[i] is not None
            if m.mode == "push":
                if not has:
                    continue
                for j in peers(i):
                    d = hop()
                    if d is not None:
                        push(t + d, _PUSH, j, 1)
                        in_flight += 1
                strike(i)
                if strikes[i] is not None:
                    push(t + period, _TICK, i)
                continue
            for j in peers(i):
                d = hop()
                if d is not None:
                    push(t + d, _PUSH if m.mode == "push_pull" else _PULL, j, (i << 1) | has)
                    in_flight += 1
            if in_flight or hot:
                push(t + period, _TICK, i)
        elif kind == _PUSH and m.mode == "push":
            in_flight -= 1
            left -= learn(i, t)
        elif kind == _PULL:            # i was asked by arg >> 1; answers if the rumor is hot here
            in_flight -= 1
            if strikes[i] is not None:
                strike(i)
                d = hop()
                if d is not None:
                    push(t + d, _ANSWER, arg >> 1, 1)
                    in_flight += 1
        elif kind == _PUSH:            # push_pull: i got a push from arg >> 1 (with the rumor if arg & 1)
            in_flight -= 1
            src, carried = arg >> 1, arg & 1
            knew = False
            if carried:
                knew = not learn(i, t)
                left -= not knew
            give = strikes[i] is not None and not carried
            if give or knew:
                d = hop()
                if d is not None:
                    push(t + d, _ANSWER, src, (give << 1) | knew)
                    in_flight += 1
        else:                          # _ANSWER at i: arg bit 1 carries the rumor (pull: always)
            in_flight -= 1
            if m.mode == "pull" or arg & 2:
                left -= learn(i, t)
            if m.mode == "push_pull" and arg & 1:
                strike(i)
    return informed


def trials(m: Model, count: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(f"epidemic/{seed}")
    return [spread(m, rng) for _ in range(count)]


def rounds_to_all(times: Sequence[float], interval: float) -> float:
    """Rounds (intervals) until the last node learnt; inf when some never did."""
    return max(times) / interval


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def predicted_rounds(m: Model, count: int = 200, seed: int = 0) -> float:
    """Mean rounds to inform every node, over ``count`` Monte Carlo trials (inf if any missed)."""
    return mean([rounds_to_all(t, m.interval) for t in trials(m, count, seed)])


def curve(all_times: Sequence[Sequence[float]], grid: Sequence[float]) -> list[float]:
    """Mean fraction of nodes informed at each time of ``grid`` (seconds), over the trials."""
    out = []
    for x in grid:
        fr = [sum(1 for t in times if t <= x) / len(times) for times in all_times if times]
        out.append(mean(fr))
    return out


def serf_fraction(n: int, fanout: int, rounds: float, loss: float = 0.0) -> float:
    """Serf's convergence formula: the fraction informed after ``rounds`` rounds."""
    c = fanout / n * (1.0 - loss)
    return 1.0 / (1.0 + (n + 1) * math.exp(-c * n * rounds))


def serf_rounds(n: int, fanout: int, loss: float = 0.0) -> float:
    """Rounds until Serf's formula leaves less than half a node uninformed."""
    c = fanout / n * (1.0 - loss)
    return math.log((n + 1) * (2 * n - 1)) / (c * n)


def model_for(scenario: dict[str, object]) -> Model | None:
    """The model of a resolved scenario (a run directory's scenario.yaml), or None when it does
    not run the gossip core with rumor mongering."""
    from nodes.protocols import get as get_protocol
    from nodes.protocols.core import ConfigValueError, build_config
    from nodes.units import parse_duration, parse_percent

    if scenario.get("protocol") != "gossip":
        return None
    try:
        cfg = build_config(get_protocol("gossip"), scenario.get("config") or {})  # type: ignore[arg-type]
    except (ConfigValueError, KeyError):
        return None
    nodes = scenario.get("nodes")
    n = nodes if isinstance(nodes, int) else len(nodes) if isinstance(nodes, list) else 0
    net = scenario.get("network") or {}
    if not isinstance(net, dict) or n < 2 or not getattr(cfg, "fanout", 0):
        return None

    def get(key: str, parse: object, default: float) -> float:
        value = net.get(key)
        return default if value is None else (value if isinstance(value, float) else parse(value))  # type: ignore[operator]

    return Model.of(n, cfg, delay=get("delay", parse_duration, 0.0),
                    jitter=get("jitter", parse_duration, 0.0), loss=get("loss", parse_percent, 0.0))


# -- the N-sweep: the simulator against this model ----------------------------------------------

# memberlist's GossipNodes and GossipInterval; rumors kept long enough to leave no residue, and
# nothing else running, so that what spreads a value is exactly the model above.
SWEEP_CONFIG = {"mode": "push", "fanout": 3, "interval": "200ms", "stop": "counter", "stop_k": 10,
                "anti_entropy": "0s", "heartbeat": "0s"}
SWEEP_DELAY = 0.001


def sweep_scenario(n: int, duration: float, rate: float = 5.0, seed: int = 1) -> Any:
    """``n`` gossip nodes under ``SWEEP_CONFIG`` taking ``rate`` broadcasts a second."""
    from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec

    return Scenario(name=f"gossip-sweep-{n}", protocol="gossip",
                    nodes=[NodeSpec(f"n{i}") for i in range(1, n + 1)], config=dict(SWEEP_CONFIG),
                    network=NetworkSpec(default=LinkParams(delay=SWEEP_DELAY)),
                    workload=WorkloadSpec(kind="broadcast", clients=5, rate=rate, duration=duration),
                    checks=["eventual_delivery"], settle=3.0, seed=seed)


def sweep_model(n: int) -> Model:
    from nodes.protocols import get as get_protocol
    from nodes.protocols.core import build_config

    return Model.of(n, build_config(get_protocol("gossip"), SWEEP_CONFIG), delay=SWEEP_DELAY)


def measured_rounds(n: int, duration: float, seed: int = 1) -> tuple[float, int, dict[str, Any]]:
    """(mean rounds to reach every node, values measured, the run's metrics) of one simulator
    run of :func:`sweep_scenario`."""
    from lab.runner import run_scenario

    result = run_scenario(sweep_scenario(n, duration, seed=seed), "sim", seed=seed, quiet=True,
                          write=False)
    d = result.metrics["dissemination"]["rounds"]
    count = sum(1 for _ in result.history if _.get("f") == "broadcast" and _.get("type") == "ok")
    return d["mean"], count, result.metrics
