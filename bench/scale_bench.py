"""A thousand simulated nodes: what a node and a link cost, and how long gossip takes.

Each configuration runs in a child process of its own (``python -m bench.scale_bench
--child NAME``), so its peak RSS is its own and not the bench's. A child builds the lab,
starts it (memory traced: bytes per node and per directed link), then runs it for its
simulated seconds with broadcasts (gossip) or reads and writes (register) submitted at
random nodes, and reports wall time and peak RSS. Memory figures are steady on a busy
machine; wall times are not.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from bench.sim_bench import scenario
from lab.sim import SimBackend

NODES = 1000
#: name -> (protocol, config, simulated seconds of load, ops/s submitted)
CONFIGS: dict[str, tuple[str, dict[str, Any], float, float]] = {
    "register": ("register", {}, 2.0, 100.0),
    "gossip": ("gossip", {"preset": "lan"}, 10.0, 20.0),
}


LINK_OBJECT_BYTES = 200


def measure(name: str, nodes: int = NODES, seconds: float | None = None) -> dict[str, Any]:
    """Start ``nodes`` nodes of configuration ``name`` and run them; figures of this process."""
    protocol, config, default_seconds, rate = CONFIGS[name]
    seconds = default_seconds if seconds is None else seconds
    sc = scenario(protocol, nodes=nodes)
    sc.config = dict(config)
    t0 = time.perf_counter()
    tracemalloc.start()
    sim = SimBackend(sc, 1, "/nonexistent")
    sim.start()
    started, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    start_s = time.perf_counter() - t0
    names = sc.node_names
    rng = random.Random(1)
    for i in range(int(seconds * rate)):
        node = names[rng.randrange(nodes)]
        op = ({"f": "broadcast", "value": i + 1} if protocol == "gossip"
              else {"f": "write", "key": "k", "value": i} if i % 2 else {"f": "read", "key": "k"})
        sim.call_at(i / rate, lambda n=node, o=op: sim.submit(n, o, lambda r: None))
    t1 = time.perf_counter()
    sim.run_until(seconds)
    run_s = time.perf_counter() - t1
    links = nodes * (nodes - 1)
    return {"protocol": protocol, "nodes": nodes, "links": links, "sim_seconds": seconds,
            "start_s": round(start_s, 3), "run_wall_s": round(run_s, 3),
            "sim_per_wall": round(seconds / run_s, 3) if run_s else None,
            "bytes_at_start": started, "bytes_per_node": round(started / nodes),
            "links_with_objects": sim.network.links_kept(),
            # a link with an object of its own: the object, its key and its dict slot
            "bytes_per_link": round(sim.network.links_kept() * LINK_OBJECT_BYTES / links, 3),
            "trace_events": len(sim._events),
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident set since its exec. Not getrusage's ru_maxrss: Linux carries
    that over from the forked parent across exec, so a child of a big bench process reported the
    parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(name: str, **kw: Any) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.scale_bench", "--child", name]
    args += [f"--{k}={v}" for k, v in kw.items()]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(trials: int | None = None) -> dict[str, Any]:
    """One trial per configuration: each takes minutes, and its memory figures do not wobble."""
    del trials
    out: dict[str, Any] = {}
    rows = []
    for name in CONFIGS:
        r = out[name] = _child(name)
        print(f"   {r['nodes']} simulated {r['protocol']} nodes: start {r['start_s']} s, "
              f"{r['bytes_per_node']} B per node at start, {r['links_with_objects']} of {r['links']} links "
              f"hold an object; {r['sim_seconds']} simulated s in {r['run_wall_s']} wall s; "
              f"peak RSS {r['peak_rss_mb']} MB", flush=True)
        rows.append([f"simulator, {r['nodes']} {r['protocol']} nodes, {r['sim_seconds']:g} s",
                     f"{r['run_wall_s']} wall s, peak {r['peak_rss_mb']} MB RSS, "
                     f"{r['bytes_per_node']} B/node at start, {r['bytes_per_link']} B/link", "—",
                     "minutes, < 1 GB"])
    out["readme_rows"] = rows
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        extra = dict(a[2:].split("=", 1) for a in sys.argv[3:])
        print(json.dumps(measure(sys.argv[2], nodes=int(extra.get("nodes", NODES)),
                                 seconds=float(extra["seconds"]) if "seconds" in extra else None)))
    else:
        run()
