"""A space-time (Lamport) diagram as a hand-written SVG.

One vertical line per node, time running down; an arrow per message from
its send to its recv (a dashed stub ending in a cross for a drop); a dot per
state change (hover for the role and term); shaded bands for fault windows.
Only the first ``limit`` messages are drawn and the picture stops at the
last of them, so a long run still makes a small file; the header says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from lab.views import fault_windows, messages, nodes_of, time_span

COL = 140            # px between node lines
TOP, LEFT, BOTTOM = 70, 60, 30
MIN_H, MAX_H, PX_PER_EVENT = 300, 4000, 8
ROLE_COLOURS = {"leader": "#d62728", "primary": "#d62728", "coordinator": "#d62728",
                "candidate": "#ff7f0e", "follower": "#1f77b4", "backup": "#1f77b4"}


def _state_label(data: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in data.items() if k in ("role", "term", "phase", "status", "view")]
    return " ".join(parts) or "state"


def spacetime_svg(trace: list[dict[str, Any]], limit: int = 400) -> str:
    """The SVG text for a trace (see module doc)."""
    nodes = nodes_of(trace)
    msgs = messages(trace)
    shown = msgs[:limit]
    t0, t_last = time_span(trace)
    # Start at the first thing drawn: a run's first election timeout is otherwise blank space.
    firsts = [m.send_ts for m in shown[:1]]
    firsts += [ev["ts"] for ev in trace if ev.get("ev") in ("state", "fault")][:1]
    t0 = min(firsts, default=t0)
    # Stop the picture where the drawn messages stop, so nothing after looks message-free.
    t1 = max((m.recv_ts if m.recv_ts is not None else m.send_ts) for m in shown) \
        if len(msgs) > limit and shown else t_last
    states = [ev for ev in trace if ev.get("ev") == "state" and t0 <= ev["ts"] <= t1
              and ev.get("node") in nodes][:limit]
    windows = [w for w in fault_windows(trace) if w.start <= t1]
    height = max(MIN_H, min(MAX_H, PX_PER_EVENT * (len(shown) + len(states))))
    width = LEFT * 2 + COL * max(len(nodes) - 1, 1) + 120
    span = (t1 - t0) or 1.0
    xs = {n: LEFT + i * COL for i, n in enumerate(nodes)}

    def y(ts: float) -> float:
        return round(TOP + (min(ts, t1) - t0) / span * height, 2)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{TOP + height + BOTTOM}" font-family="sans-serif" font-size="11">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
           'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="#555"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    note = (f"first {len(shown)} of {len(msgs)} messages (to t={t1:.3f}s)" if len(msgs) > limit
            else f"{len(msgs)} messages")
    out.append(f'<text x="{LEFT}" y="18" font-size="13">space-time diagram: {escape(note)}, '
               f't={t0:.3f}s..{t1:.3f}s, time runs down</text>')
    for w in windows:
        top, bottom = y(w.start), y(w.end if w.end is not None else t1)
        out.append(f'<rect x="0" y="{top}" width="{width}" height="{max(bottom - top, 1)}" '
                   f'fill="#f4a6a6" fill-opacity="0.25"><title>{escape(w.label)}</title></rect>')
        out.append(f'<text x="{width - 4}" y="{top + 12}" text-anchor="end" fill="#a00">'
                   f'{escape(w.label)}</text>')
        if isinstance(w.target, str) and w.target in xs:     # a fault on one node: mark it
            out.append(f'<rect x="{xs[w.target] - 5}" y="{top - 5}" width="10" height="10" '
                       f'fill="#a00"><title>{escape(w.label)}</title></rect>')
    for n, x in xs.items():
        out.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + height}" stroke="#333"/>')
        out.append(f'<text x="{x}" y="{TOP - 10}" text-anchor="middle" font-weight="bold">'
                   f'{escape(n)}</text>')
    for m in shown:
        if m.src not in xs or m.dst not in xs:
            continue
        x1, y1, x2 = xs[m.src], y(m.send_ts), xs[m.dst]
        tip = escape(f"{m.type} {m.src}->{m.dst} mid={m.mid} sent {m.send_ts:.6f}s")
        if m.recv_ts is not None:
            out.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y(m.recv_ts)}" stroke="#555" '
                       f'stroke-width="0.8" marker-end="url(#arrow)"><title>{tip}</title></line>')
        else:
            xm, ym = (x1 + x2) / 2, y1 + 6
            why = f" dropped ({m.drop_reason})" if m.drop_reason else " not delivered"
            out.append(f'<g stroke="#c00" stroke-width="0.8"><title>{tip}{escape(why)}</title>'
                       f'<line x1="{x1}" y1="{y1}" x2="{xm}" y2="{ym}" stroke-dasharray="3,2"/>'
                       f'<path d="M{xm - 3},{ym - 3} L{xm + 3},{ym + 3} M{xm - 3},{ym + 3} '
                       f'L{xm + 3},{ym - 3}"/></g>')
    for ev in states:
        data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
        colour = ROLE_COLOURS.get(str(data.get("role", "")), "#2ca02c")
        label = _state_label(data)
        out.append(f'<circle cx="{xs[ev["node"]]}" cy="{y(ev["ts"])}" r="4" fill="{colour}">'
                   f'<title>{escape(ev["node"])} {escape(label)} at {ev["ts"]:.6f}s</title>'
                   '</circle>')
    out.append(f'<text x="{LEFT}" y="{TOP + height + 20}" fill="#555">'
               f'{escape(f"{t1:.3f}s")}; dots: state changes; red bands: faults; '
               f'red crosses: dropped messages</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_spacetime(trace: list[dict[str, Any]], path_svg: str | Path, limit: int = 400) -> int:
    """Write the SVG; returns how many messages it draws."""
    svg = spacetime_svg(trace, limit)
    Path(path_svg).write_text(svg, encoding="utf-8")
    return min(limit, len(messages(trace)))

