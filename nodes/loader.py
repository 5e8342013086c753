"""Registries name their entries as ``"package.module:attribute"`` and import them on first use,
so that listing names stays cheap and one heavy module (docker, matplotlib) loads only when used."""

from __future__ import annotations

import importlib
from typing import Any


def load(target: str) -> Any:
    """The attribute ``target`` names, e.g. ``load("nodes.protocols.raft:Raft")``."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
