"""PySyncObj's throughput method, shared by both sides of the Raft comparison: the
highest offered rate at which at least 90% of requests succeed, found by bisection."""

from __future__ import annotations

from collections.abc import Callable


def max_rate(success_at: Callable[[int], float], low: int, high: int, *, steps: int = 6,
             threshold: float = 0.9) -> tuple[int, list[tuple[int, float]]]:
    """Bisect [low, high] for the highest rate whose success fraction is >= threshold."""
    tried: list[tuple[int, float]] = []
    best = 0
    for _ in range(steps):
        if high - low <= max(10, low // 20):
            break
        mid = (low + high) // 2
        frac = success_at(mid)
        tried.append((mid, frac))
        if frac >= threshold:
            best, low = mid, mid
        else:
            high = mid
    return best, tried
