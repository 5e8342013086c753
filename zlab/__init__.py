"""zlab for tests and scripts: ``from zlab import Lab`` (docs/lab.md).

The package is a thin front for :mod:`lab.facade`; everything else of zlab lives in
``lab`` (the orchestrator) and ``nodes`` (what runs in a node)."""

from __future__ import annotations

from lab.errors import LabError, OpError, Unavailable, Unknown
from lab.facade import Lab, Status, Unsafe, Verdicts, WaitTimeout

__all__ = ["Lab", "LabError", "OpError", "Status", "Unavailable", "Unknown", "Unsafe", "Verdicts",
           "WaitTimeout"]
