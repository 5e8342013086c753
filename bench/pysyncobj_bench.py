"""The Raft anchor: PySyncObj, 3 processes on loopback, journal file on disk."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ratesearch import SPAN, best_window

NODE = str(Path(__file__).with_name("pysyncobj_node.py"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cluster(modes: list[list[str]]) -> list[dict]:
    """Start one node per entry of ``modes`` and return each one's JSON line."""
    ports = _free_ports(len(modes))
    addrs = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    with tempfile.TemporaryDirectory(prefix="zlab-pso-") as tmp:
        try:
            for i, mode in enumerate(modes):
                others = addrs[:i] + addrs[i + 1:]
                cmd = [sys.executable, NODE, *mode, addrs[i], f"{tmp}/journal{i}", *others]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              text=True))
            outs = []
            for p in procs:
                stdout, _ = p.communicate(timeout=120)
                outs.append(json.loads(stdout.strip().splitlines()[-1]))
            return outs
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def achieved(window: int, span: float = SPAN) -> float:
    """ops/s PySyncObj's leader completes with ``window`` commands in flight (bench/ratesearch.py)."""
    outs = _cluster([["window", str(window), str(span)]] * 3)
    return next(o["ops_per_s"] for o in outs if "ops_per_s" in o)


def throughput() -> dict:
    best, window, tried = best_window(achieved)
    return {"ops_per_s": best, "window": window, "tried": tried}


def sequential(count: int = 300) -> dict:
    outs = _cluster([["seq", str(count), "0"]] * 3)
    samples = sorted(next(o["samples"] for o in outs if "samples" in o))
    return {"p50_ms": statistics.median(samples) * 1e3,
            "p99_ms": samples[int(len(samples) * 0.99)] * 1e3, "count": len(samples)}
