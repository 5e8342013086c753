"""Throughput as achieved: completed operations over the wall time they took, at saturation.

A closed loop keeps ``window`` operations in flight at the leader (each completion
sends the next), so the figure is a measurement, not a grid point of offered rates:
two systems cannot land on the same number by construction. The window that gives
the most is taken (too small a window leaves the pipeline idle; too large only queues);
both sides of a comparison use the same windows and the same warm-up and span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

WINDOWS = (64, 512, 4096)     # operations in flight
WARMUP = 0.5                  # s of load before the measured span
SPAN = 3.0                    # s measured


def best_window(achieved_at: Callable[[int], float],
                windows: Sequence[int] = WINDOWS) -> tuple[float, int, list[tuple[int, float]]]:
    """(the highest ops/s achieved, its window, every (window, ops/s) tried)."""
    tried = [(w, achieved_at(w)) for w in windows]
    best_w, best = max(tried, key=lambda t: t[1])
    return best, best_w, tried
