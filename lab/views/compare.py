"""``zlab compare``'s picture (one PNG, matplotlib Agg): availability under each fault, a cell
per row and fault with a cross where a check was violated, and the fault-free latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_compare_plot(table: dict[str, Any], path_png: str | Path) -> bool:
    """Write the PNG from a compare table (table.json's content); False when matplotlib is
    missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    rows = table["rows"]
    faults = [f["fault"] for f in table["suite"]]
    grid: list[list[float]] = []
    for r in rows:
        line = []
        for f in faults:
            a = (r["faults"].get(f) or {}).get("availability") or {}
            v = a.get("during")
            line.append(float("nan") if v is None else v * 100.0)
        grid.append(line)
    fig = Figure(figsize=(12, 0.55 * len(rows) + 2.2), dpi=100)
    FigureCanvasAgg(fig)
    ax, lat = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(faults)), faults)
    ax.set_yticks(range(len(rows)), [r["row"] for r in rows])
    ax.set_title("client ops served during each fault (%); x = a check violated")
    for i, r in enumerate(rows):
        for j, f in enumerate(faults):
            cell = r["faults"].get(f) or {}
            bad = any(v == "violated" for v in (cell.get("verdicts") or {}).values())
            v = grid[i][j]
            text = ("x " if bad else "") + ("-" if v != v else f"{v:.0f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    fontweight="bold" if bad else "normal")
    fig.colorbar(im, ax=ax, fraction=0.03)
    names = [r["row"] for r in rows]
    p50 = [(r.get("latency_ms") or {}).get("p50") or 0.0 for r in rows]   # 0: no ok op
    p99 = [(r.get("latency_ms") or {}).get("p99") or 0.0 for r in rows]
    ys = range(len(rows))
    lat.barh([y + 0.2 for y in ys], p99, height=0.4, color="#ff7f0e", label="p99")
    lat.barh([y - 0.2 for y in ys], p50, height=0.4, color="#1f77b4", label="p50")
    lat.set_yticks(list(ys), names)
    lat.invert_yaxis()
    for y, a, b in zip(ys, p50, p99, strict=True):
        if b:
            lat.text(b, y, f" {a:.0f} / {b:.0f}", va="center", fontsize=7)
    lat.set_xlabel("latency without faults, ms (p50 / p99)")
    lat.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path_png))
    return True
