"""Argument types the command line shares (``zlab run``, ``check``, ``up``): a bad value is a
usage error, which the CLI reports as one line with exit 3."""

from __future__ import annotations

import argparse
import math

from lab.scenario import MAX_SEED
from nodes.units import shown


def seed_arg(text: str) -> int:
    """``--seed``: a whole number from 0 to 2**63-1, as a scenario's ``seed:``."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**63-1, got {shown(text)}")
    return seed


def seconds_arg(text: str) -> float:
    """``--time-limit``: seconds, a number above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {shown(text)}")
    return seconds
