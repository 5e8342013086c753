"""PBFT's messages: what each carries, what its signature covers, and the checks that need no
replica state (shape, digests, certificates, the NEW-VIEW plan). Shared by the honest replica
(pbft.py) and the faulty one (pbft_byzantine.py).

Every body carries ``i`` (the replica that signed it) and ``sig``, an ed25519 signature over
``msgpack([type, *fields])`` with the fields of :data:`SIGNED` in that order. A replica trusts
the signed ``i``, never the envelope's ``src``: messages are relayed (a NEW-VIEW re-sent to a
replica that missed it, certificates inside a VIEW-CHANGE), and on a real network anyone can
write any ``src``. Certificates are lists of ``[replica, signature]`` pairs that any third
party can check against the same bytes.

Digests are 16-byte blake2b, in hex: a request's over the fields its client signed
(nodes/signing.py), a batch's over its requests' digests in order (the null request of a
NEW-VIEW is the empty batch), a checkpoint's over the state machine's snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from nodes.signing import SIG_LEN, request_bytes

PRE_PREPARE, PREPARE, COMMIT, CHECKPOINT = "pre_prepare", "prepare", "commit", "checkpoint"
VIEW_CHANGE, NEW_VIEW = "view_change", "new_view"
FETCH, CERTS, STATE, REQUEST = "fetch", "certs", "state", "request"
TYPES = frozenset({PRE_PREPARE, PREPARE, COMMIT, CHECKPOINT, VIEW_CHANGE, NEW_VIEW,
                   FETCH, CERTS, STATE, REQUEST})
FETCH_WHAT = ("certs", "state", "new_view")

SIGNED: dict[str, tuple[str, ...]] = {
    PRE_PREPARE: ("v", "n", "d", "i"),          # the batch travels beside it, bound by d
    PREPARE: ("v", "n", "d", "i"),
    COMMIT: ("v", "n", "d", "i"),
    CHECKPOINT: ("n", "d", "i"),
    VIEW_CHANGE: ("v", "n", "cd", "C", "P", "i"),
    NEW_VIEW: ("v", "V", "O", "i"),
    FETCH: ("what", "n", "i"),
    CERTS: ("certs", "i"),
    STATE: ("n", "d", "state", "C", "i"),
    REQUEST: ("reqs", "i"),                     # a backup relaying clients' requests
}

_pack = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


def pack(value: Any) -> bytes:
    return _pack(value)


def unpack_state(data: bytes) -> Any:
    return _unpackb(data, raw=False, strict_map_key=False)


def signed_bytes(type: str, body: dict[str, Any]) -> bytes:
    return _pack([type, *[body.get(k) for k in SIGNED[type]]])


def vote_bytes(type: str, v: int, n: int, d: str, i: str) -> bytes:
    """What a pre-prepare, prepare or commit signature covers (the hot path: no dict walk)."""
    return _pack([type, v, n, d, i])


def checkpoint_bytes(n: int, d: str, i: str) -> bytes:
    return _pack([CHECKPOINT, n, d, i])


def digest_bytes(data: bytes) -> bytes:
    """A request's digest from the bytes its client signed."""
    return hashlib.blake2b(data, digest_size=16).digest()


def request_digest(op: dict[str, Any]) -> bytes:
    return digest_bytes(request_bytes(op))


def batch_digest(rds: Iterable[bytes]) -> str:
    return hashlib.blake2b(b"".join(rds), digest_size=16).hexdigest()


def digest_of(batch: list[dict[str, Any]]) -> str:
    return batch_digest(request_digest(op) for op in batch)


def state_digest(state: bytes) -> str:
    return hashlib.blake2b(state, digest_size=16).hexdigest()


NULL_DIGEST = batch_digest([])


# -- shape ------------------------------------------------------------------------------------

def _int(v: Any) -> bool:
    return type(v) is int and v >= 0


def _digest(v: Any) -> bool:
    return type(v) is str and len(v) == 32


def _sig(v: Any) -> bool:
    return type(v) is bytes and len(v) == SIG_LEN


def _pairs(v: Any) -> bool:
    """A list of [replica, signature]."""
    return isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 2 and type(p[0]) is str and _sig(p[1]) for p in v)


def _batch(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(op, dict) for op in v)


def _p_entry(e: Any) -> bool:
    """[view, seq, digest, pre-prepare sig, prepares, batch]: one prepared certificate."""
    return (isinstance(e, list) and len(e) == 6 and _int(e[0]) and _int(e[1]) and _digest(e[2])
            and _sig(e[3]) and _pairs(e[4]) and _batch(e[5]))


def _o_entry(e: Any) -> bool:
    """[seq, digest, batch, pre-prepare sig]: one pre-prepare of a NEW-VIEW."""
    return (isinstance(e, list) and len(e) == 4 and _int(e[0]) and _digest(e[1])
            and _batch(e[2]) and _sig(e[3]))


def _cert(e: Any) -> bool:
    """[view, seq, digest, batch, commits]: one committed certificate."""
    return (isinstance(e, list) and len(e) == 5 and _int(e[0]) and _int(e[1]) and _digest(e[2])
            and _batch(e[3]) and _pairs(e[4]))


def well_formed(kind: str, body: Any) -> bool:
    """Whether a body has the fields and types its handler relies on (signature not checked)."""
    if not isinstance(body, dict) or kind not in SIGNED:
        return False
    g = body.get
    if not isinstance(g("i"), str) or not _sig(g("sig")):
        return False
    if kind in (PREPARE, COMMIT):
        return _int(g("v")) and _int(g("n")) and _digest(g("d"))
    if kind == PRE_PREPARE:
        return _int(g("v")) and _int(g("n")) and _digest(g("d")) and _batch(g("batch"))
    if kind == CHECKPOINT:
        return _int(g("n")) and _digest(g("d"))
    if kind == VIEW_CHANGE:
        P = g("P")
        return (_int(g("v")) and _int(g("n")) and _digest(g("cd")) and _pairs(g("C"))
                and isinstance(P, list) and all(_p_entry(e) for e in P))
    if kind == NEW_VIEW:
        vcs, pps = g("V"), g("O")
        return (_int(g("v")) and isinstance(vcs, list) and all(isinstance(x, dict) for x in vcs)
                and isinstance(pps, list) and all(_o_entry(e) for e in pps))
    if kind == FETCH:
        return g("what") in FETCH_WHAT and _int(g("n"))
    if kind == CERTS:
        certs = g("certs")
        return isinstance(certs, list) and all(_cert(c) for c in certs)
    if kind == STATE:
        return _int(g("n")) and _digest(g("d")) and isinstance(g("state"), bytes) and _pairs(g("C"))
    if kind == REQUEST:
        return _batch(g("reqs"))
    return False


# -- certificates ------------------------------------------------------------------------------

Verify = Callable[[str, bytes, Any], bool]


def count_signers(verify: Verify, pairs: list[list[Any]], data_of: Callable[[str], bytes],
                  need: int, allowed: Iterable[str], exclude: str | None = None) -> bool:
    """Whether ``pairs`` hold at least ``need`` distinct ``allowed`` signers (not ``exclude``)
    whose signatures of ``data_of(signer)`` verify. Stops verifying once enough have."""
    allowed = set(allowed)
    seen: set[str] = set()
    for j, sig in pairs:
        if j in seen or j == exclude or j not in allowed:
            continue
        if verify(j, data_of(j), sig):
            seen.add(j)
            if len(seen) >= need:
                return True
    return need <= 0


def plan_new_view(vcs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[int, str, list[Any]]]]:
    """What a NEW-VIEW must hold, from the VIEW-CHANGE bodies it is built on: the VIEW-CHANGE
    with the highest stable checkpoint (min-s; its ``n``, ``cd`` and ``C``), and O: for each
    seq above min-s up to the highest prepared one (max-s), the request of the prepared
    certificate of the highest view (a tie, which only a broken protocol makes, goes to the
    lowest digest, so the choice does not depend on the order of the messages), else the null
    request. Primary and backups both compute it; a backup rejects a NEW-VIEW that differs."""
    base = vcs[0]
    for vc in vcs[1:]:
        if vc["n"] > base["n"]:
            base = vc
    min_s = base["n"]
    chosen: dict[int, tuple[int, str, list[Any]]] = {}
    for vc in vcs:
        for v, n, d, _pp, _prepares, batch in vc["P"]:
            if n <= min_s:
                continue
            cur = chosen.get(n)
            if cur is None or v > cur[0] or (v == cur[0] and d < cur[1]):
                chosen[n] = (v, d, batch)
    max_s = max(chosen, default=min_s)
    plan = [(n, chosen[n][1], chosen[n][2]) if n in chosen else (n, NULL_DIGEST, [])
            for n in range(min_s + 1, max_s + 1)]
    return base, plan
