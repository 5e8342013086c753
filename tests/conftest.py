"""Suite-wide fixtures: every docker object a test session makes carries this session's owner id,
and the session fails if any of them is left at its end (a user's own labs are not counted)."""

from __future__ import annotations

import os
import uuid

import pytest

# Set before xdist starts its workers, which inherit it: one id for the whole session.
OWNER = os.environ.setdefault("ZLAB_OWNER", f"pytest-{uuid.uuid4().hex[:10]}")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In the controller (or a run without xdist), after every test: nothing labelled
    zlab.owner=<this session> may remain. What is left is removed, and the run fails."""
    if _is_worker(session.config):
        return
    from lab.pytest_plugin import docker_unavailable
    if docker_unavailable() is not None:
        return
    from lab.backends.docker import docker_client, down_all, list_labelled

    client = docker_client()
    left = {k: v for k, v in list_labelled(client, owner=OWNER).items() if v}
    if not left:
        return
    down_all(owner=OWNER, client=client)
    what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in left.items())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    msg = f"zlab: this test session left docker objects behind (now removed): {what}"
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(msg, red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
