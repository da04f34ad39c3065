"""Figures of a verdict: the critical-difference diagram, and regret / rank against the budget.

- :func:`cd_diagram`: Demsar's (2006) critical-difference diagram: an axis of mean ranks (1 =
  best, on the left), each tuner joined to its mean rank by a line from its label (the better
  half on the left, the worse half on the right), a scale bar as long as the critical
  difference, and thick bars joining tuners whose mean ranks differ by less than it
  (:func:`harness.ranking.cd_groups`). HPO-B draws them at 25 / 50 / 100 trials.
- :func:`regret_rank_curves`: per tuner, the IQM over seeds of the normalized regret with its
  95% stratified-bootstrap band (rliable, Agarwal et al. NeurIPS 2021; Syne Tune's default
  aggregation), and the mean rank per budget step with a bootstrap band over seeds (HPO-B,
  YAHPO Gym).

Both take plain data and an output path prefix and write ``<prefix>.png`` (matplotlib, Agg
backend) and ``<prefix>.html``, one self-contained page (the PNG inlined as base64 beside a table
of the numbers drawn, so it opens anywhere without network or plotly); both return the written
paths. Colors are the ones of :mod:`harness.plots`, so a tuner looks the same in every figure.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.plots import COLORS, TUNER_COLORS
from harness.ranking import Goal, cd_groups, curve_band, iqm, normalized_regret, ranks_per_seed


def tuner_colors(tuners: Sequence[str]) -> dict[str, str]:
    """The colors of :mod:`harness.plots`: fixed ones for the shipped tuners, others in order."""
    others = iter(COLORS * (1 + len(tuners) // len(COLORS)))
    return {t: TUNER_COLORS.get(t) or next(others) for t in tuners}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    p = Path(prefix)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.with_name(p.name + ".png"), p.with_name(p.name + ".html")


def _html_page(title: str, png: Path, header: Sequence[str], rows: Sequence[Sequence[Any]],
               notes: Sequence[str] = ()) -> str:
    """One self-contained page: the PNG inlined, a table of the numbers, notes."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    extra = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
            "td:first-child{text-align:left}</style></head><body>"
            f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{data}'>"
            f"<table><tr>{head}</tr>{body}</table>{extra}</body></html>\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "nan" if np.isnan(v) else f"{float(v):.4g}"
    return str(v)


# -- the critical-difference diagram -------------------------------------------------------------
def cd_diagram(mean_ranks: Mapping[str, float], cd: float, out_prefix: str | Path, *,
               groups: list[list[str]] | None = None, title: str | None = None,
               notes: Sequence[str] = ()) -> list[Path]:
    """Draw Demsar's critical-difference diagram; write ``<prefix>.png`` and ``<prefix>.html``.

    ``mean_ranks`` maps tuner -> mean rank (1 = best), ``cd`` is the critical difference
    (:func:`harness.ranking.nemenyi_cd`); ``groups`` defaults to
    :func:`harness.ranking.cd_groups` (pass ``[all tuners]`` when the Friedman test did not
    reject, as nothing can then be told apart). Returns ``[png, html]``.
    """
    if not mean_ranks:
        raise ValueError("no tuners to draw")
    plt = _pyplot()
    png, page = _paths(out_prefix)
    order = sorted(mean_ranks, key=lambda t: (mean_ranks[t], t))
    k = len(order)
    groups = cd_groups(mean_ranks, cd) if groups is None else groups
    bars = [g for g in groups if len(g) >= 2]
    colors = tuner_colors(order)
    lo_axis, hi_axis = 1, max(k, int(np.ceil(max(mean_ranks.values()))))
    left = order[: (k + 1) // 2]  # the better half, labelled on the left
    right = order[(k + 1) // 2:]
    rows = max(len(left), len(right))
    height = 1.6 + 0.32 * (rows + len(bars))
    fig, ax = plt.subplots(figsize=(7.5, height), dpi=110)
    ax.set_xlim(lo_axis - 1.0, hi_axis + 1.0)
    ax.axis("off")
    # the axis of ranks
    ax.plot([lo_axis, hi_axis], [0, 0], color="black", linewidth=1)
    for r in range(lo_axis, hi_axis + 1):
        ax.plot([r, r], [0, 0.12], color="black", linewidth=1)
        ax.text(r, 0.22, str(r), ha="center", va="bottom", fontsize=9)
    for r in np.arange(lo_axis + 0.5, hi_axis, 1.0):
        ax.plot([r, r], [0, 0.06], color="black", linewidth=0.7)
    # the scale bar of the critical difference
    if np.isfinite(cd) and cd > 0:
        ax.plot([lo_axis, lo_axis + cd], [1.05, 1.05], color="black", linewidth=1.2)
        for x in (lo_axis, lo_axis + cd):
            ax.plot([x, x], [0.98, 1.12], color="black", linewidth=1.2)
        ax.text(lo_axis + cd / 2, 1.15, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    # bars of the groups not significantly different, just under the axis
    for i, g in enumerate(bars):
        y = -0.18 - 0.16 * i
        xs = [mean_ranks[t] for t in g]
        ax.plot([min(xs) - 0.03, max(xs) + 0.03], [y, y], color="black", linewidth=3, solid_capstyle="round")
    top = -0.35 - 0.16 * len(bars)
    for side, names in (("left", left), ("right", right)):
        for i, t in enumerate(names if side == "left" else list(reversed(names))):
            y = top - 0.55 * i
            x = mean_ranks[t]
            edge = lo_axis - 0.6 if side == "left" else hi_axis + 0.6
            ax.plot([x, x, edge], [0, y, y], color=colors[t], linewidth=1.2)
            label = f"{t} ({x:.2f})"
            ax.text(edge + (-0.05 if side == "left" else 0.05), y, label, fontsize=9, va="center",
                    ha="right" if side == "left" else "left", color=colors[t])
    ax.set_ylim(top - 0.55 * rows - 0.1, 1.5)
    ax.set_title(title or "mean ranks (1 = best); bars join tuners within the critical difference", fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    in_group = {t: ", ".join(" / ".join(g) for g in groups if t in g and len(g) >= 2) or "-" for t in order}
    table = [[t, float(mean_ranks[t]), in_group[t]] for t in order]
    page.write_text(_html_page(title or "Critical-difference diagram", png,
                               ["tuner", "mean rank", "not significantly different from"], table,
                               [f"Nemenyi critical difference: {cd:.4g} (Demsar 2006).", *notes]),
                    encoding="utf-8")
    return [png, page]


# -- regret and rank against the budget --------------------------------------------------------------
def regret_rank_curves(curves: Mapping[str, Any], optimum: float, worst: float, goal: Goal,
                       out_prefix: str | Path, *, x: Sequence[float] | None = None,
                       xlabel: str = "finished trials", reps: int = 1000, seed: int = 0,
                       title: str | None = None) -> list[Path]:
    """Normalized regret (IQM over seeds, 95% bootstrap band) and mean rank against the budget.

    ``curves`` maps tuner -> (seeds, budget) best-so-far values on a common budget grid ``x``
    (default 1..budget); seeds are paired by position for the ranks
    (:func:`harness.ranking.ranks_per_seed`). A NaN (no complete trial yet) counts as regret 1
    and ranks worst. Bands are percentile bootstraps over seeds (:func:`harness.ranking.curve_band`)
    of the IQM (regret) and of the mean (rank). Writes ``<prefix>.png`` (two panels) and
    ``<prefix>.html``; returns ``[png, html]``.
    """
    if not curves:
        raise ValueError("no tuners to draw")
    names = list(curves)
    raw = {t: np.atleast_2d(np.asarray(curves[t], dtype=float)) for t in names}
    regret = {t: np.where(np.isnan(a), 1.0, normalized_regret(a, optimum, worst, goal)) for t, a in raw.items()}
    ranks = ranks_per_seed(raw, goal)
    budget = next(iter(raw.values())).shape[1]
    xs = np.arange(1, budget + 1, dtype=float) if x is None else np.asarray(x, dtype=float)
    if xs.shape != (budget,):
        raise ValueError(f"x has {xs.size} points for a budget of {budget}")
    colors = tuner_colors(names)
    plt = _pyplot()
    png, page = _paths(out_prefix)
    fig, (ax_r, ax_k) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    table: list[list[Any]] = []
    positive = []
    for t in names:
        c, lo, hi = curve_band(regret[t], iqm, reps=reps, seed=seed)
        ax_r.fill_between(xs, lo, hi, step="post", alpha=0.18, color=colors[t], linewidth=0)
        ax_r.step(xs, c, where="post", color=colors[t], linewidth=2, label=f"{t} (IQM of {raw[t].shape[0]})")
        positive.append(lo)
        m, mlo, mhi = curve_band(ranks[t], np.mean, reps=reps, seed=seed)
        ax_k.fill_between(xs, mlo, mhi, step="post", alpha=0.18, color=colors[t], linewidth=0)
        ax_k.step(xs, m, where="post", color=colors[t], linewidth=2, label=t)
        table.append([t, raw[t].shape[0], float(c[-1]), float(lo[-1]), float(hi[-1]), float(m[-1])])
    low = np.concatenate(positive)
    if low.size and low.min() > 0 and np.max(np.concatenate([regret[t].ravel() for t in names])) / low.min() > 20:
        ax_r.set_yscale("log")
    ax_r.set_xlabel(xlabel)
    ax_r.set_ylabel(f"normalized regret ({goal}; 0 = optimum)")
    ax_r.set_title("normalized regret: IQM over seeds, 95% stratified-bootstrap band", fontsize=10)
    ax_k.set_xlabel(xlabel)
    ax_k.set_ylabel("mean rank (1 = best)")
    ax_k.set_ylim(0.8, len(names) + 0.2)
    ax_k.set_title("mean rank across seeds, 95% bootstrap band", fontsize=10)
    for ax in (ax_r, ax_k):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    page.write_text(_html_page(title or "Normalized regret and mean rank against the budget", png,
                               ["tuner", "seeds", "final IQM regret", "95% lower", "95% upper",
                                "final mean rank"], table,
                               [f"Regret normalized on [{optimum:.6g}, {worst:.6g}] ({goal}); "
                                f"bands: percentile bootstrap over seeds, {reps} replicates."]),
                    encoding="utf-8")
    return [png, page]
