"""`make bench` / `python -m bench [section ...]`: every figure beside its anchor, measured now.

Sections: anchors (pyzmq round trip, pynacl verify), sim (simulated s per wall s),
scale (1,000 simulated nodes: bytes per node and per link, wall time, peak RSS),
raft (zlab local Raft vs PySyncObj), paxos (Multi-Paxos vs zlab's Raft, messages per op),
pbft (zlab local PBFT vs its signature bound and zlab's Raft), docker (lab start vs bare
containers), swim (Lifeguard's false positives and detection time, on the simulator),
gossip (rounds vs N against a Monte Carlo and Serf's formula, Gossip Glomers 3d, 100 local
and 30 docker nodes).
Figures are printed and written to bench/results.json (sections run now replace their
earlier figures; the others are kept), then `python -m bench.readme_table` puts them in
the README. Each figure is the median of alternating trials (bench/trials.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

SECTIONS = {
    "anchors": "bench.anchor_section",
    "sim": "bench.sim_bench",
    "scale": "bench.scale_bench",
    "raft": "bench.raft_bench",
    "paxos": "bench.paxos_bench",
    "pbft": "bench.pbft_bench",
    "docker": "bench.docker_bench",
    "swim": "bench.swim_bench",
    "gossip": "bench.gossip_bench",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        results: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    except (OSError, ValueError):
        results = {}
    results.update({"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    failed = False
    for name in args.sections or list(SECTIONS):
        print(f"== {name}", flush=True)
        t = time.time()
        try:
            results[name] = importlib.import_module(SECTIONS[name]).run()
        except Exception as e:  # a section that cannot run is reported, the others still run
            failed = True
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"   {name}: could not run: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"   ({time.time() - t:.0f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"figures written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
