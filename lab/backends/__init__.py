"""Runtimes: sim, local, docker. Each is a Backend (lab/backends/base.py)."""

from __future__ import annotations

from lab.errors import ConfigError
from nodes.loader import load

_BACKENDS = {
    "sim": "lab.sim.backend:SimBackend",
    "local": "lab.backends.local:LocalBackend",
    "docker": "lab.backends.docker:DockerBackend",
}


def backend_class(kind: str):  # -> type[Backend]
    try:
        target = _BACKENDS[kind]
    except KeyError:
        raise ConfigError(f"unknown backend {kind!r} (known: {', '.join(_BACKENDS)})") from None
    return load(target)
