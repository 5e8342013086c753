"""Explicit units for every tunable and YAML field: ``150ms``, ``2s``, ``5%``, ``100/s``.

Lives in nodes/ because both sides need it and nodes/ never imports lab/.
All functions raise ``ValueError`` with a message that says what was expected;
callers that know a file and line (the YAML loader) add them.
"""

from __future__ import annotations

import math
import re
import reprlib

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")
_SCALE = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"150ms"`` -> 0.15 (seconds). Numbers are refused: a bare 5 is ambiguous."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and math.isfinite(seconds := float(m.group(1)) * _SCALE[m.group(2)]):
            return seconds
    raise ValueError(f"expected a duration like 5s or 150ms, got {shown(value)}")


def parse_percent(value: object) -> float:
    """``"5%"`` -> 0.05."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            p = float(value.strip()[:-1])
        except ValueError:
            pass
        else:
            if 0.0 <= p <= 100.0:
                return p / 100.0
    raise ValueError(f"expected a percentage like 5% (0% to 100%), got {shown(value)}")


def parse_rate(value: object) -> float:
    """``"100/s"`` -> 100.0 (per second)."""
    if isinstance(value, str) and value.strip().endswith("/s"):
        try:
            r = float(value.strip()[:-2])
        except ValueError:
            pass
        else:
            if r > 0 and math.isfinite(r):
                return r
    raise ValueError(f"expected a rate like 100/s, got {shown(value)}")


_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_BITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


def parse_bitrate(value: object) -> int:
    """``"1mbit"`` -> 1_000_000 (bits per second), the unit tc uses."""
    if isinstance(value, str):
        m = _BITRATE.match(value)
        if m and math.isfinite(bits := float(m.group(1)) * _BITS[m.group(2).lower()]):
            return int(bits)
    raise ValueError(f"expected a bit rate like 1mbit or 500kbit, got {shown(value)}")


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 60, 60, 3


def shown(value: object) -> str:
    """``repr(value)`` cut for a one-line error message, however big the value is (reprlib
    looks at a few items of each list and a few levels, never the whole value)."""
    text = _short.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for resolved scenarios and summaries."""
    if seconds == 0:
        return "0ms"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    return f"{seconds:g}s"
