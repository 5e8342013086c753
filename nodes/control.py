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
hello          --                                     node, protocol, pid, boot, lab,
                                                      connected (peers whose link is up)
status         --                                     node, core (the core's status()),
                                                      counters, rules, lc, now, connected
submit         req (the client op dict)               result (ok / fail / info dict)
set_rules      cut_out, cut_in, links, reset          rules (as now in force)
read_file      name (trace / log), offset, max        data (bytes), offset (next), size
shutdown       --                                     (answered, then the agent exits)
=============  =====================================  ======================================

Any answer may instead carry ``error`` (a string) when the request was wrong.
Answers due to one client in one loop iteration travel as one frame: a msgpack
array of answer maps (a single answer is the map alone). Requests may travel
the same way: the orchestrator sends the submits it made since it last waited
as one frame, since under load a CurveZMQ frame costs more than the op in it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from nodes.wire import packb

OPS = frozenset({"hello", "status", "submit", "set_rules", "read_file", "shutdown"})
FILES = {"trace": "trace.jsonl", "log": "agent.log"}   # what read_file may read, in the data dir
READ_MAX = 1 << 20                                      # bytes per read_file answer
ZAP_DOMAIN = "zlab"
# ms a TCP connect (agent to peer, orchestrator to agent) may take before it is given up and
# dialled again. Without it a SYN sent to a container not yet on its bridge (no ARP answer) is
# retransmitted on the kernel's backoff (1, 2, 4 ... 64 s), so a link to a node that booted a
# second later could take minutes to come up.
CONNECT_TIMEOUT_MS = 1000


def pack(msg: Any) -> bytes:
    return packb(msg)


def unpack(data: bytes) -> dict[str, Any]:
    """Decode one control frame; ValueError when it is not a map with a known ``op`` or an answer."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 -- msgpack raises several types for garbage
        raise ValueError(f"undecodable control frame: {e}") from None
    if not isinstance(msg, dict):
        raise ValueError("control frame is not a map")
    return msg


def pack_answers(answers: list[dict[str, Any]]) -> bytes:
    """One frame for the answers due to one client: a map alone, or an array of maps."""
    return pack(answers[0] if len(answers) == 1 else answers)


def pack_requests(requests: list[dict[str, Any]]) -> bytes:
    """One frame for requests to one agent: a map alone, or an array of maps."""
    return pack_answers(requests)


def unpack_answers(data: bytes) -> list[dict[str, Any]]:
    """The maps in one frame: the answers from an agent, or the requests to it (ValueError when
    it is not a map or an array of maps)."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"undecodable control frame: {e}") from None
    msgs = msg if isinstance(msg, list) else [msg]
    if not all(isinstance(m, dict) for m in msgs):
        raise ValueError("control answer is not a map")
    return msgs


def request(op: str, rid: int, **fields: Any) -> bytes:
    return pack({"op": op, "id": rid, **fields})


unpack_requests = unpack_answers
