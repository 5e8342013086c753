"""The control protocol between the orchestrator and an agent (shared by both ends).

Transport: the agent binds a ROUTER with CurveZMQ server keys; only the lab's
client public key passes its ZAP check. The orchestrator connects a DEALER with
the lab's client keys. Every frame is one msgpack map.

Requests carry ``op`` and an ``id`` the client picks; the answer carries the
same ``id``. ``submit`` is answered once the core replies (maybe never: a crashed
or partitioned node simply does not answer and the caller times out).

=============  =====================================  ======================================
op             request fields                         answer fields
=============  =====================================  ======================================
hello          --                                     node, protocol, pid, boot, lab
status         --                                     node, core (the core's status()),
                                                      counters, rules, lc, now
submit         req (the client op dict)               result (ok / fail / info dict)
set_rules      cut_out, cut_in, links, reset          rules (as now in force)
read_file      name (trace / log), offset, max        data (bytes), offset (next), size
shutdown       --                                     (answered, then the agent exits)
=============  =====================================  ======================================

Any answer may instead carry ``error`` (a string) when the request was wrong.
"""

from __future__ import annotations

from typing import Any

import msgpack

OPS = frozenset({"hello", "status", "submit", "set_rules", "read_file", "shutdown"})
FILES = {"trace": "trace.jsonl", "log": "agent.log"}   # what read_file may read, in the data dir
READ_MAX = 1 << 20                                      # bytes per read_file answer
ZAP_DOMAIN = "zlab"


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    """Decode one control frame; ValueError when it is not a map with a known ``op`` or an answer."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 -- msgpack raises several types for garbage
        raise ValueError(f"undecodable control frame: {e}") from None
    if not isinstance(msg, dict):
        raise ValueError("control frame is not a map")
    return msg


def request(op: str, rid: int, **fields: Any) -> bytes:
    return pack({"op": op, "id": rid, **fields})
