"""The one way zlab reaches the Docker engine: the backend and the image builder both ask here,
so neither imports the other for it."""

from __future__ import annotations

from typing import Any

from lab.errors import BackendError

API_TIMEOUT = 60                 # s for any one engine call


def docker_client(timeout: float = API_TIMEOUT) -> Any:
    """A client of the local engine (``DOCKER_HOST`` etc. as usual); BackendError if none answers.
    ``timeout`` bounds each engine call (an image build wants far longer than the default)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as e:
        raise BackendError(f"no Docker engine answers: {e}") from None
    return client
