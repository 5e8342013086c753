"""How every figure of `make bench` is taken: trials that alternate between zlab and its anchor.

``alternate`` runs one trial of each measurement in turn (A, B, C, A, B, C, ...), so a
machine that gets busier or quieter during the command shifts both sides alike, and
``summarize`` keeps every trial beside its median. Quote the median, never the best run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

TRIALS = 3


def alternate(measures: Sequence[tuple[str, Callable[[], dict[str, Any]]]], trials: int = TRIALS,
              say: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """name -> the results of its ``trials`` runs, taken in alternation."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in measures}
    for t in range(trials):
        for name, measure in measures:
            result = measure()
            out[name].append(result)
            say(f"   trial {t + 1}/{trials} {name}: " + ", ".join(
                f"{k} {_fmt(v)}" for k, v in result.items() if isinstance(v, (int, float))))
    return out


def summarize(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``{median, min, max, trials}`` of one figure over a measurement's trials."""
    values = [r[key] for r in results if r.get(key) is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "trials": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "trials": values}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
