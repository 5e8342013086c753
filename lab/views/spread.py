"""How values spread through a gossip run, beside what the model predicts (one PNG).

Left: the mean fraction of live nodes holding a value against rounds since a node accepted
it (one round = the core's ``interval``), measured from the trace, beside the Monte Carlo of
the same model (lab/epidemic.py: same nodes, fanout, interval, mode, stop rule, link delay and
loss) and Serf's formula. Right: how many rounds each value took to reach every live node,
measured and predicted. matplotlib is optional: without it nothing is written (False); a run
that is not a gossip broadcast run gets no picture (None).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lab import epidemic
from lab.spread import arrivals, facts, spread_curves, stable_times

TRIALS = 200          # Monte Carlo trials behind the predicted curve


def spread_data(trace: list[dict[str, Any]], history: list[dict[str, Any]],
                scenario: dict[str, Any]) -> dict[str, Any] | None:
    """The curves the picture draws, or None when the run has nothing to draw."""
    model = epidemic.model_for(scenario)
    if model is None:
        return None
    f, a = facts(history, None), arrivals(trace)
    measured_s = list(stable_times(f, a).values())
    if not measured_s:
        return None
    period = model.interval
    limit = max(max(measured_s), period) * 1.2
    step = limit / 120
    measured = spread_curves(f, a, step, limit)
    runs = epidemic.trials(model, TRIALS if model.n <= 200 else 40, seed=0)
    grid = [x for x, _ in measured]
    predicted = epidemic.curve(runs, grid)
    return {"n": model.n, "fanout": model.fanout, "interval": period,
            "rounds": [x / period for x in grid], "measured": [y for _, y in measured],
            "predicted": predicted,
            "serf": [epidemic.serf_fraction(model.n, model.fanout, x / period, model.loss) for x in grid],
            "measured_rounds": [s / period for s in measured_s],
            "predicted_rounds": [epidemic.rounds_to_all(t, period) for t in runs
                                 if not math.isinf(max(t))]}


def write_spread(trace: list[dict[str, Any]], history: list[dict[str, Any]],
                 scenario: dict[str, Any], path_png: str | Path) -> bool | None:
    data = spread_data(trace, history, scenario)
    if data is None:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, hist = fig.subplots(1, 2)
    ax.plot(data["rounds"], data["measured"], color="#1f77b4", lw=2, label="measured (mean over values)")
    ax.plot(data["rounds"], data["predicted"], color="#ff7f0e", ls="--", label="Monte Carlo, same model")
    ax.plot(data["rounds"], data["serf"], color="#7f7f7f", ls=":", label="Serf: 1/(1+(n+1)e^(-c·n·x)), no link delay")
    ax.set_xlabel(f"rounds since accepted (1 round = {data['interval'] * 1000:g} ms)")
    ax.set_ylabel("fraction of live nodes holding it")
    ax.set_title(f"spread: {data['n']} nodes, fanout {data['fanout']}")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    top = max(data["measured_rounds"] + data["predicted_rounds"])
    bins = [top * i / 30 for i in range(31)]
    hist.hist(data["measured_rounds"], bins=bins, density=True, alpha=0.6, color="#1f77b4",
              label=f"measured ({len(data['measured_rounds'])} values)")
    hist.hist(data["predicted_rounds"], bins=bins, density=True, alpha=0.5, color="#ff7f0e",
              label=f"Monte Carlo ({len(data['predicted_rounds'])} trials)")
    hist.set_xlabel("rounds until every live node held it")
    hist.set_ylabel("density")
    hist.legend(loc="upper right", fontsize=8)
    for a in (ax, hist):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path_png), format="png")
    return True
