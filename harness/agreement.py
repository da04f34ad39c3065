"""How far a simulated verdict agrees with a real one: Kendall tau, its interval, the ceiling.

Pure functions on per-seed final values (tuner -> seed -> best value), so
``benchmarks/simulated_vs_real.py`` and its tests share one code path:

- :func:`scores`: per tuner the IQM of the normalized regret over seeds and the mean rank over
  the seeds every tuner ran (the verdict's two readings, :func:`harness.ranking.verdict`,
  without its bootstrap);
- :func:`kendall`: Kendall's tau-b between two per-tuner scores (``scipy.stats.kendalltau``,
  whose default variant is tau-b: ties handled, Kendall 1945); None when a side is constant;
- :func:`agreement`: tau between the simulated and the real scores; a percentile bootstrap
  interval of it over the real seeds (seeds resampled with replacement as whole blocks, every
  tuner's result on a seed kept together: the seed is the unit that varies between real runs);
  the real-vs-real split-half tau (the real seeds split at random into two halves, tau between
  the halves' scores, over ``reps`` splits: what a perfect simulator could reach against ``n / 2``
  real seeds; each half has half the seeds, so it is a conservative ceiling for tau against all
  ``n``); and the share of the real pairs that differ significantly (exact paired test,
  :func:`harness.ranking.paired_exact`, Holm-adjusted over all pairs) that the simulation orders
  the same way (by mean regret).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from harness.ranking import Goal, holm_adjust, iqm, normalized_regret, paired_exact

Finals = Mapping[str, Mapping[int, float]]


def regret_table(finals: Finals, optimum: float, worst: float, goal: Goal = "minimize",
                 tuners: list[str] | None = None) -> tuple[np.ndarray, list[str], list[int]]:
    """(seeds, tuners) normalized regrets over the seeds every tuner ran; a NaN final counts as
    regret 1 (no complete trial: no better than the worst)."""
    names = list(tuners or finals)
    common = sorted(set.intersection(*(set(finals[t]) for t in names))) if names else []
    raw = np.array([[finals[t][s] for t in names] for s in common], dtype=float).reshape(len(common), len(names))
    reg = normalized_regret(raw, optimum, worst, goal) if raw.size else raw
    return np.where(np.isnan(reg), 1.0, reg), names, common


def scores(reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tuner (column): the IQM of the regrets over seeds (rows), and the mean rank (1 = the
    lowest regret on a seed, ties averaged)."""
    reg = np.asarray(reg, dtype=float)
    if reg.shape[0] == 0:
        nan = np.full(reg.shape[1], np.nan)
        return nan, nan
    return np.asarray(iqm(reg, axis=0), dtype=float), stats.rankdata(reg, axis=1).mean(axis=0)


def kendall(a: Any, b: Any) -> float | None:
    """Kendall's tau-b between two score vectors; None when it is undefined (a constant side)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    tau = float(stats.kendalltau(x, y).statistic)
    return None if math.isnan(tau) else tau


def _interval(values: list[float | None], level: float = 0.95) -> tuple[list[float] | None, float | None, int]:
    """Percentile interval and mean of the defined values, and how many were undefined."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return None, None, len(values)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return [float(lo), float(hi)], float(v.mean()), len(values) - int(v.size)


def agreement(sim: Finals, real: Finals, optimum: float, worst: float, goal: Goal = "minimize", *,
              reps: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Simulated against real per-tuner readings (see the module doc). ``sim`` and ``real`` map
    tuner -> seed -> final best value; the tuners of ``real`` are compared (``sim`` must hold
    them all)."""
    names = [t for t in real]
    missing = [t for t in names if t not in sim]
    if missing:
        raise ValueError(f"the simulation lacks tuners {', '.join(missing)}")
    rs, _, sim_seeds = regret_table(sim, optimum, worst, goal, names)
    rr, _, real_seeds = regret_table(real, optimum, worst, goal, names)
    n = rr.shape[0]
    s_iqm, s_rank = scores(rs)
    r_iqm, r_rank = scores(rr)
    rng = np.random.default_rng(seed)
    boot_iqm: list[float | None] = []
    boot_rank: list[float | None] = []
    for _ in range(reps if n >= 2 else 0):
        b = rr[rng.integers(0, n, size=n)]
        bi, br = scores(b)
        boot_iqm.append(kendall(s_iqm, bi))
        boot_rank.append(kendall(s_rank, br))
    half_iqm: list[float | None] = []
    half_rank: list[float | None] = []
    for _ in range(reps if n >= 4 else 0):
        perm = rng.permutation(n)
        a, b = rr[perm[: n // 2]], rr[perm[n // 2: 2 * (n // 2)]]
        ai, ar = scores(a)
        bi, br = scores(b)
        half_iqm.append(kendall(ai, bi))
        half_rank.append(kendall(ar, br))
    # the real pairs that differ (exact paired test, Holm over all pairs), ordered alike by the simulation?
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    tests = [paired_exact(rr[:, i], rr[:, j], (names[i], names[j])) for i, j in pairs]
    holm = holm_adjust([t.pvalue for t in tests])
    sig = []
    for (i, j), t, p in zip(pairs, tests, holm, strict=True):
        if p is None or p >= alpha:
            continue
        real_sign = np.sign(rr[:, i].mean() - rr[:, j].mean())
        sim_sign = np.sign(rs[:, i].mean() - rs[:, j].mean())
        sig.append({"a": names[i], "b": names[j], "p_holm": p, "test": t.name,
                    "real_better": names[i] if real_sign < 0 else names[j],
                    "sim_better": None if sim_sign == 0 else names[i] if sim_sign < 0 else names[j],
                    "same_order": bool(real_sign == sim_sign)})
    ci_iqm, _, undef_iqm = _interval(boot_iqm)
    ci_rank, _, undef_rank = _interval(boot_rank)
    sh_iqm_ci, sh_iqm, _ = _interval(half_iqm)
    sh_rank_ci, sh_rank, _ = _interval(half_rank)
    return {
        "tuners": names, "real_seeds": real_seeds, "sim_seeds": sim_seeds,
        "per_tuner": {t: {"sim_iqm_regret": float(s_iqm[k]), "real_iqm_regret": float(r_iqm[k]),
                          "sim_mean_rank": float(s_rank[k]), "real_mean_rank": float(r_rank[k])}
                      for k, t in enumerate(names)},
        "tau_iqm": kendall(s_iqm, r_iqm), "tau_iqm_ci": ci_iqm, "tau_iqm_undefined_replicates": undef_iqm,
        "tau_rank": kendall(s_rank, r_rank), "tau_rank_ci": ci_rank, "tau_rank_undefined_replicates": undef_rank,
        "split_half_tau_iqm": sh_iqm, "split_half_tau_iqm_ci": sh_iqm_ci,
        "split_half_tau_rank": sh_rank, "split_half_tau_rank_ci": sh_rank_ci,
        "significant_pairs": len(sig), "significant_same_order": sum(p["same_order"] for p in sig),
        "significant_share": (sum(p["same_order"] for p in sig) / len(sig)) if sig else None,
        "pairs": sig, "reps": reps,
    }


__all__ = ["agreement", "kendall", "regret_table", "scores"]
