"""zlab's pytest plugin (registered as a pytest11 entry point).

Gives a test a running lab in one line, on any runtime::

    @pytest.mark.docker
    def test_leader_survives(zlab_lab):
        lab = zlab_lab("topologies/raft-5.yaml", backend="docker")
        ...                                      # a started Backend; torn down after the test

* ``zlab_lab(topology, backend="docker", seed=1, **backend_kwargs)``: a
  factory; ``topology`` is a YAML path or a ``Scenario``. Each lab's name
  (and so its containers, network and labels) is unique per xdist worker:
  ``<scenario>-<worker>-<random>``. Every lab it made is stopped after the
  test, pass or fail.
* ``zlab_image`` (session): the node image's tag, built once when missing.
* the ``docker`` marker: such a test is skipped, with the reason, when no
  Docker engine answers -- and fails instead when ``ZLAB_REQUIRE_DOCKER=1``
  (CI sets it, so a broken engine cannot pass as "all skipped").
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REQUIRE_ENV = "ZLAB_REQUIRE_DOCKER"
_engine_reason: list[str | None] = []     # cached per process: None = an engine answers


def docker_unavailable() -> str | None:
    """Why docker tests cannot run here (None when they can). Asked once per process."""
    if not _engine_reason:
        try:
            from lab.backends.docker import engine_available
            _engine_reason.append(engine_available())
        except ImportError as e:
            _engine_reason.append(f"the docker SDK is not installed: {e}")
    return _engine_reason[0]


def require_docker() -> None:
    """Skip the calling test when no engine answers; fail it when ZLAB_REQUIRE_DOCKER=1."""
    reason = docker_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(f"docker: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: tests that need a Docker engine")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        require_docker()


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unique_lab_name(base: str) -> str:
    """``<base>-<xdist worker>-<random>``: never the same for two tests, workers or sessions."""
    from lab.backends.docker import docker_name
    return docker_name(f"{base[:24]}-{worker_id()}-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def zlab_image() -> str:
    """The node image's tag, built (once, under a machine-wide lock) when it is missing.
    Exported as ZLAB_IMAGE so labs made by the runner in this process use it too."""
    require_docker()
    from lab.image import ensure_image
    tag = ensure_image()
    os.environ["ZLAB_IMAGE"] = tag
    return tag


@pytest.fixture
def zlab_lab(request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Callable[..., Any]]:
    """A factory of started labs, each torn down after the test."""
    from lab.backends import backend_class
    from lab.scenario import Scenario
    from lab.topology import load_scenario

    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "zlab-home"))
    made: list[Any] = []

    def make(topology: str | Scenario, backend: str = "docker", seed: int = 1, **kwargs: Any) -> Any:
        scenario = topology if isinstance(topology, Scenario) else load_scenario(str(topology))
        if backend == "docker":
            require_docker()
            kwargs.setdefault("image", request.getfixturevalue("zlab_image"))
        cls = backend_class(backend)
        name = unique_lab_name(scenario.name)
        if "lab" in inspect.signature(cls).parameters:     # the simulator has no lab name
            kwargs.setdefault("lab", name)
        workdir = tmp_path / kwargs.get("lab", name)
        workdir.mkdir(parents=True, exist_ok=True)
        lab = cls(scenario, seed, str(workdir), **kwargs)
        made.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(made):
            try:
                lab.stop()
            except Exception as e:  # noqa: BLE001 -- stop the others, then report
                errors.append(e)
        if errors:
            raise errors[0]
