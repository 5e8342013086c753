"""A Raft leader cut off by a partition loses no acknowledged write.

The leader is isolated from the other two nodes. A write sent to it is taken
but can never commit (no majority answers it): its outcome is unknown. The
majority elects a new leader and goes on; after the heal the old leader steps
down and drops its uncommitted entry, and nothing acknowledged is lost.
"""

import pytest

from zlab import Unknown

RAFT = """
name: raft-isolated-leader
protocol: raft
nodes: 3
config: {election_timeout: [300ms, 600ms], heartbeat: 50ms}
network: {delay: 2ms}
checks: [election_safety, log_matching, leader_completeness, state_machine_safety, linearizable]
settle: 500ms
"""


@pytest.mark.parametrize("backend", ["sim", "local", pytest.param("docker", marks=pytest.mark.docker)])
def test_isolated_leader_loses_no_acknowledged_write(zlab_lab, backend):
    lab = zlab_lab(RAFT, backend=backend, timeout="2s")
    old = lab.wait_for_leader(timeout=10)
    lab.put("x", 1)                             # acknowledged: a majority has it

    lab.partition(old, "rest")                  # the leader alone against the other two
    with pytest.raises(Unknown):                # it takes the write but cannot commit it
        lab.put("x", 2, node=old, timeout="1s")
    lab.wait_for_leader(timeout=10, exclude=old)  # the majority elects a new leader ...
    lab.put("x", 3)                             # ... which commits this one

    lab.heal()
    assert lab.get("x") == 3
    lab.assert_safe()                           # every check holds, final reads included
