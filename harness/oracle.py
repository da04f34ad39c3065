"""A tabulated space as an oracle: where its table lives, reading it safely, and each simulated
trial's curve with the seed-to-seed noise real training has.

**Where the tables are.** :func:`find_table` looks for ``<stem>.parquet`` in the working
folder's ``benchmarks/tables/`` (where ``harness tabulate`` writes by default, so a table a user
built wins), then in the tables shipped beside the installed package (:data:`SHIPPED_TABLES`),
so ``harness benchmark --simulated`` works from any folder. :func:`load_table` turns a missing,
truncated or corrupt file (or one whose ``.sha256`` beside it disagrees) into one line naming
the file and how to rebuild it (:class:`TableError`, exit 2), not a pyarrow traceback.

**The noise model** (:class:`NoiseModel`). The surrogate (:mod:`harness.surrogate`) predicts a
configuration's seed-averaged curve; real training adds a seed-to-seed deviation. Of the three
ways the issue names (tabulated seeds of nearby configurations, one surrogate per seed, a
fitted noise model of the curve) this takes the first, as Syne Tune's blackbox repository and
HPOBench's tabular benchmarks keep real seeds rather than model them:

- each tabulated configuration with two or more complete seeds gives, per seed, its residual
  curve: the seed's metric minus the configuration's mean over seeds, at every reported step
  and at the end, in a variance-stabilizing space (the log of the metric when the table's
  values are all positive: the spread of a loss scales with the loss; else the metric itself),
  scaled by ``sqrt(n / (n - 1))`` so that one residual has the variance of one seed about the
  true mean, not about a mean of ``n`` that it is part of; and the log of its seconds minus the
  configuration's mean log seconds;
- a simulated trial draws, from a generator seeded by (configuration, trial seed), one of the
  ``k`` nearest tabulated configurations (in the surrogate's encoding) and one of its seeds,
  and adds that seed's whole residual curve to the predicted curve (interpolated on the
  fraction of the trial's steps), and scales its seconds by the seed's time ratio.

Why this and not the alternatives: the residuals are real seeds, so their distribution (heavy
tails, a seed that diverges, heteroscedasticity: noise that grows where training is unstable) is
the table's own, not an assumed Gaussian; drawing from nearby configurations keeps that
heteroscedasticity local (the noise of a good region is the noise of good configurations); a
whole residual curve keeps a seed's deviations correlated over steps (a seed that is bad early
tends to stay bad), which is what a pruner sees. One surrogate per seed would need many more
seeds per configuration than a table holds (three) and would still average within a seed's
forest; a parametric noise model would have to guess the tails. The cost: noise only as
varied as the table's seeds (a configuration's deviations take one of ``k x S`` recorded values,
9 with the defaults and three seeds, as Syne Tune replays one of a configuration's recorded
seeds), and a configuration far from every tabulated one borrows the noise of the nearest. :func:`noise_spread_ratio` measures the result on held-out configurations
(target: simulated / real seed-to-seed spread in [0.8, 1.25]).

**Replay.** A tabulated configuration under a tabulated seed replays the table's row exactly (the
table's seeds are kept: seed 1 of the table is trial seed 1). The same configuration under a
seed the table does not hold is its tabulated mean curve plus a drawn residual; an untabulated
configuration is the surrogate's prediction plus a drawn residual. The same (configuration,
seed) always gives the same curve, as a seeded real trainer does.

**Dense stage.** :func:`dense_design` proposes a second design around the best decile of a
table's configurations, for ``harness tabulate`` to run after its Sobol stage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.engines.base import EngineError
from harness.ranking import Normalization, normalization
from harness.spec import SweepSpec
from harness.surrogate import Curve, Encoder, Surrogate
from harness.tabulate import METRIC, config_id, config_values, read_table, row_params, sha256
from harness.trials import TrialTask

SHIPPED_TABLES = Path(__file__).resolve().parent.parent / "benchmarks" / "tables"
LOCAL_TABLES = Path("benchmarks") / "tables"
REQUIRED_COLUMNS = ("config_id", "config", "seed", "kind", "step", "elapsed_s", "state")
NEIGHBOURS = 3  # measured on the shipped tables: the pooled ratio nearest 1 on all three (k = 3, 5, 10)


class TableError(EngineError):
    """A table is missing, truncated or corrupt (one line naming the file and the fix, exit 2)."""


# -- where the tables are ----------------------------------------------------------------------
def table_candidates(space: str | Path) -> list[Path]:
    """Where :func:`find_table` looks for the table of ``space`` (a name or a spec path), in order."""
    stem = Path(str(space)).stem
    local, shipped = LOCAL_TABLES / f"{stem}.parquet", SHIPPED_TABLES / f"{stem}.parquet"
    return [local] if local.resolve() == shipped else [local, shipped]


def find_table(space: str | Path, table: str | Path | None = None, *, required: bool = True) -> Path | None:
    """The table of ``space``: ``table`` when given, else the working folder's
    ``benchmarks/tables/<stem>.parquet``, else the one shipped with the package. ``required``:
    raise :class:`TableError` (one line) when none exists, else return None."""
    if table is not None:
        path = Path(table)
        if not path.exists():
            if not required:
                return None
            raise TableError(f"no table at {path}: build it with 'harness tabulate {Path(str(space)).stem}' "
                             "(or give another --table)")
        return path
    for path in table_candidates(space):
        if path.exists():
            return path
    if not required:
        return None
    stem = Path(str(space)).stem
    where = " or ".join(str(p) for p in table_candidates(space))
    raise TableError(f"no table for {stem} (looked in {where}): build it with 'harness tabulate {stem}' "
                     "(or give --table)")


def load_table(path: str | Path, space: str | None = None) -> Any:
    """Read a table; a missing, truncated or corrupt file, or one whose ``.sha256`` disagrees, is
    one line naming the file and how to rebuild it (:class:`TableError`)."""
    path = Path(path)
    stem = space and Path(space).stem or path.stem
    fix = f"rebuild it with 'harness tabulate {stem} --configs N --seeds S' (or 'make tables')"
    if not path.exists():
        raise TableError(f"no table at {path}: {fix}")
    check = Path(str(path) + ".sha256")
    if check.exists():
        want = (check.read_text().split() or [""])[0]
        if want and want != sha256(path):
            raise TableError(f"table {path} does not match its checksum {check.name} (truncated or "
                             f"changed since it was written): {fix}")
    try:
        df = read_table(path)
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, ...: any unreadable file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise TableError(f"table {path} is truncated or corrupt ({reason}): {fix}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"table {path} lacks the columns {', '.join(missing)}: not a harness table; {fix}")
    return df


# -- the one normalization, from a table ------------------------------------------------------------
def table_normalization(space: str | Path, metric: str, goal: str, *, table: Any = None,
                        optimum: float | None = None, worst: float | None = None) -> Normalization | None:
    """:func:`harness.ranking.normalization` on the table of ``space`` (found by
    :func:`find_table`, or given as a DataFrame): None when there is no readable table holding
    ``metric``."""
    where = "the given table"
    if table is None:
        path = find_table(space, required=False)
        if path is None:
            return None
        try:
            table = load_table(path)
        except TableError:
            return None
        where = str(path)
    values = config_values(table, metric)
    if not values:
        return None
    n = normalization(values, goal, optimum=optimum, worst=worst,  # type: ignore[arg-type]
                      what=f"tabulated configurations ({where})")
    return n


# -- the noise model -------------------------------------------------------------------------------
class NoiseModel:
    """Seed-to-seed residual curves of a table's configurations, drawn by nearest neighbours
    (see the module doc). ``configs``: fit on these design indices only (held-out checks)."""

    def __init__(self, spec: SweepSpec, table: Any, *, encoder: Encoder | None = None, k: int = NEIGHBOURS,
                 configs: set[int] | None = None) -> None:
        self.spec = spec
        self.metric = spec.metric.name
        self.enc = encoder or Encoder(spec)
        self.k = k
        col = METRIC + self.metric
        df = table if configs is None else table[table["config"].isin(configs)]
        df = df[df["state"] == "complete"]
        vals = df[col].to_numpy(float)
        finite = vals[np.isfinite(vals)]
        self.log = bool(finite.size) and bool(np.all(finite > 0))
        self.space = "log" if self.log else "raw"
        X: list[list[float]] = []
        donors: list[list[tuple[float, np.ndarray, np.ndarray, float]]] = []
        ids: list[str] = []
        for cid, g in df.groupby("config_id", sort=True):
            fin = g[g["kind"] == "final"]
            f = self.fwd(fin[col].to_numpy(float))
            ok = np.isfinite(f)
            if ok.sum() < 2:
                continue
            fin, f = fin[ok], f[ok]
            n = len(f)
            scale = math.sqrt(n / (n - 1))
            res_final = (f - f.mean()) * scale
            logt = np.log(np.clip(fin["elapsed_s"].to_numpy(float), 1e-9, None))
            res_time = logt - logt.mean()
            seeds = fin["seed"].to_numpy(int)
            last = dict(zip(seeds, fin["step"].to_numpy(float), strict=True))
            rep = g[(g["kind"] == "report") & g["seed"].isin(seeds)]
            mean_at: dict[int, tuple[float, float]] = {}
            if not rep.empty:
                rv = self.fwd(rep[col].to_numpy(float))
                tmp = rep.assign(_v=rv)[["seed", "step", "_v"]]
                tmp = tmp[np.isfinite(tmp["_v"])]
                for step, sg in tmp.groupby("step"):
                    if len(sg) >= 2:
                        m = len(sg)
                        mean_at[int(step)] = (float(sg["_v"].mean()), math.sqrt(m / (m - 1)))
                by_seed = {int(s): sg.sort_values("step") for s, sg in tmp.groupby("seed")}
            else:
                by_seed = {}
            mine = []
            for j, s in enumerate(seeds):
                sg = by_seed.get(int(s))
                rel, res = [], []
                if sg is not None:
                    for step, v in zip(sg["step"].to_numpy(int), sg["_v"].to_numpy(float), strict=True):
                        if int(step) in mean_at:
                            mu, sc = mean_at[int(step)]
                            rel.append(step / max(last[int(s)], 1.0))
                            res.append((v - mu) * sc)
                mine.append((float(res_final[j]), np.array(rel), np.array(res), float(res_time[j])))
            X.append(self.enc.encode(row_params(g.iloc[0], spec)))
            donors.append(mine)
            ids.append(str(cid))
        if not donors:
            raise ValueError("the table has no configuration with two complete seeds: no seed noise to draw")
        self.X = np.array(X, dtype=float)
        self.donors = donors
        self.ids = ids  # config_id of each row of X

    def fwd(self, v: Any) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        if not self.log:
            return a
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, np.log(np.where(a > 0, a, 1.0)), np.nan)

    def inv(self, v: float) -> float:
        return float(math.exp(v)) if self.log else float(v)

    def draw(self, x: list[float], rng: np.random.Generator,
             exclude: int | None = None) -> tuple[float, np.ndarray, np.ndarray, float]:
        """One seed's residual curve from one of the ``k`` configurations nearest to ``x``
        (``exclude``: a row of :attr:`X` left out, for leave-one-out checks)."""
        d = ((self.X - np.asarray(x, dtype=float)) ** 2).sum(axis=1)
        if exclude is not None:
            d[exclude] = np.inf
            d = d[np.isfinite(d)] if len(d) > 1 else d
            keep = [i for i in range(len(self.X)) if i != exclude]
        else:
            keep = None
        k = min(self.k, len(d))
        near = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        j = int(near[rng.integers(len(near))])
        seeds = self.donors[keep[j] if keep is not None else j]
        return seeds[int(rng.integers(len(seeds)))]

    def apply(self, curve: Curve, donor: tuple[float, np.ndarray, np.ndarray, float]) -> Curve:
        """``curve`` with the donor seed's deviation added (the spec metric, and the seconds)."""
        if curve.status != "ok":
            return curve
        res_final, rel, res, res_time = donor
        ratio = math.exp(res_time)
        last = max(curve.steps, 1)
        reports = []
        for step, t, metrics in curve.reports:
            m = dict(metrics)
            if self.metric in m:
                r = float(np.interp(step / last, rel, res)) if rel.size else res_final
                m[self.metric] = self._shift(m[self.metric], r)
            reports.append((step, t * ratio, m))
        metrics = dict(curve.metrics)
        if self.metric in metrics:
            metrics[self.metric] = self._shift(metrics[self.metric], res_final)
        return Curve(reports, curve.seconds * ratio, curve.steps, metrics, curve.status, curve.reason)

    def _shift(self, value: float, r: float) -> float:
        f = float(self.fwd(value))
        return value if not math.isfinite(f) else self.inv(f + r)


# -- the oracle ------------------------------------------------------------------------------------
class TableOracle:
    """A trial's curve (see the module doc): the table's exact row for a tabulated configuration
    under a tabulated seed; else a center (the configuration's tabulated mean, or the surrogate's
    prediction, fitted on first use) plus one seed's deviation drawn from nearby configurations.
    ``noise=False``: the center alone (the deterministic surrogate of earlier versions).
    ``calibrate=True``: the surrogate's calibration line (:class:`harness.surrogate.Surrogate`)."""

    def __init__(self, spec: SweepSpec, table: Any, *, noise: bool = True, neighbours: int = NEIGHBOURS,
                 calibrate: bool = False) -> None:
        self.spec = spec
        self.calibrate = calibrate  # Surrogate(calibrate=...): see harness.surrogate
        self.table = table
        self.noise = noise
        self.neighbours = neighbours
        self._surrogate: Surrogate | None = None
        self._noise: NoiseModel | None = None
        self._centers: dict[str, Curve] = {}
        self.exact = 0  # tabulated configuration, tabulated seed: the row itself
        self.resampled = 0  # tabulated configuration, another seed: its mean + a drawn deviation
        self.predicted = 0  # untabulated configuration: the surrogate (+ a drawn deviation)
        self.rows: dict[str, dict[int, Curve]] = {}
        metrics = [c for c in table.columns if c.startswith(METRIC)]
        for (cid, seed), g in table.groupby(["config_id", "seed"], sort=True):
            reports = g[g["kind"] == "report"].sort_values("step")
            final = g[g["kind"] == "final"].iloc[0]
            seconds = float(final["elapsed_s"])
            # report times were taken by the driver (IPC latency included), the trial's seconds by
            # its worker: a report never lands after the trial's end
            curve = Curve(
                reports=[(int(r["step"]), min(float(r["elapsed_s"]), seconds), _finite(r, metrics))
                         for _, r in reports.iterrows()],
                seconds=seconds, steps=int(final["step"]), metrics=_finite(final, metrics),
                status="ok" if final["state"] == "complete" else "error",
                reason=None if final["state"] == "complete" else f"tabulated trial {final['state']}")
            self.rows.setdefault(str(cid), {})[int(seed)] = curve

    @property
    def surrogate(self) -> Surrogate:
        if self._surrogate is None:
            self._surrogate = Surrogate(self.spec, self.table, calibrate=self.calibrate)
        return self._surrogate

    @property
    def noise_model(self) -> NoiseModel | None:
        """The noise model (fitted on first use); None when noise is off or the table has no
        configuration with two complete seeds."""
        if self.noise and self._noise is None:
            try:
                self._noise = NoiseModel(self.spec, self.table, k=self.neighbours)
            except ValueError:
                self.noise = False
        return self._noise

    def __call__(self, task: TrialTask) -> Curve:
        params = self.spec.active_params(task.params)
        cid = config_id(params)
        seeds = self.rows.get(cid)
        if seeds and task.seed in seeds:
            self.exact += 1
            return seeds[task.seed]
        center = self._centers.get(cid)
        if center is None:
            center = self._mean_curve(seeds) if seeds else self.surrogate.predict(task.params)
            if len(self._centers) < 200_000:
                self._centers[cid] = center
        if seeds:
            self.resampled += 1
        else:
            self.predicted += 1
        model = self.noise_model
        if model is None:
            return center
        rng = np.random.default_rng([int(cid, 16) & 0xFFFFFFFF, int(task.seed) & 0xFFFFFFFF, 22])
        return model.apply(center, model.draw(model.enc.encode(params), rng))

    def _mean_curve(self, seeds: dict[int, Curve]) -> Curve:
        """A tabulated configuration's mean curve over its complete seeds (the noise space's mean:
        geometric for a positive metric), on the first complete seed's steps and times."""
        ok = [c for c in seeds.values() if c.status == "ok"]
        if not ok:
            return next(iter(seeds.values()))
        base, m = ok[0], self.spec.metric.name
        model = self.noise_model
        fwd = model.fwd if model is not None else (lambda v: np.asarray(v, dtype=float))
        inv = model.inv if model is not None else float

        def mean(values: list[float]) -> float | None:
            f = fwd(values)
            f = f[np.isfinite(f)]
            return inv(float(f.mean())) if f.size else None

        reports = []
        for i, (step, t, metrics) in enumerate(base.reports):
            mm = dict(metrics)
            vals = [c.reports[i][2][m] for c in ok if i < len(c.reports) and c.reports[i][0] == step
                    and m in c.reports[i][2]]
            v = mean(vals)
            if v is not None:
                mm[m] = v
            reports.append((step, t, mm))
        metrics = dict(base.metrics)
        v = mean([c.metrics[m] for c in ok if m in c.metrics])
        if v is not None:
            metrics[m] = v
        return Curve(reports, base.seconds, base.steps, metrics)

    def normalization(self, *, optimum: float | None = None, worst: float | None = None) -> Normalization:
        """The one normalization (:func:`harness.ranking.normalization`) on this table."""
        values = config_values(self.table, self.spec.metric.name)
        return normalization(values, self.spec.metric.goal, optimum=optimum, worst=worst,  # type: ignore[arg-type]
                             what="tabulated configurations")


def _finite(row: Any, metrics: list[str]) -> dict[str, float]:
    out = {}
    for c in metrics:
        v = row[c]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[c[len(METRIC):]] = float(v)
    return out


# -- measured: the simulated seed-to-seed spread against the real one ----------------------------
def noise_spread_ratio(spec: SweepSpec, table: Any, *, sims: int = 30, seed: int = 0,
                       neighbours: int = NEIGHBOURS, reps: int = 2000) -> dict[str, Any]:
    """Simulated over real seed-to-seed spread, each tabulated configuration held out in turn.

    For every configuration with two or more complete seeds, the noise model with that
    configuration LEFT OUT of its donors (leave-one-out: its own seeds cannot be drawn) draws
    ``sims`` deviations, exactly what the oracle adds to an untabulated configuration's center
    (the center is deterministic, so it adds no spread). In the noise model's space (log of the
    metric when it is positive):

    - ``ratio``: pooled standard deviations, ``sqrt(mean of per-configuration variances)``
      (ddof 1, unbiased for the mean variance on both sides), simulated / real; the target is
      [0.8, 1.25]; ``ratio_ci``: its 95% percentile bootstrap over configurations (``reps``);
    - ``ratio_median``: the median of per-configuration standard deviations, each from as many
      seeds as the table holds (the simulated ones in groups of that size, so both sides use the
      same estimator): robust where one configuration's diverged seed dominates the pooled one.
    """
    col = METRIC + spec.metric.name
    model = NoiseModel(spec, table, k=neighbours)
    if len(model.X) < 3:
        raise ValueError("too few configurations with two complete seeds to measure the noise")
    fin = table[(table["kind"] == "final") & (table["state"] == "complete")]
    fv = model.fwd(fin[col].to_numpy(float))
    fin = fin.assign(_v=fv)[np.isfinite(fv)]
    real = {str(c): g.to_numpy(float) for c, g in fin.groupby("config_id")["_v"]}
    rng = np.random.default_rng(seed)
    real_var, sim_var, real_sd, sim_sd = [], [], [], []
    for i, cid in enumerate(model.ids):
        r = real[cid]
        draws = np.array([model.draw(model.X[i].tolist(), rng, exclude=i)[0] for _ in range(sims)])
        real_var.append(float(np.var(r, ddof=1)))
        sim_var.append(float(np.var(draws, ddof=1)))
        real_sd.append(float(np.std(r, ddof=1)))
        m = r.size
        sim_sd += [float(np.std(draws[j:j + m], ddof=1)) for j in range(0, sims - m + 1, m)]
    rv, sv = np.array(real_var), np.array(sim_var)
    ratio = math.sqrt(sv.mean() / rv.mean()) if rv.mean() > 0 else math.nan
    idx = rng.integers(0, rv.size, size=(reps, rv.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.sqrt(sv[idx].mean(axis=1) / rv[idx].mean(axis=1))
    lo, hi = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5])
    med_real = float(np.median(real_sd))
    return {"ratio": ratio, "ratio_ci": [float(lo), float(hi)],
            "ratio_median": float(np.median(sim_sd)) / med_real if med_real > 0 else math.nan,
            "simulated_sd": math.sqrt(sv.mean()), "real_sd": math.sqrt(rv.mean()),
            "configs": int(rv.size), "sims": sims, "neighbours": neighbours, "space": model.space}


__all__ = ["LOCAL_TABLES", "NEIGHBOURS", "SHIPPED_TABLES", "NoiseModel", "TableError", "TableOracle",
           "config_values", "find_table", "load_table", "noise_spread_ratio",
           "table_candidates", "table_normalization"]
