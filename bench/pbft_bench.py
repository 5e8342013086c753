"""PBFT on the local runtime (4 agents, f = 1, durable log) beside the bound its signature checks
set on this machine, and beside zlab's Raft on as many nodes, measured in one command.

Trials alternate (bench/trials.py): Raft, PBFT with batching, PBFT without, then again.

* throughput: as for Raft (bench/ratesearch.py), ops/s achieved by a closed loop of a window
  of writes in flight, the best of the same windows. A PBFT write is signed by the client,
  sent to the primary and f = 1 more replica (to all four on a retry, every ``client_retry``)
  and done once f+1 = 2 of them answered alike (the client rule the runner's clients follow;
  the other replicas check it in the pre-prepare); a Raft write goes to its leader. With batching: PBFT's
  default ``batch_size`` (16); without: ``batch_size: 1``.
* the bound: every replica checks the client's signature on every request and its peers'
  signatures on their messages, and one core verifies at most pynacl's single-core rate
  (measured here). So PBFT cannot beat ``verify rate x cores / verifications per op``, the
  verifications of all replicas together per completed write (the replicas count them).
  The goal is >= 50% of that bound.
* messages per op: node-to-node ``send`` events of the run's trace per completed write
  (so it needs the default trace level, ``all``).
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench.anchors import nacl_verify_rate
from bench.raft_bench import Writer, cluster, trace_level, zlab_throughput
from bench.ratesearch import best_window
from bench.trials import alternate, ratio, summarize
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
BATCHES = {"batched": 16, "unbatched": 1}


def pbft_throughput(batch: int) -> dict[str, Any]:
    """The best window's ops/s, with that run's verifications and messages per completed write."""
    runs: dict[int, dict[str, Any]] = {}

    def at(window: int) -> float:
        with cluster(True, PBFT.format(nodes=NODES, batch=batch)) as b:
            w = Writer(b, None)
            ops = w.closed_loop(window)
            names = b.scenario.node_names
            verified = sum((b.status(n) or {}).get("verified", 0) for n in names)
            msgs = server_messages(b.trace_events(), names)
        done = max(w.ok, 1)
        runs[window] = {"verifications_per_op": verified / done,
                        "msgs_per_op": None if msgs is None else msgs / done}
        return ops
    best, window, tried = best_window(at)
    return {"ops_per_s": best, "window": window, "tried": tried, **runs[window]}


def run(trials: int | None = None) -> dict[str, Any]:
    kw = {"trials": trials} if trials else {}
    cores = os.cpu_count() or 1
    print(f"   {NODES} local nodes each; PBFT closed loop under the f+1 client rule, Raft at its "
          f"leader; trace level {trace_level()!r}; {cores} cores")
    measures = [("raft", lambda: zlab_throughput(True, RAFT.format(nodes=NODES))),
                *((label, lambda b=batch: pbft_throughput(b)) for label, batch in BATCHES.items()),
                ("verify", nacl_verify_rate)]
    res = alternate(measures, **kw)
    verify = summarize(res["verify"], "verify_per_s")["median"]
    raft = summarize(res["raft"], "ops_per_s")
    out: dict[str, Any] = {"method": __doc__.strip().splitlines()[0], "nodes": NODES,
                           "cores": cores, "trace_level": trace_level(),
                           "verify_per_s": verify, "raft": {"throughput": raft, "trials": res["raft"]}}
    for label, batch in BATCHES.items():
        trials_ = res[label]
        # Each trial against its own bound (its own verifications per op), then the median.
        shares = [ratio(t["ops_per_s"], verify * cores / t["verifications_per_op"])
                  for t in trials_ if t["verifications_per_op"]]
        vs_raft = [ratio(t["ops_per_s"], r["ops_per_s"]) for t, r in zip(trials_, res["raft"], strict=True)]
        vpo = summarize(trials_, "verifications_per_op")["median"]
        row = {"batch_size": batch, "throughput": summarize(trials_, "ops_per_s"),
               "verifications_per_op": vpo, "msgs_per_op": summarize(trials_, "msgs_per_op")["median"],
               "bound_ops_per_s": verify * cores / vpo if vpo else None,
               "share_of_bound": statistics.median(shares) if shares else None, "shares": shares,
               "vs_raft": statistics.median(vs_raft), "vs_raft_ratios": vs_raft, "trials": trials_}
        out[label] = row
        print(f"   PBFT {label} (batch_size {batch}): {row['throughput']['median']:,.0f} ops/s; "
              f"{vpo:.2f} verifications and {row['msgs_per_op'] or 0:.1f} messages per op; bound "
              f"{row['bound_ops_per_s'] or 0:,.0f}/s ({verify:,.0f} verify/s x {cores} cores): "
              f"{(row['share_of_bound'] or 0):.0%} of it (goal >= 50%); "
              f"{row['vs_raft']:.2f}x zlab Raft's {raft['median']:,.0f} ops/s")
    out["readme_rows"] = readme_rows(out)
    return out


def readme_rows(out: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label, what in (("batched", "batching (`batch_size` 16)"), ("unbatched", "no batching")):
        r = out[label]
        trials = ", ".join(f"{v:,.0f}" for v in r["throughput"]["trials"])
        rows.append([f"PBFT throughput, {out['nodes']} local replicas, {what}",
                     f"{r['throughput']['median']:,.0f}/s (**{(r['share_of_bound'] or 0):.0%}** of "
                     f"the bound; trials {trials}); {r['verifications_per_op']:.2f} verifications, "
                     f"{r['msgs_per_op'] or 0:.1f} messages per op",
                     f"bound {r['bound_ops_per_s'] or 0:,.0f}/s (pynacl {out['verify_per_s']:,.0f} "
                     f"verify/s × {out['cores']} cores ÷ verifications per op); zlab Raft, "
                     f"{out['nodes']} nodes: {out['raft']['throughput']['median']:,.0f}/s "
                     f"(PBFT **{r['vs_raft']:.2f}×**)", "≥ 50% of the bound"])
    return rows
