"""Figures of Pareto fronts: one sweep's trials and front, or several tuners' fronts overlaid.

PNG with matplotlib (Agg backend) and an interactive HTML page with plotly, like
:mod:`harness.plots`. Two objectives: the trials in the plane, each front joined by its
staircase (attainment line). Three or more: a pairwise scatter matrix (every pair of
objectives, plotly's ``splom`` in the HTML), with the front computed on every objective
highlighted in each panel and no line drawn: a staircase through a 2-D projection of a
higher-dimensional front would join points that are not neighbours, and a front member can
look dominated in a projection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.pareto import pareto_mask

PNG = "pareto.png"
HTML = "pareto.html"
COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f", "#8c564b", "#e377c2"]


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


@dataclass
class _Group:
    """One group's complete points, which are on its front, and their hover text."""

    label: str
    color: str
    points: np.ndarray
    on: np.ndarray
    text: np.ndarray


def _groups(fronts: Mapping[str, np.ndarray], m: int, goals: Sequence[str],
            labels: Mapping[str, Sequence[str]] | None) -> list[_Group]:
    out = []
    for i, (label, pts) in enumerate(fronts.items()):
        pts = np.asarray(pts, dtype=float).reshape(-1, m)
        keep = ~np.isnan(pts).any(axis=1)
        text = np.asarray(list((labels or {}).get(label, [""] * len(pts))), dtype=object)
        text = text[keep] if text.size == keep.size else np.full(int(keep.sum()), "", dtype=object)
        pts = pts[keep]
        if pts.shape[0]:
            out.append(_Group(label, COLORS[i % len(COLORS)], pts, pareto_mask(pts, goals), text))
    return out


def front_figures(fronts: Mapping[str, np.ndarray], names: Sequence[str], goals: Sequence[str], title: str,
                  reference: Sequence[float] | None = None,
                  labels: Mapping[str, Sequence[str]] | None = None) -> tuple[Any, Any]:
    """The matplotlib figure and the plotly figure of :func:`write_fronts` (not written)."""
    import matplotlib

    matplotlib.use("Agg")
    groups = _groups(fronts, len(names), goals, labels)
    if len(names) >= 3:
        return _matrix(groups, names, goals, title, reference)
    return _plane(groups, names, goals, title, reference)


def write_fronts(fronts: Mapping[str, np.ndarray], names: Sequence[str], goals: Sequence[str], out: Path,
                 title: str, reference: Sequence[float] | None = None, stem: str = "pareto",
                 labels: Mapping[str, Sequence[str]] | None = None) -> list[Path]:
    """Draw each group's points (``fronts``: label -> ``(n, m)`` points, NaN rows skipped) with its
    front highlighted (two objectives: joined by a staircase; three or more: a pairwise scatter
    matrix); write ``stem.png`` and ``stem.html`` into ``out``. ``labels`` gives per-point hover
    text for the HTML (e.g. the trial number and params)."""
    import matplotlib.pyplot as plt

    fig, pfig = front_figures(fronts, names, goals, title, reference, labels)
    out.mkdir(parents=True, exist_ok=True)
    png, html = out / f"{stem}.png", out / f"{stem}.html"
    fig.savefig(png)
    plt.close(fig)
    pfig.write_html(html, include_plotlyjs=True, full_html=True)
    return [png, html]


def _plane(groups: list[_Group], names: Sequence[str], goals: Sequence[str], title: str,
           reference: Sequence[float] | None) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    pfig = go.Figure()
    single = len(groups) == 1
    for g in groups:
        pts, mask, text, color = g.points, g.on, g.text, g.color
        if single:  # one sweep: every trial in grey, the front in colour
            ax.scatter(pts[~mask, 0], pts[~mask, 1], s=14, c="#9a9a9a", label="dominated trials")
            pfig.add_trace(go.Scatter(x=pts[~mask, 0], y=pts[~mask, 1], mode="markers", name="dominated trials",
                                      marker={"color": "#9a9a9a", "size": 6}, text=text[~mask]))
        else:
            ax.scatter(pts[~mask, 0], pts[~mask, 1], s=8, c=color, alpha=0.25)
        xs, ys = _staircase(pts[mask][:, :2], goals)
        name = "Pareto front" if single else g.label
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
    pfig.update_layout(title=title, xaxis_title=_label(names[0], goals[0]), yaxis_title=_label(names[1], goals[1]),
                       template="plotly_white", width=900, height=620)
    return fig, pfig


def _matrix(groups: list[_Group], names: Sequence[str], goals: Sequence[str], title: str,
            reference: Sequence[float] | None) -> tuple[Any, Any]:
    """Every pair of objectives: row ``i``, column ``j`` plots objective ``j`` (x) against ``i`` (y);
    the diagonal names the objective. Front membership is that of all objectives."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    m = len(names)
    fig, axes = plt.subplots(m, m, figsize=(2.6 * m + 1, 2.6 * m), dpi=110, squeeze=False)
    pfig = go.Figure()
    single = len(groups) == 1
    for i in range(m):
        for j in range(m):
            ax = axes[i, j]
            if i == j:
                ax.text(0.5, 0.5, _label(names[i], goals[i]).replace(" (", "\n("), ha="center", va="center",
                        fontsize=9, transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            for g in groups:
                rest, front = g.points[~g.on], g.points[g.on]
                ax.scatter(rest[:, j], rest[:, i], s=8, c="#9a9a9a" if single else g.color,
                           alpha=1.0 if single else 0.25, label="dominated trials" if single else None)
                ax.scatter(front[:, j], front[:, i], s=20, c=g.color, edgecolors="black", linewidths=0.4,
                           zorder=3, label=f"{'Pareto front' if single else g.label} ({int(g.on.sum())})")
            if reference is not None:
                ax.scatter([reference[j]], [reference[i]], marker="x", c="black", label="reference point")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == m - 1:
                ax.set_xlabel(names[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(names[i], fontsize=8)
    handles, texts = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, texts, loc="center right", fontsize=8)
    fig.suptitle(f"{title}\nevery pair of objectives; the front is that of all {m}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 0.95))
    for g in groups:
        for part, on in (("dominated trials" if single else f"{g.label} dominated", False),
                         ("Pareto front" if single else g.label, True)):
            sel = g.on == on
            if not sel.any():
                continue
            pfig.add_trace(go.Splom(
                dimensions=[{"label": n, "values": g.points[sel, k]} for k, n in enumerate(names)],
                name=f"{part} ({int(sel.sum())})", text=g.text[sel], diagonal_visible=False,
                marker={"color": "#9a9a9a" if single and not on else g.color, "size": 8 if on else 5,
                        "opacity": 1.0 if on or single else 0.3,
                        "line": {"color": "black", "width": 1 if on else 0}}))
    if reference is not None:
        pfig.add_trace(go.Splom(dimensions=[{"label": n, "values": [reference[k]]} for k, n in enumerate(names)],
                                name="reference point", diagonal_visible=False,
                                marker={"symbol": "x", "color": "black", "size": 10}))
    pfig.update_layout(title=f"{title} (every pair of objectives)", template="plotly_white",
                       width=300 * m + 200, height=300 * m + 100)
    return fig, pfig
