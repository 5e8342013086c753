"""The machine's floors: raw pyzmq round trip and pynacl's ed25519 verify rate."""

from __future__ import annotations

from bench.anchors import nacl_verify_rate, zmq_round_trip


def run() -> dict:
    rt = zmq_round_trip()
    nacl = nacl_verify_rate()
    print(f"   pyzmq DEALER/ROUTER round trip (tcp loopback): p50 {rt['p50_us']:.0f} us, "
          f"p99 {rt['p99_us']:.0f} us")
    print(f"   pynacl ed25519 verify: {nacl['verify_per_s']:.0f}/s")
    rows = [["pyzmq DEALER/ROUTER round trip, loopback (the floor under any RPC)", "—",
             f"p50 {rt['p50_us']:.0f} µs, p99 {rt['p99_us']:.0f} µs", "—"],
            ["ed25519 verify, one core", "—", f"{nacl['verify_per_s']:,.0f}/s (pynacl)", "—"]]
    return {"zmq_round_trip": rt, "nacl_verify": nacl, "readme_rows": rows}
