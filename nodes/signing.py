"""ed25519 keys for protocols that sign (PBFT), owned by the runtime, never by a core.

A core that signs (``Core.signs``) finds a :class:`Keyring` at ``ctx.keys``:
``sign(data)`` with its own node's secret key, ``verify(signer, data, sig)``
against any node's public key, and ``verify_client(data, sig)`` against the
lab's client key (the runner's clients sign requests with it). The secret key
never leaves the keyring, so nothing secret can reach a trace; ed25519
signing is deterministic, so a core may use signatures in what it computes
and the simulator still replays byte for byte.

Where keys come from:

* ``sim``: derived from the run's seed (:func:`derived_seed`), so a seed
  replays exactly; the simulator may share one verification cache between
  its nodes (verifying is a pure function, and every node would get the same
  answer), which saves most of a sweep's CPU.
* ``local`` and ``docker``: made per lab (``lab/signkeys.py``) like the
  control keys; each agent's spec carries its own secret key and every
  public key (docs/agent.md).

Clients are trusted in zlab (the orchestrator runs them), so they share one
lab-wide key: what the signature proves is that a request came from a
client, not from a replica, which is what keeps a Byzantine primary from
inventing client operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

CLIENTS = "@clients"          # the signer name of the lab's client key (never a node name)
SIG_LEN = 64
REQUEST_FIELDS = ("f", "key", "value", "client", "seq")    # what a client's signature covers

_pack = msgpack.Packer(use_bin_type=True).pack


def derived_seed(seed: int | str, name: str) -> bytes:
    """The 32-byte ed25519 seed of ``name``'s key in a simulated run with this seed."""
    return hashlib.blake2b(f"zlab/sim-signing/{seed}/{name}".encode(), digest_size=32).digest()


def public_of(secret: bytes) -> bytes:
    return crypto_sign_seed_keypair(secret)[0]


def request_bytes(op: Mapping[str, Any]) -> bytes:
    """The bytes a client signs for a request: its fields in a fixed order (nothing else)."""
    return _pack(["request", *map(op.get, REQUEST_FIELDS)])     # map: no generator frame per request


class Keyring:
    """One node's signing key and everyone's public keys. Counts what it does (``signed``,
    ``verified``) so a protocol can report verifications per operation."""

    def __init__(self, node: str, secret: bytes | None, publics: Mapping[str, bytes],
                 cache: dict[tuple[str, bytes, bytes], bool] | None = None) -> None:
        self.node = node
        # Raw libsodium calls through pynacl's bindings: a verification is what PBFT does most.
        self._key = crypto_sign_seed_keypair(secret)[1] if secret is not None else None
        self._verify = {name: bytes(pk) for name, pk in publics.items()}
        self._cache = cache
        self.signed = 0
        self.verified = 0

    def sign(self, data: bytes) -> bytes:
        if self._key is None:
            raise RuntimeError(f"{self.node} holds no signing key")
        self.signed += 1
        return crypto_sign(data, self._key)[:SIG_LEN]

    def verify(self, signer: str, data: bytes, sig: Any) -> bool:
        """Whether ``sig`` is ``signer``'s signature of ``data``; False for anything malformed."""
        key = self._verify.get(signer)
        if key is None or type(sig) is not bytes or len(sig) != SIG_LEN:
            return False
        cache = self._cache
        if cache is not None:
            hit = cache.get((signer, data, sig))
            if hit is not None:
                return hit
        self.verified += 1
        try:
            crypto_sign_open(sig + data, key)
            ok = True
        except (BadSignatureError, ValueError, TypeError):
            ok = False
        if cache is not None:
            if len(cache) > 50_000:        # bounded: a long simulation must not grow it forever
                cache.clear()
            cache[(signer, data, sig)] = ok
        return ok

    def verify_client(self, data: bytes, sig: Any) -> bool:
        return self.verify(CLIENTS, data, sig)

    def signers(self) -> list[str]:
        return sorted(self._verify)


class ClientSigner:
    """What a client holds: the lab's client key. ``sign_request`` adds ``sig`` to an op."""

    def __init__(self, secret: bytes) -> None:
        self._key = crypto_sign_seed_keypair(secret)[1]

    def sign_request(self, op: dict[str, Any]) -> dict[str, Any]:
        return {**op, "sig": crypto_sign(request_bytes(op), self._key)[:SIG_LEN]}


def sim_keys(seed: int | str, nodes: list[str]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(secret seeds, public keys) of every node and of the clients, derived from ``seed``."""
    secrets = {n: derived_seed(seed, n) for n in [*nodes, CLIENTS]}
    return secrets, {n: public_of(s) for n, s in secrets.items()}


def keyring_from_spec(node: str, spec: Mapping[str, Any]) -> Keyring:
    """An agent's keyring from its spec's ``signing`` entry: ``{"secret": hex, "public":
    {name: hex}}`` (the clients' public key under ``@clients``)."""
    publics = {name: bytes.fromhex(pk) for name, pk in spec["public"].items()}
    return Keyring(node, bytes.fromhex(spec["secret"]), publics)
