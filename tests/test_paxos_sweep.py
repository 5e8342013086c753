"""Paxos under random fault schedules on the simulator.

* Multi-Paxos: 200 seeded schedules (crashes, restarts, pauses, partitions one-way and
  intersecting, loss, duplication, reordering; Raft's sweep generator, tests/test_raft_sweep.py),
  with snapshots every 8 slots so that garbage collection and catch-up run under the faults
  too; every check must hold.
* Single-decree Paxos: 100 schedules with proposer and acceptor crashes, loss, reordering and
  partitions: the value is agreed, valid and decided.
* The named bugs: for each, a bounded seed sweep over schedules shaped to open its window;
  ``agreement`` (the property docs/paxos.md says each one breaks) must report it, and the
  correct core on the very schedule that caught it must break nothing.
* The livelock of the tutorial's 2.5: duelling proposers without backoff leave some schedules
  with no decision at all; with randomized exponential backoff the same schedules decide.

A failing seed prints the schedule; ``schedule(i, ...)`` rebuilds it exactly.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_raft_sweep import _t, describe, run
from test_raft_sweep import schedule as kv_schedule

from lab.checks.base import HOLDS, VIOLATED
from lab.scenario import FaultStep, LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec

pytestmark = pytest.mark.sim

MP_CHECKS = ["agreement", "validity", "linearizable"]
SWEEP_RUNS = 200
CHUNKS = 4
BUG_SEEDS = 100


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_multipaxos_every_check_holds_under_random_faults(chunk: int) -> None:
    per = -(-SWEEP_RUNS // CHUNKS)
    failures = []
    for i in range(chunk * per, min(SWEEP_RUNS, (chunk + 1) * per)):
        s, seed = kv_schedule(i, protocol="multipaxos", check_names=MP_CHECKS,
                              config={"snapshot_every": 8})
        r = run(s, seed)
        if r.exit_code != 0:
            failures.append(describe(s, seed, r))
    assert not failures, "\n\n".join(failures)


# -- single-decree schedules ----------------------------------------------------------------------

def fault_step(rng: random.Random, at: float, names: list[str]) -> FaultStep:
    """Short crashes of any node (its acceptor state must survive them), loss, duplication,
    reordering and a node cut off."""
    kind = rng.choice(("crash", "crash", "crash", "loss", "reorder", "partition", "duplicate"))
    if kind == "crash":
        return FaultStep(at, "crash", rng.choice(names), duration=_t(rng, 0.005, 0.2))
    if kind == "partition":
        return FaultStep(at, "partition", "random", duration=_t(rng, 0.05, 0.3))
    value = {"loss": _t(rng, 0.1, 0.4), "duplicate": _t(rng, 0.1, 0.5), "reorder": _t(rng, 0.2, 0.8)}[kind]
    return FaultStep(at, kind, {"from": "all", "to": "all", kind: value}, duration=_t(rng, 0.05, 0.5))


def restart_step(rng: random.Random, at: float, names: list[str]) -> FaultStep:
    """The proposer n1 killed for a few ms right around its first Accept (so that a restart
    can reuse round 1), while reordering delays some of the messages already on the wire."""
    if rng.random() < 0.6:
        return FaultStep(round(rng.uniform(0.015, 0.045), 4), "crash", "n1", duration=_t(rng, 0.001, 0.003))
    return FaultStep(at, "reorder", {"from": "all", "to": "all", "reorder": _t(rng, 0.3, 0.9)},
                     duration=_t(rng, 0.2, 1.0))


def schedule(i: int, *, bugs: tuple[str, ...] = (), kinds: Any = fault_step, proposers: int = 2,
             backoff: str = "exponential", delay: float | None = None, jitter: float | None = None,
             steps: tuple[int, int] = (3, 10), duration: float = 1.5,
             checks: tuple[str, ...] = ("agreement", "validity", "decided")) -> tuple[Scenario, int]:
    """Single-decree scenario number ``i``: ``proposers`` proposer-learners, then acceptors
    (5 nodes; acceptors are not learners, so none of them cuts a proposer short by telling it
    the decision), clients asking to propose, and faults drawn by ``kinds``."""
    rng = random.Random(f"paxos-sweep/{i}/{kinds.__name__}")
    names = [f"n{k}" for k in range(1, 6)]
    nodes = [NodeSpec(n, role=("proposer", "learner") if k < proposers else "acceptor")
             for k, n in enumerate(names)]
    faults = sorted((kinds(rng, _t(rng, 0.0, duration - 0.2), names)
                     for _ in range(rng.randint(*steps))), key=lambda f: f.at)
    cfg: dict[str, Any] = {"backoff": backoff, "retry_timeout": "50ms", "backoff_base": "5ms"}
    if bugs:
        cfg["bugs"] = list(bugs)
    link = LinkParams(delay=delay if delay is not None else _t(rng, 0.001, 0.01),
                      jitter=jitter if jitter is not None else _t(rng, 0.0, 0.01))
    s = Scenario(name=f"paxos-sweep-{i}", protocol="paxos", nodes=nodes, config=cfg,
                 network=NetworkSpec(link),
                 workload=WorkloadSpec(kind="propose", clients=2, rate=20.0, duration=duration,
                                       timeout=0.3),
                 faults=faults, checks=list(checks), settle=1.0)
    return s, rng.randrange(2**31)


def test_single_decree_agrees_and_decides_under_random_faults() -> None:
    failures = []
    for i in range(100):
        s, seed = schedule(i)
        r = run(s, seed)
        if r.exit_code != 0:
            failures.append(describe(s, seed, r))
    assert not failures, "\n\n".join(failures)


# -- named bugs -------------------------------------------------------------------------------------
# Tuned (the schedules, never the checkers) until a 100-seed sweep catches each bug early.

BUG_SCHEDULES: dict[str, dict[str, Any]] = {
    "acceptor_forgets_promise": {},
    "ignore_accepted_value": {},
    "accept_below_promise": {},
    # Retrying proposers, so that promises of an earlier ballot are there to be miscounted.
    "stale_promise_counted": {"backoff": "none"},
    # One proposer (a second one's higher ballots would move it past round 1), slow jittery links.
    "reuse_ballot_after_restart": {"kinds": restart_step, "proposers": 1, "delay": 0.01, "jitter": 0.02},
}


@pytest.mark.parametrize("bug", sorted(BUG_SCHEDULES))
def test_each_named_bug_breaks_agreement(bug: str) -> None:
    shape = dict(BUG_SCHEDULES[bug], checks=("agreement", "validity"))
    for i in range(BUG_SEEDS):
        s, seed = schedule(i, bugs=(bug,), **shape)
        r = run(s, seed)
        verdicts = {v.check: v.verdict for v in r.verdicts}
        if verdicts["agreement"] == VIOLATED:
            break
    else:
        pytest.fail(f"{bug}: agreement held in all {BUG_SEEDS} schedules")
    print(f"{bug}: caught at schedule {i}: {r.verdicts[0].detail}")
    # Control: the very schedule that caught the bug, on the correct core, breaks nothing.
    s, seed = schedule(i, **shape)
    r = run(s, seed)
    assert r.exit_code == 0, describe(s, seed, r)


# -- the livelock of section 2.5 --------------------------------------------------------------------

def duel(i: int, backoff: str) -> tuple[Scenario, int]:
    """Two or three proposers (each also an acceptor and learner) proposing their own values at
    the same instant, no faults; links of 2 to 10 ms with up to as much jitter."""
    rng = random.Random(f"paxos-duel/{i}")
    n, p = rng.choice((3, 5)), rng.choice((2, 2, 3))
    nodes = [NodeSpec(f"n{k}", role=("proposer", "acceptor", "learner") if k <= p else ("acceptor", "learner"))
             for k in range(1, n + 1)]
    delay = _t(rng, 0.002, 0.01)
    s = Scenario(name=f"paxos-duel-{i}", protocol="paxos", nodes=nodes,
                 config={"backoff": backoff, "retry_timeout": "100ms", "backoff_base": "5ms"},
                 network=NetworkSpec(LinkParams(delay=delay, jitter=_t(rng, 0.0, delay))),
                 workload=WorkloadSpec(kind="none", duration=2.0),
                 checks=["agreement", "validity", "decided"], settle=0.0)
    return s, rng.randrange(2**31)


def test_without_backoff_duelling_proposers_livelock_and_backoff_decides_the_same_schedules() -> None:
    stuck = []
    for i in range(20):
        plain = {}
        for backoff in ("none", "exponential"):
            s, seed = duel(i, backoff)
            r = run(s, seed)
            got = {v.check: v.verdict for v in r.verdicts}
            assert got["agreement"] == got["validity"] == HOLDS, describe(s, seed, r)
            plain[backoff] = got["decided"], r.verdicts[2].data
        assert plain["exponential"][0] == HOLDS, (i, plain)
        if plain["none"][0] == VIOLATED:
            assert plain["none"][1]["ballots_tried"] > 100       # they kept trying, all run long
            stuck.append(i)
    assert len(stuck) >= 5, stuck
