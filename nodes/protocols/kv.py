"""The key-value state machine a replicated log drives (Raft's, and any other core's).

Pure and deterministic: ``apply(op)`` changes state only as a function of the
ops applied before it, so every replica that applies the same log holds the
same data and gives the same answers. Results follow the history contract of
DESIGN.md: ``read`` answers the value or ``None`` when absent; ``cas`` takes
``value == [expected, new]`` and a failed compare is
``{"type": "fail", "error": "cas_mismatch"}``. An absent key compares as
``None``, so ``cas [null, v]`` creates a key (the linearizability checker's
model agrees).

Exactly-once: an op that carries ``client`` and ``seq`` is remembered with
its result, and a retry of it (the client did not hear the answer and sent it
again, perhaps to a new leader) is answered from that table instead of being
applied twice. The table keeps the newest ``DEDUP_WINDOW`` results of each
client; a retry older than that is answered ``info`` (it may have happened),
never applied again.

The command codec (:func:`encode_command`, :func:`decode_command`) is how an op
enters a replicated log (Raft's, Multi-Paxos's): canonical JSON of its
``CMD_FIELDS``, encoded once by the leader and then stored, sent and hashed as is.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

OPS = frozenset({"read", "write", "cas", "delete"})
DEDUP_WINDOW = 1024          # results remembered per client (clients may pipeline, so not just 1)

OK: dict[str, Any] = {"type": "ok"}
CAS_MISMATCH: dict[str, Any] = {"type": "fail", "error": "cas_mismatch"}
EXPIRED: dict[str, Any] = {"type": "info", "error": "dedup_expired"}
_NO_FLOOR = -1 << 62         # a client's floor before any pruning: below every seq


def validate(op: Any) -> str | None:
    """Why ``op`` cannot be applied, or None when it can. Checked before an op enters a log."""
    if type(op) is dict:        # the common op first: a read, write or delete of a string key
        f, key = op.get("f"), op.get("key")
        if type(key) is str and (f == "write" or f == "read" or f == "delete"):
            return None
    elif not isinstance(op, dict):
        return "op is not a mapping"
    f, key = op.get("f"), op.get("key")
    if not isinstance(f, str) or f not in OPS:   # a list as `f` is unhashable
        return f"unsupported op {f!r}"
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        return "key must be a string or an integer"
    if f == "cas":
        v = op.get("value")
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            return "cas value must be [expected, new]"
    return None


def dedup_key(op: dict[str, Any]) -> tuple[str, int] | None:
    """(client, seq) of an op that asks for exactly-once, else None."""
    client, seq = op.get("client"), op.get("seq")
    if isinstance(client, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return client, seq
    return None


# -- the command codec: how an op enters a replicated log ---------------------------------

CMD_FIELDS = ("f", "key", "value", "client", "seq")   # what of a client op enters the log
_CMD_KEYS = tuple((k, f'"{k}":') for k in sorted(CMD_FIELDS))   # the canonical key order
_encode_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr).encode
_scan_json = json.JSONDecoder().scan_once    # json.loads without its per-call set-up
def encode_command(op: dict[str, Any]) -> str:
    """The canonical form of a client op as it enters the log: JSON, sorted keys, no spaces.

    The leader encodes once; the string travels, is stored and is hashed as is,
    so every node hashes the very same bytes and storage copies a flat string.
    """
    flat = encode_flat(op)
    return flat[0] if flat is not None else _encode_json({k: op[k] for k in CMD_FIELDS if k in op})


def encode_flat(op: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """What :func:`encode_command` gives for an op whose fields are all strings, ints or null
    (the common case, on the path of every write), written out by hand, with the command as
    a dict (what :func:`decode_command` makes of it: such values come back from JSON as they went in);
    None for any other op."""
    g = op.get
    client, f, key, seq = g("client"), g("f"), g("key"), g("seq")
    if type(client) is str and type(f) is str and type(key) is str and type(seq) is int:
        # The usual ops written out (a third cheaper than the loop below): a read with these
        # four fields, or a write of an int with a fifth, "value", last in the canonical order.
        head = f'{{"client":{_json_str(client)},"f":{_json_str(f)},"key":{_json_str(key)},"seq":{seq!r}'
        if len(op) == 4:
            return head + "}", {"client": client, "f": f, "key": key, "seq": seq}
        value = g("value")
        if type(value) is int and len(op) == 5:
            return f'{head},"value":{value!r}}}', {"client": client, "f": f, "key": key, "seq": seq,
                                                   "value": value}
    parts = []
    cmd = {}
    for key, head in _CMD_KEYS:
        if key in op:
            v = cmd[key] = op[key]
            t = type(v)
            if t is str:
                parts.append(head + _json_str(v))
            elif t is int:
                parts.append(head + int.__repr__(v))
            elif v is None:
                parts.append(head + "null")
            else:
                return None
    return "{" + ",".join(parts) + "}", cmd


def decode_command(encoded: str) -> dict[str, Any] | None:
    """A logged command back as a dict; None if it is not a valid op (every node agrees)."""
    try:
        # Canonical JSON has no surrounding whitespace: then this is exactly json.loads.
        op, end = _scan_json(encoded, 0)
        if end != len(encoded):
            raise ValueError
    except Exception:  # noqa: BLE001 -- anything unusual takes json.loads' own path
        try:
            op = json.loads(encoded)
        except ValueError:
            return None
    if type(op) is dict and type(op.get("key")) is str and ((f := op.get("f")) == "write" or f == "read"
                                                          or f == "delete"):
        return op           # validate's first case, without the call: on every entry of every node
    return op if validate(op) is None else None


def command_hash(command: str | None) -> str:
    """A short digest of an encoded command (a no-op is ``None``): how traces name a command
    without carrying it (blake2b, 8 bytes, hex, of the canonical JSON; ``null`` for a no-op)."""
    return hashlib.blake2b(("null" if command is None else command).encode(), digest_size=8).hexdigest()


def answer_now(state: KV, op: Any) -> dict[str, Any] | None:
    """What a leader answers a client op without logging it: a failure for an op that cannot
    be applied, or the remembered result of a retry already applied; None when the op must
    go through the log."""
    error = validate(op)
    if error is not None:
        return {"type": "fail", "error": error}
    return state.answered(op)


class KV:
    """Keys to values plus the per-client table of answered requests."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.sessions: dict[str, dict[int, dict[str, Any]]] = {}   # client -> seq -> result
        self.floor: dict[str, int] = {}       # client -> seqs below this were pruned from its table

    def dump(self) -> dict[str, Any]:
        """The whole state as plain lists (msgpack, JSON and string-keyed maps carry it): a
        snapshot, for a replicated log that garbage-collects its prefix."""
        return {"data": [[k, v] for k, v in self.data.items()],
                "sessions": [[c, [[seq, r] for seq, r in t.items()]] for c, t in self.sessions.items()],
                "floor": [[c, f] for c, f in self.floor.items()]}

    @classmethod
    def load(cls, state: dict[str, Any]) -> KV:
        """The inverse of :meth:`dump`."""
        out = cls()
        out.data = {k: v for k, v in state["data"]}
        out.sessions = {c: {seq: r for seq, r in t} for c, t in state["sessions"]}
        out.floor = {c: f for c, f in state["floor"]}
        return out

    def answered(self, op: dict[str, Any]) -> dict[str, Any] | None:
        """The remembered result of a retried op, or None if it was never applied."""
        client, seq = op.get("client"), op.get("seq")
        if type(client) is not str or type(seq) is not int:     # the exact types spare dedup_key
            key = dedup_key(op)
            if key is None:
                return None
            client, seq = key
        if seq < self.floor.get(client, _NO_FLOOR):
            return EXPIRED
        table = self.sessions.get(client)
        return None if table is None else table.get(seq)

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        """Apply one op (a retry is answered from the table) and return its result."""
        # The lookup of answered() and the table upkeep written out: this runs for every entry
        # on every replica.
        client, seq = op.get("client"), op.get("seq")
        if (type(client) is not str or type(seq) is not int) and dedup_key(op) is None:
            return self._execute(op)        # the exact types (all JSON gives) spare dedup_key
        floor = self.floor
        if floor and seq < floor.get(client, _NO_FLOOR):
            return EXPIRED
        table = self.sessions.get(client)
        if table is not None:
            seen = table.get(seq)
            if seen is not None:
                return seen
        # _execute's two common ops written out: one call less for every entry on every replica.
        f = op.get("f")
        if f == "read":
            result = {"type": "ok", "value": self.data.get(op.get("key"))}
        elif f == "write" and (value := op.get("value")) is not None:
            self.data[op.get("key")] = value
            result = OK
        else:
            result = self._execute(op)
        if table is None:
            self.sessions[client] = {seq: result}
        else:
            table[seq] = result
            if len(table) > DEDUP_WINDOW:
                self._prune(client, table)
        return result

    def _execute(self, op: dict[str, Any]) -> dict[str, Any]:
        f = op.get("f")
        if f == "write":
            self._set(op.get("key"), op.get("value"))
            return OK
        if f == "read":
            return {"type": "ok", "value": self.data.get(op.get("key"))}
        if f == "cas":
            key = op.get("key")
            expected, new = op["value"]
            if self.data.get(key) != expected:
                return CAS_MISMATCH
            self._set(key, new)
            return OK
        if f == "delete":
            self.data.pop(op.get("key"), None)
            return OK
        return {"type": "fail", "error": f"unsupported op {f!r}"}

    def _set(self, key: Any, value: Any) -> None:
        # Writing null is the same as deleting: "absent" and None read alike.
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def _prune(self, client: str, table: dict[int, dict[str, Any]]) -> None:
        # Deterministic (every replica prunes the same seqs): keep the newest half.
        keep = sorted(table)[len(table) - DEDUP_WINDOW // 2:]
        self.floor[client] = keep[0]
        self.sessions[client] = {s: table[s] for s in keep}
