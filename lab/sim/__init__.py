"""The deterministic simulator: every node a core object on one virtual clock (docs/sim.md)."""

from lab.sim.backend import SimBackend, SimContext
from lab.sim.network import NetworkModel, partition_cuts

__all__ = ["NetworkModel", "SimBackend", "SimContext", "partition_cuts"]
