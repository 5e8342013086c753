"""Run one faulty simulated scenario and write its trace: ``python sim_determinism_child.py SEED OUT``.

tests/test_sim.py runs this in separate processes (with different
PYTHONHASHSEED) and compares the files byte for byte. Uses the Raft core when
it can be imported, else the register core's echo round trips.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # for bench/, which is not installed

from bench.sim_bench import ClosedLoopClients, protocol_available  # noqa: E402
from lab.scenario import LinkParams, NetworkSpec, NodeSpec, Scenario  # noqa: E402
from lab.sim import SimBackend  # noqa: E402
from lab.targets import partition_cuts  # noqa: E402
from lab.tracefile import write_trace  # noqa: E402

NODES = [f"n{i}" for i in range(1, 6)]


def faults(sim: SimBackend) -> None:
    """A fixed schedule touching every fault kind the simulator has."""
    at = sim.call_at
    at(1.0, lambda: sim.set_cuts(partition_cuts([["n1", "n2"], ["n3", "n4", "n5"]])))
    at(2.0, lambda: sim.set_cuts(frozenset()))
    at(2.5, lambda: sim.crash("n1"))
    at(3.0, lambda: sim.set_link("n2", "n3", LinkParams(delay=0.02, jitter=0.01, loss=0.2, reorder=0.3,
                                                        distribution="exponential")))
    at(3.5, lambda: sim.restart("n1"))
    at(4.0, lambda: sim.pause("n4"))
    at(4.6, lambda: sim.resume("n4"))
    at(5.0, lambda: sim.set_cuts(partition_cuts([["n5"], NODES[:4]], oneway=True)))
    at(5.5, lambda: sim.set_cuts(frozenset()))


def run(seed: int, trace: str | None = None, send_window: float | None = None) -> SimBackend:
    """The faulty run of ``seed``, at trace level ``trace`` (default: ZLAB_TRACE, else all),
    run to its end; ``send_window`` overrides the simulator's."""
    protocol = "raft" if protocol_available("raft") else "register"
    scenario = Scenario(name="determinism", protocol=protocol, nodes=[NodeSpec(n) for n in NODES],
                        network=NetworkSpec(default=LinkParams(delay=0.003, jitter=0.002, loss=0.02,
                                                               duplicate=0.02, reorder=0.05)))
    sim = SimBackend(scenario, seed, "/nonexistent", trace=trace)
    if send_window is not None:
        sim.send_window = send_window
    sim.start()
    faults(sim)
    if protocol == "raft":
        ClosedLoopClients(sim, clients=5, until=6.0, timeout=0.3, seed=seed).start()
    else:
        rng = random.Random(f"{seed}/echo")
        for i in range(600):
            src, dst = rng.sample(NODES, 2)
            op = {"f": "echo", "peer": dst} if i % 3 else {"f": "write", "value": i}
            sim.call_at(i * 0.01, lambda s=src, o=op: sim.submit(s, o, lambda r: None))
    sim.run_until(7.0)
    return sim


def main(seed: int, out: str) -> None:
    write_trace(run(seed).trace_events(), out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
