"""Figures of Pareto fronts: one sweep's trials and front, or several tuners' fronts overlaid.

PNG with matplotlib (Agg backend) and an interactive HTML page with plotly, like
:mod:`harness.plots`. With more than two objectives the first two are drawn (the front is
still the one of every objective, so some front members look dominated in the picture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from harness.pareto import pareto_mask

PNG = "pareto.png"
HTML = "pareto.html"


def _staircase(front: np.ndarray, goals: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The attainment line of a 2-D front: its points joined by steps (sorted by the first axis)."""
    if front.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(front[:, 0] * (1 if goals[0] == "minimize" else -1))
    f = front[order]
    xs, ys = [f[0, 0]], [f[0, 1]]
    for a, b in zip(f[:-1], f[1:], strict=True):
        xs += [b[0], b[0]]
        ys += [a[1], b[1]]
    return np.array(xs), np.array(ys)


def _label(name: str, goal: str) -> str:
    return f"{name} ({'lower' if goal == 'minimize' else 'higher'} is better)"


def write_fronts(fronts: Mapping[str, np.ndarray], names: Sequence[str], goals: Sequence[str], out: Path,
                 title: str, reference: Sequence[float] | None = None, stem: str = "pareto",
                 labels: Mapping[str, Sequence[str]] | None = None) -> list[Path]:
    """Draw each group's points (``fronts``: label -> ``(n, m)`` points, NaN rows skipped) with its
    front highlighted and joined by a staircase; write ``stem.png`` and ``stem.html`` into ``out``.
    ``labels`` gives per-point hover text for the HTML (e.g. the trial number and params)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    out.mkdir(parents=True, exist_ok=True)
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f", "#8c564b", "#e377c2"]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    pfig = go.Figure()
    single = len(fronts) == 1
    for i, (label, pts) in enumerate(fronts.items()):
        pts = np.asarray(pts, dtype=float).reshape(-1, len(names))
        keep = ~np.isnan(pts).any(axis=1)
        text = np.asarray(list((labels or {}).get(label, [""] * len(pts))), dtype=object)
        pts, text = pts[keep], text[keep] if text.size == keep.size else np.full(keep.sum(), "", dtype=object)
        if pts.shape[0] == 0:
            continue
        mask = pareto_mask(pts, goals)
        color = colors[i % len(colors)]
        if single:  # one sweep: every trial in grey, the front in colour
            ax.scatter(pts[~mask, 0], pts[~mask, 1], s=14, c="#9a9a9a", label="dominated trials")
            pfig.add_trace(go.Scatter(x=pts[~mask, 0], y=pts[~mask, 1], mode="markers", name="dominated trials",
                                      marker={"color": "#9a9a9a", "size": 6}, text=text[~mask]))
        else:
            ax.scatter(pts[~mask, 0], pts[~mask, 1], s=8, c=color, alpha=0.25)
        xs, ys = _staircase(pts[mask][:, :2], goals)
        name = "Pareto front" if single else label
        ax.plot(xs, ys, "-", c=color, lw=1.2, alpha=0.8)
        ax.scatter(pts[mask, 0], pts[mask, 1], s=28, c=color, edgecolors="black", linewidths=0.5,
                   label=f"{name} ({int(mask.sum())})", zorder=3)
        pfig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": color, "width": 1},
                                  showlegend=False, hoverinfo="skip"))
        pfig.add_trace(go.Scatter(x=pts[mask, 0], y=pts[mask, 1], mode="markers", name=f"{name} ({int(mask.sum())})",
                                  marker={"color": color, "size": 9, "line": {"color": "black", "width": 1}},
                                  text=text[mask]))
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], marker="x", c="black", label="reference point")
        pfig.add_trace(go.Scatter(x=[reference[0]], y=[reference[1]], mode="markers", name="reference point",
                                  marker={"symbol": "x", "color": "black", "size": 10}))
    ax.set_xlabel(_label(names[0], goals[0]))
    ax.set_ylabel(_label(names[1], goals[1]))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png, html = out / f"{stem}.png", out / f"{stem}.html"
    fig.savefig(png)
    plt.close(fig)
    pfig.update_layout(title=title, xaxis_title=_label(names[0], goals[0]), yaxis_title=_label(names[1], goals[1]),
                       template="plotly_white", width=900, height=620)
    pfig.write_html(html, include_plotlyjs=True, full_html=True)
    return [png, html]
