"""Statistics that turn a tuner comparison into a verdict: regret, IQM, bootstrap intervals, ranks.

Pure functions on plain arrays (no MLflow, no tuner objects), so ``harness compare``,
``harness benchmark`` and ``harness tabulate`` share one code path, and every number can be
checked by hand. What each function follows:

- :func:`normalized_regret`: ``(y - y_opt) / (y_worst - y_opt)`` on a table's range, as YAHPO Gym
  (Pfisterer et al., AutoML 2022) and HPO-B (Arango et al., NeurIPS 2021 Datasets & Benchmarks)
  report it, clipped to [0, 1].
- :func:`iqm` and :func:`stratified_bootstrap_ci`: the interquartile mean and the stratified
  percentile bootstrap of rliable (Agarwal et al., "Deep Reinforcement Learning at the Edge of
  the Statistical Precipice", NeurIPS 2021): runs are resampled with replacement within each
  task (stratum), never across tasks.
- :func:`ranks_per_seed` / :func:`ranks_over_time`: the average rank per budget step across
  seeds of HPO-B and YAHPO (rank 1 = best; ties get the average of the ranks they span).
- :func:`friedman`, :func:`nemenyi_cd`, :func:`cd_groups`: Demsar, "Statistical Comparisons of
  Classifiers over Multiple Data Sets", JMLR 7 (2006), section 3.2.2: the Friedman test on the
  ranks within blocks, its Iman-Davenport F form, and the Nemenyi critical difference
  ``q_alpha * sqrt(k (k + 1) / (6 n))`` with ``q_alpha`` the studentized range statistic over
  sqrt(2) (Demsar's table 5: 2.569 for k = 4 at alpha = 0.05).
- :func:`normalization`: the one (optimum, worst) pair every verdict uses, real or simulated:
  optimum = the best per-configuration MEAN over seeds (or a known optimum), worst = the median
  configuration's mean, so neither one lucky seed nor one diverged trial sets the scale.
- :func:`paired_exact`: two tuners over paired seeds get an exact test, the Wilcoxon signed-rank
  test's exact null distribution (``scipy.stats.wilcoxon(method="exact")``) when the nonzero
  differences have no ties, else the exact sign test (``scipy.stats.binomtest``); the chi-square
  Friedman approximation is far off at small n (5 of 5 wins: 0.025 against the exact 0.0625).
- :func:`holm_adjust`: Holm's (1979) step-down adjustment of a family of p values.
- :func:`verdict`: the per-tuner summary the benchmark JSON carries (``normalized_regret``,
  ``iqm``, ``ci95``, ``mean_rank``), plus the Friedman / Nemenyi reading of the ranks (three or
  more tuners) or the exact paired test (two). An interval from fewer than :data:`MIN_CI_SEEDS`
  seeds is the bootstrap's spread of a handful of values, not a 95% interval: the row says so
  (``ci_level`` None and a ``ci_note``).

``autorank`` (PyPI) implements the same Friedman / Nemenyi procedure; it is not required here:
everything below uses scipy only (``scipy.stats.friedmanchisquare``, ``scipy.stats.rankdata``,
``scipy.stats.studentized_range``, ``scipy.stats.trim_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy import stats

Goal = Literal["minimize", "maximize"]
Statistic = Callable[..., Any]  # f(x) -> float; ideally also f(x, axis=1) -> one value per row

GOALS = ("minimize", "maximize")
VERDICT_KEYS = ("normalized_regret", "iqm", "ci95", "mean_rank")  # pinned by the benchmark JSON
MIN_CI_SEEDS = 5  # fewer seeds: the percentile bootstrap cannot give a 95% interval (see verdict)


def _check_goal(goal: str) -> None:
    if goal not in GOALS:
        raise ValueError(f"goal must be 'minimize' or 'maximize', not {goal!r}")


# -- regret ------------------------------------------------------------------------------------
def normalized_regret(best_so_far: Any, optimum: float, worst: float, goal: Goal = "minimize") -> Any:
    """Normalized regret ``(best - optimum) / (worst - optimum)``, clipped to [0, 1].

    ``optimum`` and ``worst`` are the best and the worst value of the task's table (or of every
    value any tuner saw), so 0 means the optimum was found and 1 means no better than the worst
    configuration (YAHPO Gym, HPO-B). The same expression serves both goals: for ``minimize``
    the optimum is the table's minimum, for ``maximize`` its maximum; ``goal`` checks that the
    two bounds are the right way round. Values outside the range (a table that missed the true
    optimum, a diverged run) are clipped. NaN (no complete trial yet) stays NaN. Returns a float
    for a scalar input, else an array of the input's shape.
    """
    _check_goal(goal)
    optimum, worst = float(optimum), float(worst)
    if not (math.isfinite(optimum) and math.isfinite(worst)):
        raise ValueError(f"optimum and worst must be finite, got {optimum} and {worst}")
    if optimum == worst:
        raise ValueError(f"optimum and worst are equal ({optimum}): the regret is undefined")
    if (goal == "minimize") != (optimum < worst):
        raise ValueError(f"for goal {goal!r} the optimum ({optimum}) must be "
                         f"{'below' if goal == 'minimize' else 'above'} the worst value ({worst})")
    y = np.asarray(best_so_far, dtype=float)
    r = np.clip((y - optimum) / (worst - optimum), 0.0, 1.0)
    return float(r) if r.ndim == 0 else r


# -- one normalization for every verdict ---------------------------------------------------------
@dataclass(frozen=True)
class Normalization:
    """The range a verdict's regret is normalized on, and where it comes from."""

    optimum: float
    worst: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"optimum": self.optimum, "worst": self.worst, "source": self.source}


def normalization(values: Mapping[Any, Sequence[float]] | Sequence[Sequence[float]], goal: Goal = "minimize",
                  *, optimum: float | None = None, worst: float | None = None,
                  worst_quantile: float = 0.5, what: str = "configurations") -> Normalization:
    """(optimum, worst) of the normalized regret from each configuration's values over seeds.

    ``values`` maps a configuration to its values (one per seed; a real sweep's trial is a
    configuration with one seed). Non-finite values (a diverged or failed seed) are dropped; a
    configuration with no finite value is left out. Then, over the configurations' MEANS:

    - optimum: the best mean (a configuration that is good on average, not one lucky seed of
      one configuration; YAHPO Gym and HPO-B take the table's best value, which on a noisy table
      is a seed's luck: a tuner can then never reach regret 0). A tuner's single best trial can
      beat it: its regret clips at 0;
    - worst: the ``worst_quantile`` quantile toward the bad side (0.5: the median configuration),
      not the very worst: one diverged configuration (a LocoProp loss of 1e25 beside an optimum
      of 17) would squash every other regret to 0. Regret 1 = no better than a typical
      configuration.

    ``optimum`` / ``worst`` given override the computed ones (a known optimum); ``source`` says
    which came from where. Raises ``ValueError`` with one line when nothing is finite.
    """
    _check_goal(goal)
    if not 0.0 < worst_quantile < 1.0:
        raise ValueError(f"worst_quantile must be in (0, 1), got {worst_quantile}")
    groups = values.values() if isinstance(values, Mapping) else values
    means = []
    for v in groups:
        a = np.asarray(list(v), dtype=float).ravel()
        a = a[np.isfinite(a)]
        if a.size:
            means.append(float(a.mean()))
    parts = []
    if optimum is None or worst is None:
        if not means:
            raise ValueError(f"no {what} with a finite value: the regret range is undefined")
        m = np.asarray(means)
        q = worst_quantile if goal == "minimize" else 1.0 - worst_quantile
        best, typical = (float(m.min()), float(np.quantile(m, q))) if goal == "minimize" else \
            (float(m.max()), float(np.quantile(m, q)))
    if optimum is None:
        optimum = best
        parts.append(f"optimum: the best per-configuration mean over seeds of {len(means)} {what}")
    else:
        parts.append("optimum: given")
    if worst is None:
        worst = typical
        label = "median" if worst_quantile == 0.5 else f"{worst_quantile:g} quantile (bad side)"
        parts.append(f"worst: the {label} of the per-configuration means")
    else:
        parts.append("worst: given")
    return Normalization(float(optimum), float(worst), "; ".join(parts))


# -- exact paired tests, Holm --------------------------------------------------------------------
@dataclass
class PairedTest:
    """An exact two-sided test of paired samples (two tuners on the same seeds)."""

    name: str  # "wilcoxon signed-rank (exact)" | "sign test (exact binomial)" | "none"
    statistic: float | None
    pvalue: float | None
    n: int  # pairs with a nonzero difference (the ones that inform the test)
    pairs: int  # pairs compared (zeros included)
    wins_a: int  # pairs where a is lower (better for minimize)
    wins_b: int
    note: str = ""
    a: str = "a"
    b: str = "b"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_exact(a: Any, b: Any, labels: tuple[str, str] = ("a", "b")) -> PairedTest:
    """Exact two-sided paired test of ``a`` against ``b`` (same length; NaN pairs dropped).

    Zero differences carry no sign and are dropped (Wilcoxon's own convention, and the sign
    test's). With the nonzero absolute differences all distinct, the Wilcoxon signed-rank
    statistic under its exact null distribution (``scipy.stats.wilcoxon(d, method="exact")``,
    Wilcoxon 1945); with ties among them the exact null distribution of the signed ranks no
    longer holds, and the exact sign test is used (``scipy.stats.binomtest(wins, n, 0.5)``).
    ``statistic`` is scipy's (the smaller rank sum; the number of ``a`` wins for the sign test).
    Fewer than one nonzero pair: no test (p None).
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
    ok = ~(np.isnan(x) | np.isnan(y))
    d = x[ok] - y[ok]
    pairs = int(d.size)
    nz = d[d != 0]
    n = int(nz.size)
    wa, wb = int(np.sum(nz < 0)), int(np.sum(nz > 0))
    if n == 0:
        return PairedTest("none", None, None, 0, pairs, wa, wb,
                          "no pair differs: nothing to test" if pairs else "no pair to test", *labels)
    absd = np.abs(nz)
    if np.unique(absd).size == n and np.all(np.isfinite(absd)):
        res = stats.wilcoxon(nz, method="exact")
        return PairedTest("wilcoxon signed-rank (exact)", float(res.statistic), float(res.pvalue), n, pairs, wa, wb,
                          "", *labels)
    res = stats.binomtest(wa, n, 0.5)
    return PairedTest("sign test (exact binomial)", float(wa), float(res.pvalue), n, pairs, wa, wb,
                      "tied absolute differences: the sign test, not the signed-rank test", *labels)


def holm_adjust(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (Holm 1979): sorted ascending, ``p_(i) * (m - i)`` made
    monotone and capped at 1; None stays None and is not counted in ``m``. Equals
    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])  # type: ignore[arg-type,return-value]
    out: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


# -- IQM and the stratified bootstrap ----------------------------------------------------------
def iqm(x: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50% of the values.

    Exactly rliable's ``metrics.aggregate_iqm``: ``scipy.stats.trim_mean(x, 0.25, axis)``, which
    sorts the values and removes ``int(0.25 * n)`` of them from each end (so for n < 4 nothing is
    cut and the IQM is the mean). ``axis=None`` pools every value (all runs of all tasks, as
    rliable does); ``axis=1`` gives one IQM per row. NaN values propagate.
    """
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        raise ValueError("iqm of no values")
    out = stats.trim_mean(a, 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def _strata(scores: Mapping[Any, Any] | Any) -> list[np.ndarray]:
    """The runs of each task: a mapping task -> runs, a 2-D array (runs, tasks) as in rliable,
    or a 1-D array (one task)."""
    if isinstance(scores, Mapping):
        parts = [np.asarray(v, dtype=float).ravel() for v in scores.values()]
    else:
        a = np.asarray(scores, dtype=float)
        if a.ndim == 1:
            parts = [a]
        elif a.ndim == 2:
            parts = [a[:, j] for j in range(a.shape[1])]
        else:
            raise ValueError(f"scores must be 1-D (runs) or 2-D (runs, tasks), got shape {a.shape}")
    if not parts or any(p.size == 0 for p in parts):
        raise ValueError("every task needs at least one run")
    return parts


def _apply_rows(statistic: Statistic, samples: np.ndarray) -> np.ndarray:
    """The statistic of each row of ``samples``: vectorized when it takes ``axis``."""
    try:
        out = np.asarray(statistic(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([float(statistic(row)) for row in samples])


def stratified_bootstrap_ci(scores: Mapping[Any, Any] | Any, statistic: Statistic = iqm,
                            reps: int = 2000, level: float = 0.95,
                            seed: int | np.random.Generator | None = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over all runs, resampling within tasks.

    As rliable's ``StratifiedBootstrap`` (Agarwal et al., NeurIPS 2021): in each of ``reps``
    replicates, every task's runs are drawn with replacement from that task's own runs (the
    number of runs per task is kept), the resampled runs of all tasks are pooled, and the
    statistic is applied to the pool; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles of the replicates. ``scores`` is a mapping task -> runs
    (tasks may have different numbers of runs), a 2-D array (runs, tasks) or a 1-D array of the
    runs of one task. ``statistic`` is called as ``statistic(x, axis=1)`` on the (reps, runs)
    matrix when it accepts ``axis`` (``iqm``, ``np.mean``, ``np.median`` do), else row by row.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be positive, got {reps}")
    parts = _strata(scores)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    samples = np.concatenate([p[rng.integers(0, p.size, size=(reps, p.size))] for p in parts], axis=1)
    values = _apply_rows(statistic, samples)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def curve_band(values: Any, statistic: Statistic = iqm, reps: int = 1000, level: float = 0.95,
               seed: int | np.random.Generator | None = 0,
               chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per budget step of a (seeds, budget) array: the statistic over seeds and its bootstrap band.

    The band is the percentile bootstrap of :func:`stratified_bootstrap_ci` with one stratum
    (the seeds of one task), the same seed indices drawn for every budget step of a replicate,
    so a band follows whole runs, as rliable's sample-efficiency curves do. Returns
    ``(center, lower, upper)``, each of length ``budget``; columns are processed ``chunk`` at a
    time to bound memory.
    """
    a = np.asarray(values, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"values must be 2-D (seeds, budget) with at least one seed, got shape {a.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, steps = a.shape
    idx = rng.integers(0, n, size=(reps, n))
    center = np.array([float(statistic(a[:, j])) for j in range(steps)]) if steps else np.zeros(0)
    lower, upper = np.empty(steps), np.empty(steps)
    tail = 100.0 * (1.0 - level) / 2.0
    for start in range(0, steps, chunk):
        block = a[:, start:start + chunk]  # (seeds, c)
        boot = block[idx]  # (reps, seeds, c)
        flat = np.moveaxis(boot, 2, 1).reshape(-1, n)  # (reps * c, seeds)
        vals = _apply_rows(statistic, flat).reshape(reps, -1)
        lower[start:start + chunk], upper[start:start + chunk] = np.percentile(vals, [tail, 100.0 - tail], axis=0)
    return center, lower, upper


# -- ranks ---------------------------------------------------------------------------------------
def _rank_rows(table: np.ndarray, goal: Goal) -> np.ndarray:
    """Ranks within each row (1 = best), ties averaged; NaN ranks last (tied with other NaNs)."""
    _check_goal(goal)
    t = np.asarray(table, dtype=float)
    t = t if goal == "minimize" else -t
    t = np.where(np.isnan(t), np.inf, t)
    return stats.rankdata(t, method="average", axis=-1)


def ranks_per_seed(curves: Mapping[str, Any], goal: Goal = "minimize") -> dict[str, np.ndarray]:
    """Each tuner's rank at every (seed, budget step), 1 = best, ties averaged.

    ``curves`` maps tuner -> (seeds, budget) best-so-far values; seed ``i`` of one tuner is
    compared with seed ``i`` of the others (HPO-B's protocol: the same seeds or initial designs
    for every method), so all arrays must have the same shape. A NaN (no complete trial yet)
    ranks worst, tied with the other NaNs of that step.
    """
    names = list(curves)
    if not names:
        return {}
    arrays = [np.atleast_2d(np.asarray(curves[t], dtype=float)) for t in names]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every tuner needs a (seeds, budget) array of the same shape, got "
                         f"{ {t: a.shape for t, a in zip(names, arrays, strict=True)} }")
    ranks = _rank_rows(np.stack(arrays, axis=-1), goal)  # (seeds, budget, tuners)
    return {t: ranks[..., i] for i, t in enumerate(names)}


def ranks_over_time(curves: Mapping[str, Any], goal: Goal = "minimize") -> dict[str, np.ndarray]:
    """Mean rank per budget step across seeds (HPO-B, YAHPO): tuner -> array of length budget.

    See :func:`ranks_per_seed` for the pairing of seeds, ties (average ranks) and NaN (worst).
    """
    return {t: r.mean(axis=0) for t, r in ranks_per_seed(curves, goal).items()}


# -- Friedman, Nemenyi, critical-difference groups -------------------------------------------------
@dataclass
class FriedmanResult:
    """The Friedman test on a (blocks, treatments) table (Demsar 2006, section 3.2.2).

    ``statistic`` is the chi-square statistic with the correction for ties that
    ``scipy.stats.friedmanchisquare`` applies; ``statistic_uncorrected`` is Demsar's equation
    without it (his worked example: 9.28). ``iman_davenport`` is the less conservative
    F form ``(n - 1) chi2 / (n (k - 1) - chi2)`` with ``(k - 1, (k - 1)(n - 1))`` degrees of
    freedom, computed from ``statistic``. ``mean_ranks`` are per treatment (column), 1 = best.
    ``n`` counts the blocks used (blocks with a NaN are dropped).
    """

    statistic: float
    pvalue: float
    mean_ranks: np.ndarray
    n: int
    k: int
    statistic_uncorrected: float
    iman_davenport: float
    iman_davenport_pvalue: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        d = asdict(self)
        d["mean_ranks"] = [float(r) for r in self.mean_ranks]
        return d


def friedman(table: Any, goal: Goal = "minimize") -> FriedmanResult:
    """Friedman test of ``k`` treatments (tuners, columns) over ``n`` blocks (seeds or tasks, rows).

    Values are ranked within each row (1 = best for ``goal``, ties averaged), then
    ``chi2 = 12 n / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4)`` with ``R_j`` the mean ranks
    (Demsar 2006, eq. in 3.2.2), divided by the tie correction ``1 - sum(t^3 - t) / (n k (k^2 - 1))``
    exactly as ``scipy.stats.friedmanchisquare`` does; for k >= 3 scipy computes it. scipy refuses
    k = 2: the same formula is used (it is then the two-sided sign test's chi-square form, one
    degree of freedom). Rows that are constant carry no information about the order; when every
    row is constant, the statistic is 0 and p = 1. With fewer than two blocks nothing can be
    tested: statistic and p are NaN. Rows with a NaN are dropped.
    """
    _check_goal(goal)
    t = np.asarray(table, dtype=float)
    if t.ndim != 2:
        raise ValueError(f"table must be 2-D (blocks, treatments), got shape {t.shape}")
    k = t.shape[1]
    if k < 2:
        raise ValueError(f"the Friedman test compares at least 2 treatments, got {k}")
    kept = t[~np.isnan(t).any(axis=1)]
    n = kept.shape[0]
    if n == 0:
        raise ValueError("no block without missing values")
    ranks = _rank_rows(kept, goal)
    mean_ranks = ranks.mean(axis=0)
    nan = float("nan")
    if n < 2:
        return FriedmanResult(nan, nan, mean_ranks, n, k, nan, nan, nan,
                              note="fewer than 2 complete blocks: not testable")
    uncorrected = float(12.0 * n / (k * (k + 1)) * (np.sum(mean_ranks ** 2) - k * (k + 1) ** 2 / 4.0))
    ties = sum(float(np.sum(c ** 3 - c)) for c in (np.unique(row, return_counts=True)[1] for row in ranks))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    note = ""
    if correction <= 1e-12:
        statistic, pvalue, note = 0.0, 1.0, "every block is constant: no difference to test"
    elif k >= 3:
        res = stats.friedmanchisquare(*(kept if goal == "minimize" else -kept).T)
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    else:
        statistic = uncorrected / correction
        pvalue = float(stats.chi2.sf(statistic, k - 1))
    denom = n * (k - 1) - statistic
    if statistic == 0.0:
        f_stat, f_p = 0.0, 1.0
    elif denom <= 1e-12:  # every block orders the treatments the same way
        f_stat, f_p = float("inf"), 0.0
    else:
        f_stat = (n - 1) * statistic / denom
        f_p = float(stats.f.sf(f_stat, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(statistic, pvalue, mean_ranks, n, k, uncorrected, float(f_stat), f_p, note)


@lru_cache(maxsize=256)
def _q_alpha(k: int, alpha: float) -> float:
    return float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0))


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_alpha * sqrt(k (k + 1) / (6 n))``.

    ``q_alpha`` is the studentized range statistic for ``k`` groups and infinite degrees of
    freedom divided by sqrt(2) (``scipy.stats.studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``),
    which reproduces Demsar's (2006) table 5a: 1.960, 2.343, 2.569 for k = 2, 3, 4 at 0.05.
    Demsar's example, k = 4 classifiers on n = 14 data sets: CD = 2.569 * sqrt(20 / 84) = 1.25.
    """
    if k < 2 or n < 1:
        raise ValueError(f"need k >= 2 treatments and n >= 1 blocks, got k={k}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _q_alpha(int(k), float(alpha)) * math.sqrt(k * (k + 1) / (6.0 * n))


def cd_groups(mean_ranks: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal groups of tuners whose mean ranks all lie within ``cd`` of each other.

    Demsar (2006): two treatments differ significantly when their mean ranks differ by at least
    the critical difference; a group (a bar in the CD diagram) is a run of tuners, in rank order,
    whose largest and smallest mean rank differ by less than ``cd``. Only maximal groups are
    returned (none is contained in another), best first, each listed best first; a tuner that
    differs from every other one is a group of its own, so every tuner appears somewhere.
    """
    order = sorted(mean_ranks, key=lambda t: (mean_ranks[t], t))
    r = [float(mean_ranks[t]) for t in order]
    groups: list[list[str]] = []
    last_end = -1
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and r[j + 1] - r[i] < cd:
            j += 1
        if j > last_end:  # not inside the previous group
            groups.append(order[i:j + 1])
            last_end = j
    return groups


# -- the verdict -------------------------------------------------------------------------------
@dataclass
class Verdict:
    """A comparison's reading: per tuner the pinned numbers, and the test over seeds.

    ``tuners`` maps tuner -> ``{"normalized_regret", "iqm", "ci95", "ci_level", "ci_note",
    "mean_rank", "seeds"}`` (``ci95`` = [lower, upper]; ``ci_level`` 0.95, or None with fewer than
    :data:`MIN_CI_SEEDS` seeds, when ``ci_note`` says what the two numbers are), best mean rank
    first. Three or more tuners: ``friedman`` over the paired seeds, ``cd`` the Nemenyi critical
    difference at ``alpha`` and ``groups`` the tuners not significantly different
    (:func:`cd_groups`), read only when the Friedman test rejects. Two tuners: ``paired``, the
    exact paired test (:func:`paired_exact`), and no Friedman, no CD (``cd`` None); ``groups``
    splits the two only when it rejects. Otherwise every tuner is in one group.
    """

    tuners: dict[str, dict[str, Any]]
    friedman: FriedmanResult | None
    cd: float | None
    groups: list[list[str]]
    alpha: float
    paired_seeds: int
    summary: str
    notes: list[str] = field(default_factory=list)
    paired: PairedTest | None = None

    @property
    def pvalue(self) -> float | None:
        """The p value of the test that was run (Friedman for k >= 3, the exact paired test for 2)."""
        if self.friedman is not None:
            return self.friedman.pvalue
        return None if self.paired is None else self.paired.pvalue

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (finite numbers or None: :func:`harness.strict_json.finite`): the per-tuner
        table under ``tuners``, the test beside it."""
        from harness.strict_json import finite

        notes = list(self.notes)
        out = finite({"tuners": self.tuners,
                      "friedman": None if self.friedman is None else self.friedman.as_dict(),
                      "paired_test": None if self.paired is None else self.paired.as_dict(),
                      "cd": self.cd, "groups": self.groups, "alpha": self.alpha,
                      "paired_seeds": self.paired_seeds, "summary": self.summary}, notes)
        out["notes"] = notes
        return out


def _paired(finals: Mapping[str, Mapping[Any, float] | Sequence[float]]) -> tuple[np.ndarray, list[str]]:
    """A (seeds, tuners) table: by common seed id when values are mappings seed -> value,
    else by position up to the shortest sequence."""
    names = list(finals)
    if all(isinstance(v, Mapping) for v in finals.values()):
        common = set.intersection(*(set(finals[t]) for t in names))  # type: ignore[arg-type]
        seeds = sorted(common, key=lambda s: (str(type(s)), s))
        table = np.array([[float(finals[t][s]) for t in names] for s in seeds], dtype=float)  # type: ignore[index]
        return table.reshape(len(seeds), len(names)), names
    arrays = [np.asarray(list(v.values()) if isinstance(v, Mapping) else v, dtype=float).ravel()
              for v in finals.values()]
    m = min(a.size for a in arrays)
    return np.stack([a[:m] for a in arrays], axis=1).reshape(m, len(names)), names


def verdict(finals: Mapping[str, Mapping[Any, float] | Sequence[float]], optimum: float, worst: float,
            goal: Goal = "minimize", *, alpha: float = 0.05, reps: int = 2000,
            seed: int | None = 0) -> Verdict:
    """Summarize each tuner's final best values over seeds, and test whether the ranks differ.

    Per tuner, on the normalized regret of its final values (:func:`normalized_regret`; a NaN
    final, a sweep without a complete trial, counts as regret 1):

    - ``normalized_regret``: the MEAN over the tuner's seeds (the average normalized regret that
      HPO-B and YAHPO Gym plot); ``iqm`` beside it is the robust center (equal to the mean for
      fewer than 4 seeds, since trim_mean then cuts nothing);
    - ``iqm`` and ``ci95``: rliable's IQM and its 95% percentile bootstrap interval over the
      seeds (``reps`` replicates, one stratum);
    - ``mean_rank``: the tuner's rank among all tuners on each seed (1 = best, ties averaged),
      averaged over the seeds every tuner ran (seeds paired by id when ``finals`` maps
      seed -> value, else by position).

    Then the Friedman test over the paired seeds (blocks) and, when it rejects at ``alpha``,
    the Nemenyi critical difference and the groups of tuners not significantly different
    (Demsar 2006). ``summary`` says it in one sentence.
    """
    _check_goal(goal)
    if not finals:
        raise ValueError("no tuners to compare")
    notes: list[str] = []
    per: dict[str, dict[str, Any]] = {}
    for t, v in finals.items():
        vals = np.asarray(list(v.values()) if isinstance(v, Mapping) else v, dtype=float).ravel()
        if vals.size == 0:
            raise ValueError(f"tuner {t!r} has no final values")
        reg = normalized_regret(vals, optimum, worst, goal)
        reg = np.where(np.isnan(reg), 1.0, reg)
        lo, hi = stratified_bootstrap_ci(reg, iqm, reps=reps, level=0.95, seed=seed)
        few = vals.size < MIN_CI_SEEDS
        per[t] = {"normalized_regret": float(np.mean(reg)), "iqm": iqm(reg), "ci95": [lo, hi],
                  "ci_level": None if few else 0.95,
                  "ci_note": (f"{vals.size} seed(s): the bootstrap of so few values spans about their range; "
                              f"not a 95% interval (run >= {MIN_CI_SEEDS} seeds)") if few else "",
                  "mean_rank": float("nan"), "seeds": int(vals.size)}
    table, names = _paired(finals)
    # rank on regret (NaN -> 1), so a missing result ranks with the worst
    reg_table = np.where(np.isnan(table), 1.0, normalized_regret(table, optimum, worst, goal)) \
        if table.size else table
    n = table.shape[0]
    fr: FriedmanResult | None = None
    pt: PairedTest | None = None
    cd: float | None = None
    groups: list[list[str]] = [sorted(names, key=lambda t: t)]
    if n >= 1:
        ranks = _rank_rows(reg_table, "minimize").mean(axis=0)
        for t, r in zip(names, ranks, strict=True):
            per[t]["mean_rank"] = float(r)
    else:
        notes.append("no seed common to every tuner: mean_rank is undefined")
    if len(names) == 2 and n >= 1:
        pt = paired_exact(reg_table[:, 0], reg_table[:, 1], (names[0], names[1]))
        ranked = {t: per[t]["mean_rank"] for t in names}
        order2 = sorted(names, key=lambda t: (ranked[t], t))
        groups = [[order2[0]], [order2[1]]] if pt.pvalue is not None and pt.pvalue < alpha else [order2]
    elif len(names) >= 3 and n >= 2:
        fr = friedman(reg_table, "minimize")
        cd = nemenyi_cd(len(names), n, alpha)
        ranked = {t: per[t]["mean_rank"] for t in names}
        if fr.pvalue < alpha:
            groups = cd_groups(ranked, cd)
        else:
            groups = [sorted(names, key=lambda t: (ranked[t], t))]
    elif len(names) >= 2:
        notes.append(f"{n} paired seed(s): the test needs at least {1 if len(names) == 2 else 2}")
    order = sorted(per, key=lambda t: (math.inf if math.isnan(per[t]["mean_rank"]) else per[t]["mean_rank"],
                                       per[t]["normalized_regret"], t))
    tuners = {t: per[t] for t in order}
    return Verdict(tuners, fr, cd, groups, alpha, n, _summary(tuners, fr, cd, groups, alpha, pt), notes, pt)


def _summary(tuners: dict[str, dict[str, Any]], fr: FriedmanResult | None, cd: float | None,
             groups: list[list[str]], alpha: float, pt: PairedTest | None = None) -> str:
    first = next(iter(tuners))
    head = f"{first} ranks first (mean rank {tuners[first]['mean_rank']:.2f})"
    if len(tuners) < 2:
        return f"{first}: only one tuner, nothing to compare"
    if pt is not None:
        other = [t for t in tuners if t != first][0]
        if pt.pvalue is None:
            return f"{head}; {pt.note}"
        wins = pt.wins_a if first == pt.a else pt.wins_b
        test = f"{pt.name} p = {pt.pvalue:.3g}; {first} better on {wins} of {pt.n} seeds that differ"
        if pt.pvalue < alpha:
            return f"{head}; it is significantly better than {other} ({test})"
        return f"{head}, but the exact paired test finds no difference ({test} >= {alpha})"
    if fr is None:
        return f"{head}; too few paired seeds for a test"
    if not fr.pvalue < alpha:
        return (f"{head}, but the Friedman test finds no difference between the tuners "
                f"(p = {fr.pvalue:.3g} >= {alpha}, n = {fr.n} seeds)")
    tied = next(g for g in groups if first in g)
    rest = [t for t in tied if t != first]
    if not rest:
        return (f"{head}; it is significantly better than every other tuner "
                f"(Friedman p = {fr.pvalue:.3g}, Nemenyi CD = {cd:.2f})")
    return (f"{head}; the tuners differ (Friedman p = {fr.pvalue:.3g}) but {first} is not "
            f"significantly better than {', '.join(rest)} (Nemenyi CD = {cd:.2f})")
