"""Figures of a tuner comparison: best-so-far against trials, training steps and wall time.

One curve per tuner: the mean over its seeds (drawn where every seed has a complete trial), and a
band from the best to the worst seed. Each sweep's best-so-far is a step function of the axis,
carried forward past the sweep's last trial. PNG files with matplotlib (Agg backend) and one
interactive HTML page with plotly; the plotly figure is also written as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harness.compare import Comparison, SweepRecord

PANELS = {  # name: (x label, file stem)
    "trials": ("finished trials", "best_vs_trials"),
    "steps": ("cumulative training steps (all trials, pruned included)", "best_vs_steps"),
    "seconds": ("wall seconds since the first trial started", "best_vs_seconds"),
}
TUNER_COLORS = {"optuna": "#1f77b4", "ax": "#2ca02c", "ray": "#ff7f0e", "random": "#7f7f7f"}  # the same in every figure
COLORS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]  # other tuners, in table order
BAND = "band: best to worst seed"


@dataclass
class Curve:
    tuner: str
    seeds: int
    x: np.ndarray
    mean: np.ndarray  # nan where some seed has no complete trial yet
    lo: np.ndarray
    hi: np.ndarray


def sweep_steps(s: SweepRecord, panel: str) -> tuple[np.ndarray, np.ndarray]:
    """A sweep's best-so-far as a step function: its x values and the best after each."""
    h = s.history()
    x = np.array([getattr(e, panel) for e in h], dtype=float)
    y = np.array([np.nan if e.best is None else e.best for e in h], dtype=float)
    return x, y


def curves(comp: Comparison, panel: str) -> list[Curve]:
    """Per tuner: mean and band of its sweeps' step functions on the union of their x values,
    carried to a little past the panel's last x, so every final best shows as a segment."""
    out = []
    every = {row.tuner: [sweep_steps(s, panel) for s in comp.sweeps if s.tuner == row.tuner] for row in comp.rows}
    xs = np.concatenate([x for steps in every.values() for x, _ in steps] or [np.zeros(0)])
    if xs.size == 0:
        return out
    end = xs.max() + 0.03 * max(xs.max() - xs.min(), 1.0)
    for row in comp.rows:
        steps = every[row.tuner]
        grid = np.unique(np.concatenate([x for x, _ in steps] or [np.zeros(0)]))
        if grid.size == 0:
            continue
        grid = np.append(grid, end)
        vals = np.full((len(steps), grid.size), np.nan)
        for i, (x, y) in enumerate(steps):
            idx = np.searchsorted(x, grid, side="right") - 1  # the last event at or before each point
            ok = idx >= 0
            vals[i, ok] = y[idx[ok]]
        full = np.all(np.isfinite(vals), axis=0)
        with np.errstate(all="ignore"):
            mean = np.where(full, vals.mean(axis=0), np.nan)
            lo = np.where(full, vals.min(axis=0), np.nan)
            hi = np.where(full, vals.max(axis=0), np.nan)
        out.append(Curve(row.tuner, len(steps), grid, mean, lo, hi))
    return out


def _log_scale(all_curves: list[Curve]) -> bool:
    ys = np.concatenate([np.concatenate([c.lo, c.hi]) for c in all_curves] or [np.zeros(0)])
    ys = ys[np.isfinite(ys)]
    return bool(ys.size and ys.min() > 0 and ys.max() / ys.min() > 20)


def write_plots(comp: Comparison, out: Path) -> dict[str, Any]:
    """Write the PNGs, the HTML page and the plotly JSON into ``out``; return what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    others = iter(COLORS * (1 + len(comp.rows) // len(COLORS)))
    colors = {r.tuner: TUNER_COLORS.get(r.tuner) or next(others) for r in comp.rows}
    what = f"{comp.experiment} / {comp.benchmark}" if comp.benchmark else comp.experiment
    files: list[str] = []
    drawn: dict[str, list[str]] = {}
    by_panel = {panel: curves(comp, panel) for panel in PANELS}
    for panel, (xlabel, stem) in PANELS.items():
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        for c in by_panel[panel]:
            ax.fill_between(c.x, c.lo, c.hi, step="post", alpha=0.18, color=colors[c.tuner], linewidth=0)
            (line,) = ax.step(c.x, c.mean, where="post", color=colors[c.tuner], linewidth=2,
                              label=f"{c.tuner} (mean of {c.seeds})")
            line.set_gid(f"tuner:{c.tuner}")
        if comp.target is not None:
            ax.axhline(comp.target, color="grey", linestyle=":", linewidth=1, label="target")
        if _log_scale(by_panel[panel]):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"best {comp.metric} so far ({comp.goal})")
        ax.set_title(f"{what}: best {comp.metric} vs {panel}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(title=BAND, fontsize=8, title_fontsize=8)
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path)
        drawn[panel] = [ln.get_gid().split(":", 1)[1] for ln in ax.get_lines()
                        if (ln.get_gid() or "").startswith("tuner:")]
        plt.close(fig)
        files.append(path.name)
    traces = _plotly(comp, by_panel, colors, out)
    files += ["compare.html", "compare.plotly.json"]
    return {"dir": str(out), "files": files, "curves": drawn, "plotly_traces": traces}


def _plotly(comp: Comparison, by_panel: dict[str, list[Curve]], colors: dict[str, str],
            out: Path) -> dict[str, list[str]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[f"vs {p}" for p in PANELS],
                        horizontal_spacing=0.06)
    traces: dict[str, list[str]] = {}
    for col, (panel, (xlabel, _)) in enumerate(PANELS.items(), start=1):
        traces[panel] = []
        for c in by_panel[panel]:
            ok = np.isfinite(c.mean)
            x = c.x[ok].tolist()
            common = dict(x=x, mode="lines", line_shape="hv", legendgroup=c.tuner, hoverinfo="x+y")
            fig.add_trace(go.Scatter(y=c.hi[ok].tolist(), line=dict(width=0, color=colors[c.tuner]),
                                     showlegend=False, name=f"{c.tuner} worst seed", meta="band", **common),
                          row=1, col=col)
            fig.add_trace(go.Scatter(y=c.lo[ok].tolist(), line=dict(width=0, color=colors[c.tuner]),
                                     fill="tonexty", fillcolor=_rgba(colors[c.tuner], 0.18), showlegend=False,
                                     name=f"{c.tuner} best seed", meta="band", **common), row=1, col=col)
            fig.add_trace(go.Scatter(y=c.mean[ok].tolist(), line=dict(width=2, color=colors[c.tuner]),
                                     name=c.tuner, meta="mean", showlegend=col == 1, **common),
                          row=1, col=col)
            traces[panel].append(c.tuner)
        fig.update_xaxes(title_text=xlabel, row=1, col=col)
        if _log_scale(by_panel[panel]):
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_yaxes(title_text=f"best {comp.metric} so far ({comp.goal})", row=1, col=1)
    what = f"{comp.experiment} / {comp.benchmark}" if comp.benchmark else comp.experiment
    fig.update_layout(title=f"{what}: best {comp.metric} so far, mean over seeds ({BAND})",
                      height=480, width=1500, template="plotly_white")
    fig.write_html(out / "compare.html", include_plotlyjs=True, full_html=True)
    fig.write_json(out / "compare.plotly.json")
    return traces


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
