"""PBFT under Byzantine replicas and random faults, on the simulator.

* With f Byzantine replicas of 3f+1 (every behaviour, alone and colluding, as primary and as
  backup) plus crashes, partitions, loss and reordering of honest ones, every safety check
  holds (liveness may suffer: PBFT promises it only once the network behaves).
* Each named bug is caught within a bounded seed sweep by the property docs/pbft.md says it
  breaks; the schedule that caught it then runs on the correct PBFT as a control.

A failing seed prints the schedule; ``schedule(...)`` rebuilds it, and a run is a pure
function of the scenario and its seed.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from lab.runner import RunResult, run_scenario
from lab.scenario import FaultStep, LinkParams, NetworkSpec, NodeSpec, Scenario, WorkloadSpec
from nodes.protocols.pbft import PBFT

pytestmark = pytest.mark.sim

SAFETY = ["agreement", "committed_survives_view_change", "linearizable"]
BEHAVIOURS = sorted(PBFT.behaviours)
FAST = {"request_timeout": "400ms", "view_change_timeout": "400ms"}


KINDS = ("crash", "partition", "loss", "reorder", "crash_primary")


def random_fault(rng: random.Random, at: float, spare: list[str],
                 kinds: tuple[str, ...] = KINDS) -> FaultStep:
    """One fault of an honest-but-unlucky kind, hitting the nodes in ``spare``."""
    kind = rng.choice(kinds)
    dur = round(rng.uniform(0.3, 1.0), 3)
    if kind == "crash":
        return FaultStep(at, "crash", rng.choice(spare), duration=dur)
    if kind == "crash_primary":
        return FaultStep(at, "crash", "primary", duration=dur)
    if kind == "partition":
        return FaultStep(at, "partition", rng.choice(spare), duration=dur)
    value = round(rng.uniform(0.1, 0.4), 3)
    return FaultStep(at, kind, {"from": "all", "to": "all", kind: value}, duration=dur)


def schedule(i: int, byzantine: dict[str, list[str]], *, n: int = 4, bugs: tuple[str, ...] = (),
             faults: int = 2, kinds: tuple[str, ...] = KINDS, duration: float = 3.0,
             rate: float = 30.0, config: dict[str, Any] | None = None) -> tuple[Scenario, int]:
    """Scenario ``i`` of a sweep: ``byzantine`` marks the faulty nodes, random faults hit others."""
    rng = random.Random(f"pbft-sweep/{i}/{sorted(byzantine.items())}/{n}")   # the same with and without bugs
    names = [f"n{k}" for k in range(1, n + 1)]
    spare = [x for x in names if x not in byzantine]
    steps = sorted((random_fault(rng, round(rng.uniform(0.3, duration - 0.5), 3), spare, kinds)
                    for _ in range(faults)), key=lambda f: f.at)
    cfg: dict[str, Any] = {**FAST, **(config or {})}
    if bugs:
        cfg["bugs"] = list(bugs)
    nodes = [NodeSpec(x, attrs={"byzantine": byzantine[x]} if x in byzantine else {}) for x in names]
    s = Scenario(name=f"pbft-sweep-{i}", protocol="pbft", nodes=nodes, config=cfg,
                 network=NetworkSpec(LinkParams(delay=0.002, jitter=0.001)),
                 workload=WorkloadSpec(kind="kv", clients=3, rate=rate, duration=duration,
                                       timeout=0.6, params={"keys": 3}),
                 faults=steps, checks=list(SAFETY), settle=1.0)
    return s, rng.randrange(2**31)


def run(s: Scenario, seed: int) -> RunResult:
    return run_scenario(s, "sim", seed=seed, quiet=True, write=False, time_limit=10.0)


def describe(s: Scenario, seed: int, r: RunResult) -> str:
    steps = "\n".join(f"  {f.at:.3f}s {f.action} {f.args!r}" + (f" for {f.duration}s" if f.duration else "")
                      for f in s.faults)
    byz = {x.name: x.attrs["byzantine"] for x in s.nodes if x.attrs.get("byzantine")}
    bad = "\n".join(f"  {v.check}: {v.verdict} -- {v.detail}" for v in r.verdicts if v.verdict != "holds")
    return f"{s.name} seed {seed}, byzantine {byz}, config {s.config}\n{steps}\n{bad}"


# -- f Byzantine replicas of 3f+1: every safety check holds ---------------------------------------
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_one_byzantine_replica_of_four_breaks_no_safety_check(behaviour: str) -> None:
    failures = []
    for i, who in enumerate(("n1", "n2")):            # the first primary, then a backup
        s, seed = schedule(i, {who: [behaviour]})
        r = run(s, seed)
        if r.exit_code != 0:
            failures.append(describe(s, seed, r))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("i", range(3))
def test_two_colluding_byzantine_replicas_of_seven_break_no_safety_check(i: int) -> None:
    rng = random.Random(f"pbft-seven/{i}")
    a, b = rng.sample(BEHAVIOURS, 2)
    pair = rng.choice((("n1", "n2"), ("n1", "n4"), ("n2", "n3")))
    s, seed = schedule(i, {pair[0]: [a, rng.choice(BEHAVIOURS)], pair[1]: [b]}, n=7, faults=1,
                       rate=20.0)
    r = run(s, seed)
    assert r.exit_code == 0, describe(s, seed, r)


# -- named bugs ------------------------------------------------------------------------------------
# Each bug with the faulty replicas and the faults that provoke it, and the property docs/pbft.md
# says it breaks. The schedules were tuned (never the checkers) until the bug shows early.
BUGS: dict[str, dict[str, Any]] = {
    "prepared_with_f_plus_1": dict(byzantine={"n1": ["equivocate"], "n2": ["equivocate"]}, n=7,
                                   faults=0, rate=20.0, breaks="agreement"),
    "no_signature_check": dict(byzantine={"n2": ["forge"]}, faults=0, breaks="linearizable"),
    # Requests committed above the stable checkpoint when the primary dies.
    "view_change_without_prepared": dict(byzantine={}, faults=1, kinds=("crash_primary",),
                                         breaks="committed_survives_view_change"),
    "no_watermark_check": dict(byzantine={"n1": ["replay"]}, faults=0,
                               config={"checkpoint_interval": 4, "log_window": 8},
                               breaks="agreement"),
    "client_accepts_first_reply": dict(byzantine={"n2": ["wrong_reply"]}, faults=0,
                                       breaks="linearizable"),
}
BUG_SEEDS = 10


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_each_named_bug_is_caught_by_the_property_it_breaks(bug: str) -> None:
    plan = dict(BUGS[bug])
    breaks = plan.pop("breaks")
    byzantine = plan.pop("byzantine")
    for i in range(BUG_SEEDS):
        s, seed = schedule(i, byzantine, bugs=(bug,), **plan)
        r = run(s, seed)
        verdict = {v.check: v.verdict for v in r.verdicts}[breaks]
        if verdict == "violated":
            break
    else:
        pytest.fail(f"{bug}: {breaks} never violated in {BUG_SEEDS} schedules")
    print(f"{bug}: {breaks} violated at schedule {i}")
    # Control: the very schedule that caught the bug, on the correct PBFT, breaks nothing.
    s, seed = schedule(i, byzantine, **plan)
    s.name = f"{s.name}-control"
    r = run(s, seed)
    assert r.exit_code == 0, describe(s, seed, r)
