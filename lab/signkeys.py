"""Per-lab ed25519 signing keys for protocols that sign (PBFT), beside the control keys.

``.zlab/<lab>/keys/sign/<name>.key`` holds the hex seed of one key (mode
0600): one per node and one, ``@clients.key``, the runner's clients sign
requests with. Made when the lab starts, never in the repo. Each agent gets
its own secret and every public key in its spec (``signing``); the simulator
derives its keys from the seed instead (nodes/signing.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lab.errors import BackendError
from nodes.signing import CLIENTS, ClientSigner, public_of


@dataclass(frozen=True)
class SigningKeys:
    dir: str
    secrets: dict[str, bytes]     # name -> 32-byte seed (nodes and @clients)

    def spec(self, node: str) -> dict[str, object]:
        """The ``signing`` entry of ``node``'s agent spec: its own secret, everyone's public key."""
        return {"secret": self.secrets[node].hex(),
                "public": {name: public_of(s).hex() for name, s in sorted(self.secrets.items())}}

    def client_signer(self) -> ClientSigner:
        return ClientSigner(self.secrets[CLIENTS])


def ensure_signing_keys(directory: str, nodes: list[str]) -> SigningKeys:
    """Load the keys of ``nodes`` and the clients from ``directory``, making missing ones."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in [*nodes, CLIENTS]:
        path = os.path.join(directory, f"{name}.key")
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
    return load_signing_keys(directory, nodes)


def load_signing_keys(directory: str, nodes: list[str]) -> SigningKeys:
    secrets = {}
    for name in [*nodes, CLIENTS]:
        path = os.path.join(directory, f"{name}.key")
        try:
            with open(path, encoding="ascii") as f:
                secret = bytes.fromhex(f.read().strip())
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot read the signing key {path}: {e}") from None
        if len(secret) != 32:
            raise BackendError(f"the signing key {path} is not 32 bytes")
        secrets[name] = secret
    return SigningKeys(directory, secrets)
