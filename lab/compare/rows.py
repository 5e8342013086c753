"""The rows of ``zlab compare``: which protocols it measures, in which shape.

A row is one protocol in one shape: a scenario file with no faults (its topology, config,
workload and checks; ``topologies/compare/<row>.yaml``), the fault target that is its
"leader" (the node the suite crashes, cuts off and pauses), and the tutorial row (§8.1)
whose opinions stand beside the measurements. A protocol joins the comparison with one
:func:`register` call here and its scenario file; the command itself names no protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "topologies" / "compare"

# The tutorial's table (§8.1), its words in English. Multi-Paxos has no row of its own
# there: it stands beside Paxos's.
TUTORIAL: dict[str, dict[str, str]] = {
    "Paxos": {"consistency": "strong", "availability": "medium", "partition": "excellent",
              "performance": "medium", "complexity": "very high"},
    "Raft": {"consistency": "strong", "availability": "medium", "partition": "excellent",
             "performance": "medium", "complexity": "medium"},
    "PBFT": {"consistency": "strong", "availability": "medium",
             "partition": "excellent (Byzantine)", "performance": "fairly low",
             "complexity": "high"},
    "2PC": {"consistency": "strong", "availability": "poor", "partition": "poor",
            "performance": "high", "complexity": "low"},
    "3PC": {"consistency": "strong", "availability": "medium", "partition": "medium",
            "performance": "medium", "complexity": "medium"},
    "Gossip": {"consistency": "eventual", "availability": "excellent", "partition": "excellent",
               "performance": "excellent", "complexity": "low"},
}


@dataclass(frozen=True)
class Row:
    name: str                    # the row's name in the table (and its scenario file's stem)
    protocol: str                # the core it runs (nodes/protocols)
    leader: str                  # the fault target the suite hits: leader, primary, coordinator, n1, random
    tutorial: str                # its row in TUTORIAL
    note: str = ""               # what sets the row apart, shown under the table
    sources: tuple[str, ...] = field(default=())   # files under nodes/protocols/ its complexity counts
    shape: Path | None = None    # its scenario file, when not topologies/compare/<name>.yaml

    @property
    def scenario(self) -> Path:
        return self.shape or SHAPES / f"{self.name}.yaml"


_ROWS: dict[str, Row] = {}


def register(row: Row) -> None:
    """Add ``row`` to the comparison (a later registration of the same name replaces it)."""
    _ROWS[row.name] = row


def select(names: list[str] | None = None) -> list[Row]:
    """Every registered row in registration order, or the rows ``names`` picks. A protocol's
    name picks every row of that protocol (``pbft``: pbft and pbft-byzantine)."""
    if not names:
        return list(_ROWS.values())
    out: list[Row] = []
    for name in names:
        picked = [r for r in _ROWS.values() if name in (r.name, r.protocol)]
        if not picked:
            known = sorted({*_ROWS, *(r.protocol for r in _ROWS.values())})
            raise ConfigError(f"unknown protocol or row {name!r} (known: {', '.join(known)})",
                              field="--protocols")
        out += [r for r in picked if r not in out]
    return out


register(Row("paxos", "paxos", "n1", "Paxos", "single decree: every op learns the one chosen value",
             ("paxos.py", "synod.py")))
register(Row("multipaxos", "multipaxos", "leader", "Paxos", sources=("multipaxos.py", "synod.py")))
register(Row("raft", "raft", "leader", "Raft", sources=("raft.py",)))
register(Row("pbft", "pbft", "primary", "PBFT", "4 replicas, f = 1",
             ("pbft.py", "pbft_msgs.py", "pbft_viewchange.py", "pbft_checkpoint.py")))
register(Row("pbft-byzantine", "pbft", "primary", "PBFT",
             "4 replicas, n1 Byzantine (equivocates, lies to clients): each fault is a second one",
             ("pbft.py", "pbft_msgs.py", "pbft_viewchange.py", "pbft_checkpoint.py",
              "pbft_byzantine.py")))
register(Row("twopc", "twopc", "coordinator", "2PC", sources=("twopc.py", "commit.py")))
register(Row("threepc", "threepc", "coordinator", "3PC", sources=("threepc.py", "commit.py")))
register(Row("gossip", "gossip", "random", "Gossip", "no leader: the suite hits a random node",
             ("gossip.py",)))
