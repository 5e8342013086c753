"""Per-lab CurveZMQ keypairs, kept in the lab's state dir (``.zlab/<lab>/keys/``), never in the repo.

Two certificates in zmq.auth's file format: ``server`` (every agent of the lab
serves its control socket with it) and ``client`` (the orchestrator's). An
agent admits only the client public key, so a process holding another lab's
keys, or none, gets no answer from it. Secret files are mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import zmq
import zmq.auth

from lab.errors import BackendError


@dataclass(frozen=True)
class LabKeys:
    dir: str
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @property
    def server_secret_file(self) -> str:
        return os.path.join(self.dir, "server.key_secret")

    @property
    def client_public_file(self) -> str:
        return os.path.join(self.dir, "client.key")

    def spec_files(self) -> dict[str, str]:
        """The ``keys`` entry of an agent spec that names these files."""
        return {"server_secret_file": self.server_secret_file, "client_public_file": self.client_public_file}

    def spec_inline(self) -> dict[str, str]:
        """The ``keys`` entry of an agent spec that carries the keys themselves (for containers)."""
        return {"server_public": self.server_public.decode(), "server_secret": self.server_secret.decode(),
                "client_public": self.client_public.decode()}


def ensure_keys(directory: str) -> LabKeys:
    """Load the lab's keys from ``directory``, making them first if they are not there."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in ("server", "client"):
        if not os.path.exists(os.path.join(directory, f"{name}.key_secret")):
            old = os.umask(0o077)
            try:
                zmq.auth.create_certificates(directory, name)
            finally:
                os.umask(old)
            os.chmod(os.path.join(directory, f"{name}.key_secret"), 0o600)
    return load_keys(directory)


def load_keys(directory: str) -> LabKeys:
    try:
        sp, ss = zmq.auth.load_certificate(os.path.join(directory, "server.key_secret"))
        cp, cs = zmq.auth.load_certificate(os.path.join(directory, "client.key_secret"))
    except (OSError, ValueError) as e:
        raise BackendError(f"cannot read the lab's keys in {directory}: {e}") from None
    if ss is None or cs is None:
        raise BackendError(f"the lab's key files in {directory} hold no secret keys")
    return LabKeys(directory, sp, ss, cp, cs)


def random_client_keys() -> tuple[bytes, bytes]:
    """A keypair no lab knows: what an intruder would have (tests use it)."""
    return zmq.curve_keypair()
