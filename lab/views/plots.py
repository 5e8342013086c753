"""Latency and throughput over time, fault windows shaded (one PNG, matplotlib Agg).

matplotlib is optional: without it :func:`write_plots` writes nothing and
returns False, and the run goes on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lab.history import INVOKE, OUTCOMES
from lab.views import fault_windows

COLOURS = {"ok": "#2ca02c", "fail": "#d62728", "info": "#ff7f0e"}


def latencies(history: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(invoke ts, latency s, outcome) per completed op; an info op's latency is up to its
    info event (the client's timeout), and an op with no outcome at all is left out."""
    open_: dict[Any, float] = {}
    out = []
    for ev in history:
        if ev.get("type") == INVOKE:
            open_[ev.get("process")] = ev["ts"]
        elif ev.get("type") in OUTCOMES and ev.get("process") in open_:
            start = open_.pop(ev.get("process"))
            out.append((start, max(ev["ts"] - start, 0.0), ev["type"]))
    return out


def throughput(history: list[dict[str, Any]], bin_s: float) -> dict[str, tuple[list[float], list[float]]]:
    """Per outcome: (bin start times, completions per second in that bin)."""
    done = [(ev["ts"], ev["type"]) for ev in history if ev.get("type") in OUTCOMES]
    if not done:
        return {}
    t_end = max(ts for ts, _ in done)
    bins = int(t_end // bin_s) + 1
    out: dict[str, tuple[list[float], list[float]]] = {}
    for outcome in OUTCOMES:
        counts = [0] * bins
        for ts, typ in done:
            if typ == outcome:
                counts[int(ts // bin_s)] += 1
        if any(counts):
            out[outcome] = ([i * bin_s for i in range(bins)], [c / bin_s for c in counts])
    return out


def write_plots(history: list[dict[str, Any]], trace: list[dict[str, Any]],
                path_png: str | Path) -> bool:
    """Write the PNG; False (and no file) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    # Figure + Agg canvas directly, not pyplot: no global backend state, safe in threads.
    fig = Figure(figsize=(10, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_lat, ax_tp = fig.subplots(2, 1, sharex=True)
    lat = latencies(history)
    for outcome in OUTCOMES:
        pts = [(t, d * 1000) for t, d, o in lat if o == outcome]
        if pts:
            ax_lat.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.6,
                           color=COLOURS[outcome], label=f"{outcome} ({len(pts)})")
    positive = [d for _, d, _ in lat if d > 0]
    if positive and max(positive) / min(positive) > 100:
        ax_lat.set_yscale("log")     # timeouts next to sub-ms answers: linear hides the latter
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_title("client operations")

    span = max((ev["ts"] for ev in history), default=0.0)
    bin_s = _bin_width(span)
    for outcome, (xs, ys) in throughput(history, bin_s).items():
        ax_tp.step(xs, ys, where="post", color=COLOURS[outcome], label=outcome)
    ax_tp.set_ylabel(f"ops/s ({bin_s:g}s bins)")
    ax_tp.set_xlabel("time since run start (s)")

    for n, w in enumerate(fault_windows(trace)):
        end = w.end if w.end is not None else max(span, w.start)
        for ax in (ax_lat, ax_tp):
            ax.axvspan(w.start, end, color="#d62728", alpha=0.12, lw=0,
                       label="fault" if n == 0 and ax is ax_tp else None)
        # Staggered, so windows that start close together keep readable labels.
        ax_lat.annotate(w.label, (w.start, 0.98 - 0.3 * (n % 3)), xycoords=("data", "axes fraction"),
                        fontsize=7, color="#a00", va="top", rotation=90)
    for ax in (ax_lat, ax_tp):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path_png), format="png")
    return True


def _bin_width(span: float) -> float:
    """About 50 bins over the run, rounded to 1, 2 or 5 times a power of ten."""
    if span <= 0:
        return 1.0
    raw = span / 50
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)

