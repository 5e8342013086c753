"""SWIM on the simulator (and the shipped scenarios on local processes too).

* each named bug is caught by the checker its docs name, in a bounded seed
  sweep, and the test asserts the specific thing the bug breaks; the same run
  without the bug passes that check (so it is the bug the checker sees);
* Lifeguard's result: one slow member, 5% loss, false positives at least 10x
  fewer with local health awareness than without;
* every ``topologies/swim-*`` file gives its expected verdicts, with its own
  seed and with others, on ``sim``; and on ``local``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.checks.base import HOLDS, VIOLATED
from lab.checks.swim import SwimRun
from lab.runner import RunResult, run_scenario
from lab.topology import load_scenario, load_scenario_text

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.name for p in (ROOT / "topologies").glob("swim-*.yaml"))
BUG_SEEDS = 12

def template(name: str, *, nodes: int = 8, config: str = "", duration: str = "10s",
             faults: str = "[]", checks: str = "[accuracy]") -> str:
    """A scenario with fast timings (probe every 100 ms) and 5% loss; BUGS is filled per run."""
    return f"""
name: {name}
protocol: swim
nodes: {nodes}
config: {{preset: fast, {config}bugs: [BUGS]}}
network: {{delay: 1ms, jitter: 500us, loss: 5%}}
workload: {{kind: membership, duration: {duration}}}
faults: {faults}
checks: {checks}
"""


# Eight members under 5% loss: false suspicions happen and are refuted; a correct SWIM
# declares nobody dead here (0 of 20 seeds).
LOSSY = template("swim-lossy")

# n3 dies for good; n5 dies and comes back with a fresh view that still holds n3 alive at
# incarnation 0, which it pushes to a member as it rejoins.
REJOIN = template("swim-rejoin", duration="8s",
                  faults="[{at: 1s, crash: n3}, {at: 1.5s, crash: n5}, {at: 5s, restart: n5}]",
                  checks="[accuracy, {name: completeness, bound: 3s}]")

# One slow member (everything to n3 takes 500 ms, twice for 3 s) and SWIM's fixed suspicion
# timeout (suspicion_max_timeout_mult 1), so that only the awareness score stands between
# n3's late acks and a death.
SLOW_FIXED = template(
    "swim-slow-fixed", nodes=6, duration="8s", config="suspicion_max_timeout_mult: 1, ",
    faults="[{at: 0.5s, delay: {to: n3, delay: 500ms}, oneway: true, for: 3s}, "
           "{at: 4.5s, delay: {to: n3, delay: 500ms}, oneway: true, for: 3s}]")


def run(text: str, bug: str | None, seed: int) -> RunResult:
    return run_scenario(load_scenario_text(text.replace("BUGS", bug or "")), "sim", seed=seed,
                        quiet=True, write=False)


def verdict(r: RunResult, check: str) -> tuple[str, str, dict]:
    v = next(v for v in r.verdicts if v.check == check)
    return v.verdict, v.detail, v.data


def first_caught(text: str, bug: str, check: str) -> tuple[int, RunResult]:
    for seed in range(BUG_SEEDS):
        r = run(text, bug, seed)
        if verdict(r, check)[0] == VIOLATED:
            return seed, r
    pytest.fail(f"{bug}: {check} never violated in {BUG_SEEDS} seeds")


def states(r: RunResult, node: str, member: str) -> list[dict]:
    return [e["data"] for e in r.trace if e["ev"] == "state" and e["node"] == node
            and (e.get("data") or {}).get("member") == member]


# -- the named bugs --------------------------------------------------------------------------------

@pytest.mark.sim
def test_no_suspicion_kills_without_suspecting() -> None:
    seed, r = first_caught(LOSSY, "no_suspicion", "accuracy")
    for bad in verdict(r, "accuracy")[2]["violations"]:
        seen = states(r, bad["node"], bad["member"])
        # Straight to dead: the declarer never held that member suspect at that incarnation.
        assert not [d for d in seen if d["status"] == "suspect" and d["inc"] == bad["inc"]], (seed, bad)
    assert verdict(run(LOSSY, None, seed), "accuracy")[0] == HOLDS


@pytest.mark.sim
def test_no_refutation_lets_false_suspicions_run_out() -> None:
    seed, r = first_caught(LOSSY, "no_refutation", "accuracy")
    for bad in verdict(r, "accuracy")[2]["violations"]:
        member = bad["member"]
        assert states(r, bad["node"], member)[0]["status"] == "suspect", (seed, bad)
        # The accused never announced a higher incarnation: it never refuted.
        assert all(d["inc"] == 0 for d in states(r, member, member)), (seed, bad)
    control = run(LOSSY, None, seed)
    assert verdict(control, "accuracy")[0] == HOLDS
    assert any(d.get("refute") for n in control.scenario.node_names for d in states(control, n, n))


@pytest.mark.sim
def test_stale_alive_resurrects_a_crashed_member() -> None:
    seed, r = first_caught(REJOIN, "stale_alive_overrides_dead", "completeness")
    bad = verdict(r, "completeness")[2]["violations"][0]
    assert bad["member"] == "n3" and bad["alive_again_at"] is not None, (seed, bad)
    # What brought it back is an alive at the incarnation it died with, not a newer one.
    back = [d for d in states(r, bad["node"], "n3") if d["status"] == "alive"]
    assert back and back[0]["inc"] == 0
    control = run(REJOIN, None, seed)
    assert [verdict(control, c)[0] for c in ("completeness", "accuracy")] == [HOLDS, HOLDS]


@pytest.mark.sim
def test_no_local_health_makes_the_slow_member_accuse_healthy_ones() -> None:
    def false_by_slow(r: RunResult) -> int:
        swim = SwimRun(r.scenario.node_names, r.trace)
        return sum(1 for d in swim.classify(0.4) if d.kind == "false" and d.node == "n3")

    with_bug = without = 0
    for seed in range(3):
        r = run(SLOW_FIXED, "no_local_health", seed)
        assert verdict(r, "accuracy")[0] == VIOLATED, seed
        with_bug += false_by_slow(r)
        without += false_by_slow(run(SLOW_FIXED, None, seed))
    # The awareness score is what keeps the slow member from accusing: with it applied, n3's
    # own false accusations drop several-fold even on SWIM's short fixed suspicion timeout.
    assert with_bug >= 3 * max(without, 1), (with_bug, without)


# -- Lifeguard's result -------------------------------------------------------------------------------

@pytest.mark.sim
def test_local_health_awareness_cuts_false_positives_tenfold() -> None:
    fp = {}
    for variant in ("lifeguard", "classic"):
        s = load_scenario(str(ROOT / "topologies" / f"swim-slow-{variant}.yaml"))
        fp[variant] = [run_scenario(s, "sim", seed=seed, quiet=True, write=False).metrics["false_positives"]
                       for seed in range(4)]
    assert sum(fp["classic"]) >= 10, fp
    assert 10 * sum(fp["lifeguard"]) <= sum(fp["classic"]), fp


# -- the shipped scenarios --------------------------------------------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("name", SCENARIOS)
def test_shipped_scenario_verdicts_do_not_hang_on_the_seed(name: str) -> None:
    s = load_scenario(str(ROOT / "topologies" / name))
    want = {c: s.expect.get(c, HOLDS) for c in s.checks}
    for seed in (s.seed, 1, 2, 3):
        r = run_scenario(s, "sim", seed=seed, quiet=True, write=False)
        assert {v.check: v.verdict for v in r.verdicts} == want, (seed, [v.detail for v in r.verdicts])
        assert r.exit_code == 0


@pytest.mark.local
@pytest.mark.parametrize("name", SCENARIOS)
def test_shipped_scenario_on_local_processes(name: str, tmp_path: Path) -> None:
    s = load_scenario(str(ROOT / "topologies" / name))
    r = run_scenario(s, "local", out=tmp_path / "run", quiet=True)
    assert r.exit_code == 0, [(v.check, v.verdict, v.detail) for v in r.verdicts]
    assert {"detection_s", "false_positives", "false_positives_paused"} <= set(r.metrics)
