"""One root for every error zlab raises on purpose (docker-py's lesson)."""

from __future__ import annotations

from typing import Any


class LabError(Exception):
    """Root of zlab's errors. The CLI prints ``str(err)`` on one line and exits 3."""

    exit_code = 3


class ConfigError(LabError):
    """Bad input: a scenario, a topology, a command line. Says what and where."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class BackendError(LabError):
    """A runtime could not do what was asked (a process, a container, a kernel command)."""


class ProtocolError(LabError):
    """A protocol was driven in a way it does not allow (an illegal transition, say)."""


class CheckError(LabError):
    """A checker could not read its input (a missing or malformed history or trace)."""


class OpError(LabError):
    """A client operation of a :class:`~lab.facade.Lab` that did not come back ``ok``.

    ``op`` is what was asked, ``outcome`` the history's word for what came back (``fail`` or
    ``info``), ``error`` the reason a node or the client gave (``timeout``, ``aborted``, ...),
    ``node`` the node last asked."""

    def __init__(self, message: str, *, op: dict[str, Any], outcome: str, error: str | None,
                 node: str | None = None) -> None:
        self.op, self.outcome, self.error, self.node = op, outcome, error, node
        super().__init__(message)


class Unavailable(OpError):
    """The operation definitely did not take effect (a ``fail`` outcome): every node asked
    refused it (no leader to take it), or the protocol turned it down."""


class Unknown(OpError):
    """The outcome is not known (``info``): no answer within the timeout, or an answer that says
    the result is uncertain. The operation may or may not have taken effect, now or later."""
