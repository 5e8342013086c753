"""PBFT on the local runtime (4 agents, f = 1, durable log) beside the bound its signature checks
set on this machine, and beside zlab's Raft on as many nodes, measured in one command.

Throughput is PySyncObj's method, as for Raft (bench/ratesearch.py): writes offered open-loop
in one-second bursts, the highest rate at which >= 90% come back ok. A PBFT write is signed
by the client and sent to all four replicas, and is ok once f+1 = 2 of them answered alike
(the client rule the runner's clients follow). Twice: with batching (``batch_size`` 16, the
default) and without (``batch_size`` 1).

The bound: every replica checks the client's signature on every request and its peers'
signatures on their messages, and one core verifies at most pynacl's single-core rate (both
measured here). So PBFT cannot go faster than ``verify rate x cores / verifications per op``,
the verifications of all replicas together, counted by the replicas themselves in a run at
half the best rate, with the full trace on so messages per op come from its ``send`` events.
The goal is >= 50% of that bound. Raft: 4 nodes, the same method, the same command.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from bench.anchors import nacl_verify_rate
from bench.localrun import Client, cluster, open_loop, success_at, wait_for_role
from bench.raft_bench import leader_client
from bench.ratesearch import max_rate
from lab.metrics import server_messages

NODES = 4
PBFT = """
name: bench-pbft
protocol: pbft
nodes: {nodes}
config: {{batch_size: {batch}}}
"""
RAFT = """
name: bench-raft-{nodes}
protocol: raft
nodes: {nodes}
config: {{election_timeout: [300ms, 600ms], heartbeat: 50ms}}
"""


def pbft_client(backend: Any) -> Client:
    wait_for_role(backend, "primary")
    return Client(backend)


def profile(batch: int, rate: int, seconds: float = 2.0) -> dict[str, Any]:
    """A run at ``rate`` with the full trace: verifications and messages per ok write."""
    with cluster(PBFT.format(nodes=NODES, batch=batch), trace="all") as b:
        client = pbft_client(b)
        before = sum(b.status(n)["verified"] for n in b.scenario.node_names)
        open_loop(b, client, rate, seconds)
        verified = sum(b.status(n)["verified"] for n in b.scenario.node_names) - before
        msgs = server_messages(b.trace_events(), b.scenario.node_names) or 0
    ok = max(client.ok, 1)
    return {"rate": rate, "ok": client.ok, "verifications_per_op": verified / ok,
            "msgs_per_op": msgs / ok}


def run(seconds: float = 4.0) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    nacl = nacl_verify_rate()["verify_per_s"]
    print(f"   pynacl ed25519 verify, one core: {nacl:.0f}/s; cores: {cores}")
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "verify_per_s": nacl,
                           "cores": cores, "nodes": NODES}
    raft, tried = max_rate(success_at(partial(cluster, RAFT.format(nodes=NODES)), leader_client,
                                      seconds), 100, 80000)
    print(f"   zlab Raft, {NODES} nodes: max rate with >= 90% success {raft}/s")
    out["raft"] = {"max_rps": raft, "tried": tried}
    for label, batch in (("batched", 16), ("unbatched", 1)):
        best, tried = max_rate(success_at(partial(cluster, PBFT.format(nodes=NODES, batch=batch)),
                                          pbft_client, seconds), 50, 20000)
        prof = profile(batch, max(50, best // 2))
        bound = nacl * cores / prof["verifications_per_op"] if prof["verifications_per_op"] else None
        share = best / bound if bound else None
        vs_raft = best / raft if raft else None
        print(f"   PBFT {label} (batch_size {batch}): max rate {best}/s; "
              f"{prof['verifications_per_op']:.2f} verifications and {prof['msgs_per_op']:.1f} "
              f"messages per op; bound {bound or 0:.0f}/s, reached {share or 0:.0%} (goal >= 50%); "
              f"{vs_raft or 0:.2f}x zlab Raft")
        out[label] = {"batch_size": batch, "max_rps": best, "tried": tried, "profile": prof,
                      "bound_rps": bound, "share_of_bound": share, "vs_raft": vs_raft}
    return out
