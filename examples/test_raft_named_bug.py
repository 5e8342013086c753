"""A deliberately broken Raft is caught, and the failure says why and where to look.

``no_election_restriction`` lets a node vote for a candidate whose log is
behind its own. A follower cut off while three writes commit keeps
campaigning alone, so its term climbs; after the heal its next vote request
deposes the leader, and without the restriction the others elect it. Its
empty log then overwrites the committed writes. ``assert_safe`` fails with
each checker's verdict and the run directory it wrote (trace, history,
report.md, the Perfetto trace and the plots).
"""

import pytest

from zlab import Unsafe

RAFT = """
name: raft-stale-leader
protocol: raft
nodes: 3
config: {election_timeout: [300ms, 600ms], heartbeat: 50ms}
network: {delay: 2ms}
checks: [election_safety, log_matching, leader_completeness, state_machine_safety, linearizable]
settle: 500ms
"""
# The same test passes on "docker" too; the suite leaves it out to save its minute.
BACKENDS = ["sim", "local"]


def elect_a_stale_node(lab, rounds=3):
    """Let a follower fall behind and come back campaigning; True once it leads."""
    for r in range(rounds):
        leader = lab.wait_for_leader(timeout=10)
        stale = next(n for n in lab.nodes if n != leader)
        lab.partition(stale, "rest")            # it misses three acknowledged writes
        for i in range(3):
            lab.put("x", 10 * r + i)
        lab.sleep(1)                            # alone, it times out again and again: its term climbs
        lab.heal()
        lab.sleep("800ms")
        if lab.leader() == stale:
            return True
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raft_without_the_election_restriction_loses_acknowledged_writes(zlab_lab, backend, tmp_path):
    lab = zlab_lab(RAFT, backend=backend, timeout="2s", results=tmp_path,
                   config={"bugs": ["no_election_restriction"]})
    assert elect_a_stale_node(lab)
    with pytest.raises(Unsafe) as caught:
        lab.assert_safe()
    failure = caught.value
    assert failure.verdicts["leader_completeness"].verdict == "violated"
    assert "leader_completeness: violated" in str(failure)      # the checker's own detail ...
    assert f"run directory: {failure.run_dir}" in str(failure)  # ... and where the evidence is
    for artefact in ("report.md", "trace.jsonl", "history.jsonl", "checks.json", "trace.perfetto.json"):
        assert (failure.run_dir / artefact).exists()


def test_the_same_test_passes_on_a_correct_raft(zlab_lab):
    lab = zlab_lab(RAFT, backend="sim", timeout="2s")
    assert not elect_a_stale_node(lab)          # the restriction keeps the stale node out
    lab.assert_safe()
