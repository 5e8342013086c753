"""The machine's floors: raw pyzmq round trip and pynacl's ed25519 verify rate (medians of trials)."""

from __future__ import annotations

from bench.anchors import nacl_verify_rate, zmq_round_trip
from bench.trials import alternate, summarize


def run(trials: int | None = None) -> dict:
    res = alternate([("zmq", zmq_round_trip), ("nacl", nacl_verify_rate)],
                    **({"trials": trials} if trials else {}))
    p50, p99 = summarize(res["zmq"], "p50_us"), summarize(res["zmq"], "p99_us")
    verify = summarize(res["nacl"], "verify_per_s")
    print(f"   pyzmq DEALER/ROUTER round trip (tcp loopback): p50 {p50['median']:.0f} us, "
          f"p99 {p99['median']:.0f} us")
    print(f"   pynacl ed25519 verify: {verify['median']:.0f}/s")
    rows = [["pyzmq DEALER/ROUTER round trip, loopback (the floor under any RPC)", "—",
             f"p50 {p50['median']:.0f} µs, p99 {p99['median']:.0f} µs", "—"],
            ["ed25519 verify, one core", "—", f"{verify['median']:,.0f}/s (pynacl)", "—"]]
    return {"zmq_round_trip": {"p50_us": p50["median"], "p99_us": p99["median"], "trials": res["zmq"]},
            "nacl_verify": {"verify_per_s": verify["median"], "trials": res["nacl"]},
            "readme_rows": rows}
