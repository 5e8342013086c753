"""zlab's pytest plugin (registered as a pytest11 entry point).

Gives a test a running lab in one line, on any runtime::

    @pytest.mark.docker
    def test_leader_survives(zlab_lab):
        lab = zlab_lab("topologies/raft-5.yaml", backend="docker")
        lab.put("x", 1)                          # a zlab.Lab (docs/lab.md); stopped after the test
        lab.assert_safe()

* ``zlab_lab(topology, backend="local", seed=None, **kwargs)``: a factory of
  started :class:`zlab.Lab` objects; ``topology`` is a YAML path, YAML text or
  a ``Scenario``; other keywords go to ``Lab`` (``config=``, ``timeout=``,
  ``results=``, ...). Each lab's name (and so its containers, network and
  labels) is unique per xdist worker: ``<scenario>-<worker>-<random>``. Every
  lab it made is stopped after the test, pass or fail. Run directories that
  ``assert_safe`` writes go to ``--zlab-results`` (default ``results/``).
* ``zlab_backend``: the same for a bare started backend (the runtime's own
  interface, lab/backends/base.py), for tests of the runtimes themselves.
* ``zlab_image`` (session): the node image's tag, built once when missing.
* the ``docker`` marker: such a test is skipped, with the reason, when no
  Docker engine answers -- and fails instead when ``ZLAB_REQUIRE_DOCKER=1``
  (CI sets it, so a broken engine cannot pass as "all skipped").
"""

from __future__ import annotations

import inspect
import os
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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--zlab-results", default=None, metavar="DIR",
                     help="where zlab_lab's labs write run directories of failed checks "
                          "(default: results/)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: tests that need a Docker engine")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        require_docker()


def unique_lab_name(base: str) -> str:
    """``<base>-<xdist worker>-<random>``: never the same for two tests, workers or sessions."""
    from lab.facade import unique_lab_name as name
    return name(base)


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
    """A factory of started :class:`zlab.Lab` objects, each stopped after the test."""
    from lab.facade import Lab

    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "zlab-home"))
    results = request.config.getoption("--zlab-results")
    made: list[Lab] = []

    def make(topology: Any, backend: str = "local", seed: int | None = None, **kwargs: Any) -> Lab:
        if backend == "docker":
            require_docker()
            kwargs.setdefault("image", request.getfixturevalue("zlab_image"))
        if results is not None:
            kwargs.setdefault("results", results)
        lab = Lab(topology, backend, seed, workdir=_workdir(tmp_path, len(made)), **kwargs)
        made.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        _stop_all(made)


@pytest.fixture
def zlab_backend(request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[..., Any]]:
    """A factory of started bare backends (lab/backends/base.py), each stopped after the test."""
    from lab.backends import backend_class
    from lab.facade import load_topology

    monkeypatch.setenv("ZLAB_HOME", str(tmp_path / "zlab-home"))
    made: list[Any] = []

    def make(topology: Any, backend: str = "docker", seed: int = 1, **kwargs: Any) -> Any:
        scenario = load_topology(topology)
        if backend == "docker":
            require_docker()
            kwargs.setdefault("image", request.getfixturevalue("zlab_image"))
        cls = backend_class(backend)
        if "lab" in inspect.signature(cls).parameters:     # the simulator has no lab name
            kwargs.setdefault("lab", unique_lab_name(scenario.name))
        b = cls(scenario, seed, _workdir(tmp_path, len(made)), **kwargs)
        made.append(b)
        b.start()
        return b

    try:
        yield make
    finally:
        _stop_all(made)


def _workdir(tmp_path: Any, n: int) -> str:
    path = tmp_path / f"lab{n}"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _stop_all(made: list[Any]) -> None:
    """Stop every lab, the last made first; then raise the first error, if any."""
    errors = []
    for lab in reversed(made):
        try:
            lab.stop()
        except Exception as e:  # noqa: BLE001 -- stop the others, then report
            errors.append(e)
    if errors:
        raise errors[0]
