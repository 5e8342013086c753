"""Three-phase commit is non-blocking only if nodes merely crash: a partition splits it.

p2's YES vote crawls to the coordinator over a slow link. While it is on its
way, a one-way partition cuts everything *to* p2. The coordinator gets both
votes and sends PreCommit: p1 gets it, p2 does not. The coordinator's ack
timeout ends in DoCommit and p1 commits; p2, uncertain and alone, runs the
termination protocol, hears nobody, and aborts. One transaction, committed on
p1 and aborted on p2: money is created or destroyed.
"""

import pytest

THREEPC = """
name: 3pc-partition-split
protocol: threepc
nodes:
  - {name: coord, role: coordinator}
  - {name: p1, role: participant}
  - {name: p2, role: participant}
config:
  accounts: 2                   # account 0 on p1, account 1 on p2
  initial_balance: 100
  vote_timeout: 2500ms          # above p2's slow vote
  ack_timeout: 500ms
  ready_timeout: 3s
  precommit_timeout: 1s
  termination_timeout: 200ms
network:
  delay: 2ms
  links:
    - {from: p2, to: coord, delay: 2s, oneway: true}   # slow: time to cut p2 off under load
checks: [atomicity, conservation, no_commit_after_abort]
settle: 500ms
"""


@pytest.mark.parametrize("backend", ["sim", "local", pytest.param("docker", marks=pytest.mark.docker)])
def test_3pc_splits_under_partition(zlab_lab, backend):
    lab = zlab_lab(THREEPC, backend=backend, timeout="5s")
    lab.partition(["coord", "p1"], ["p2"], oneway=True, at="300ms")   # while p2's YES crawls
    assert lab.transfer(0, 1, 10)               # the coordinator saw two YES votes: committed
    # p2 never hears PreCommit: it times out, runs the termination protocol alone, aborts
    lab.wait_until(lambda: lab.status()["p2"]["open"] == 0, timeout=5)

    verdicts = lab.check()                      # heals, settles, reads every balance
    assert sorted(verdicts.violated) == ["atomicity", "conservation", "no_commit_after_abort"], verdicts
