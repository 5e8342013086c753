"""The deterministic simulator: every node a core object on one virtual clock (docs/sim.md)."""

from lab.sim.backend import SimBackend, SimContext
from lab.sim.network import NetworkModel

__all__ = ["NetworkModel", "SimBackend", "SimContext"]
