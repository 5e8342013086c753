"""Two-phase commit blocks while its coordinator is down.

The participants' votes crawl to the coordinator over a slow link, so a
transaction spends most of its life prepared: redo record written, accounts
locked, vote sent. The coordinator crashes in that window. A prepared
participant may neither commit (the other may have voted no) nor abort (the
coordinator may have decided commit): it waits, holding its locks, until the
coordinator restarts, finds the transaction undecided in its log and aborts it.
"""

import pytest

from zlab import Unknown

TWOPC = """
name: 2pc-coordinator-down
protocol: twopc
nodes:
  - {name: coord, role: coordinator}
  - {name: p1, role: participant}
  - {name: p2, role: participant}
config:
  accounts: 2                   # account 0 on p1, account 1 on p2
  initial_balance: 100
  vote_timeout: 3s              # above the slow vote
  decision_timeout: 300ms       # how often a prepared participant asks for the decision
network:
  delay: 2ms
  links:
    - {from: [p1, p2], to: coord, delay: 2s, oneway: true}   # slow: time to crash it under load
checks: [atomicity, conservation, no_commit_after_abort, {name: nonblocking, threshold: 1s}]
expect: {nonblocking: violated}
settle: 500ms
"""


def undecided(lab):
    return {n: row["open"] for n, row in lab.status().items() if row.get("role") == "participant"}


@pytest.mark.parametrize("backend", ["sim", "local", pytest.param("docker", marks=pytest.mark.docker)])
def test_2pc_blocks_while_its_coordinator_is_down(zlab_lab, backend):
    lab = zlab_lab(TWOPC, backend=backend, timeout="5s")
    assert lab.transfer(0, 1, 10)               # committed: the happy path takes one slow vote

    lab.crash("coordinator", at="300ms")        # while the next transaction's votes crawl
    with pytest.raises(Unknown):
        lab.transfer(0, 1, 10, timeout="1500ms")
    lab.sleep("500ms")
    assert undecided(lab) == {"p1": 1, "p2": 1}  # both prepared, locks held, nobody to ask

    lab.restart("coordinator")                  # it aborts what its log left undecided
    lab.wait_until(lambda: undecided(lab) == {"p1": 0, "p2": 0}, timeout=5)
    verdicts = lab.assert_safe()                # atomicity and conservation hold ...
    assert verdicts["nonblocking"].verdict == "violated"    # ... but the participants blocked
