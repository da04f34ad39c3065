"""A surrogate of a tabulated space: any configuration's learning curve and seconds per step.

Fitted with scikit-learn extremely randomized trees (``ExtraTreesRegressor``) on the encoded configuration (log scale for log
parameters, one-hot choices, an inactive conditional as a flag with its value at a sentinel):

- the metric at each reported step: one forest on (config, log step, is-final) -> the spec's
  metric through the table's quantiles (rank-preserving, robust to diverged runs), mapped back;
- seconds: one forest on config -> (log seconds per step at the reports, log seconds per step
  of the whole trial);
- steps: one forest on config -> log of the last reported step; the reported steps are then
  the multiples of the space's ``report_every`` up to it (else the nearest tabulated
  configuration's steps);
- ``calibrate=True``: a monotone line, fitted on out-of-fold predictions of the better half, that
  stretches predictions back toward the truth (trees average neighbours, so a forest's
  predictions shrink toward the middle: calibration slope 0.36 on gflownet-quick's top half);
  ranks are unchanged, values stay within the table's range.

The surrogate is deterministic: it predicts the seed-averaged curve; the seed-to-seed noise is
added on top by :class:`harness.oracle.NoiseModel` (real residuals of nearby tabulated
configurations). Failed trials are left out of the fit (a configuration the table saw fail is
replayed exactly by the simulated engine, an unseen one is predicted to complete).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.spec import ChoiceParam, SweepSpec
from harness.tabulate import METRIC, row_params

SENTINEL = -1.0


class Encoder:
    """Configuration -> feature vector (the same for the table's rows and for a dict)."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.names = list(spec.order())
        self.columns: list[str] = []
        for n in self.names:
            p = spec.params[n]
            if isinstance(p, ChoiceParam):
                self.columns += [f"{n}={v}" for v in p.values]
            else:
                self.columns.append(n)
            if p.when:
                self.columns.append(f"{n}:active")

    def encode(self, params: dict[str, Any]) -> list[float]:
        out: list[float] = []
        for n in self.names:
            p = self.spec.params[n]
            v = params.get(n)
            active = v is not None and not (isinstance(v, float) and math.isnan(v)) and not (
                isinstance(v, str) and v in ("", "<NA>"))
            if isinstance(p, ChoiceParam):
                out += [1.0 if active and str(v) == str(c) else 0.0 for c in p.values]
            elif not active:
                out.append(SENTINEL)
            else:
                x = float(v)  # type: ignore[arg-type]
                if p.log:
                    x = (math.log(x) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
                else:
                    x = (x - p.low) / (p.high - p.low) if p.high > p.low else 0.0
                out.append(x)
            if p.when:
                out.append(1.0 if active else 0.0)
        return out


@dataclass
class Curve:
    """A predicted (or tabulated) trial: reports (step, seconds since start, metrics), then the end."""

    reports: list[tuple[int, float, dict[str, float]]]
    seconds: float
    steps: int
    metrics: dict[str, float]
    status: str = "ok"  # ok | error (a tabulated failure)
    reason: str | None = None


class Surrogate:
    """Fit on a tabulated space's table (pandas DataFrame from :func:`harness.tabulate.read_table`)."""

    def __init__(self, spec: SweepSpec, table: Any, *, trees: int = 100, seed: int = 0,
                 configs: set[int] | None = None, calibrate: bool = False, folds: int = 5) -> None:
        from sklearn.ensemble import ExtraTreesRegressor
        from sklearn.preprocessing import QuantileTransformer

        self.spec = spec
        self.metric = spec.metric.name
        self.enc = Encoder(spec)
        col = METRIC + self.metric
        df = table if configs is None else table[table["config"].isin(configs)]
        df = df[(df["state"] == "complete") & df[col].notna()]
        if df.empty:
            raise ValueError("the table has no complete trial to fit a surrogate on")
        vals = df[col].to_numpy(float)
        # the metric through the table's own quantiles (a monotone map to [0, 1]): heavy tails
        # (a diverged loss of 1e25 beside losses of 20) cannot pull the fit; the prediction maps
        # back through the same quantiles, so it is always a value the table's range holds
        self.quantiles = QuantileTransformer(n_quantiles=min(1000, len(vals)), random_state=seed)
        first = df.drop_duplicates(["config"]).set_index("config")
        self._X = {int(c): self.enc.encode(row_params(r, spec)) for c, r in first.iterrows()}
        X = np.array([self._X[int(c)] + [math.log1p(s), float(k == "final")]
                      for c, s, k in zip(df["config"], df["step"], df["kind"], strict=True)])
        y = self.quantiles.fit_transform(vals.reshape(-1, 1)).ravel()
        self.curve_model = ExtraTreesRegressor(trees, min_samples_leaf=1, random_state=seed, n_jobs=1).fit(X, y)
        finals = df[df["kind"] == "final"]
        reports = df[df["kind"] == "report"]
        per = finals.groupby("config").agg(sps=("seconds_per_step", "mean"), last=("step", "mean"))
        rep = reports.groupby("config")["seconds_per_step"].mean()
        per["rep_sps"] = rep.reindex(per.index).fillna(per["sps"])
        Xc = np.array([self._X[int(c)] for c in per.index])
        Yt = np.log(np.clip(per[["rep_sps", "sps"]].to_numpy(float), 1e-9, None))
        self.time_model = ExtraTreesRegressor(trees, min_samples_leaf=1, random_state=seed, n_jobs=1).fit(Xc, Yt)
        self.steps_model = ExtraTreesRegressor(trees, min_samples_leaf=1, random_state=seed, n_jobs=1).fit(
            Xc, np.log(np.clip(per["last"].to_numpy(float), 1, None)))
        self._steps_of = {int(c): sorted(set(g["step"].astype(int))) for c, g in reports.groupby("config")}
        self._configs = np.array(list(per.index), dtype=int)
        self._Xc = Xc
        self.every = spec.budget.report_every
        fin_vals = vals[np.isfinite(vals)]
        self._lo, self._hi = float(np.min(fin_vals)), float(np.max(fin_vals))
        self._log = bool(self._lo > 0)
        self.calibration: tuple[float, float] | None = None  # (a, b): g(v) -> a + b g(v)
        if calibrate:
            self.calibration = self._fit_calibration(table, configs, trees, seed, folds)

    def report_steps(self, x: list[float]) -> list[int]:
        last = int(round(math.exp(float(self.steps_model.predict(np.array([x]))[0]))))
        if self.every:
            steps = list(range(self.every, last + 1, self.every))
            return steps or [last]
        near = int(self._configs[np.argmin(((self._Xc - np.array(x)) ** 2).sum(axis=1))])
        return self._steps_of.get(near, [last])

    def _fit_calibration(self, table: Any, configs: set[int] | None, trees: int, seed: int,
                         folds: int) -> tuple[float, float] | None:
        """Undo the forest's pull toward the middle where tuners compete: out-of-fold predictions
        of this surrogate's own configurations (``folds``-fold, so the fit never sees what it
        predicts), then a least-squares line of the true mean final on the prediction over the
        better half (by prediction), in log space for a positive metric; applied as a monotone
        map to every predicted value, so ranks are unchanged. None (no map) when the line is not
        increasing or there are too few configurations."""
        col = METRIC + self.metric
        df = table if configs is None else table[table["config"].isin(configs)]
        fin = df[(df["kind"] == "final") & (df["state"] == "complete") & df[col].notna()]
        truth = fin.groupby("config")[col].mean()
        cs = np.array(truth.index.astype(int))
        if len(cs) < 4 * folds:
            return None
        fold = np.random.default_rng(seed).permutation(len(cs)) % folds
        first = df.drop_duplicates("config").set_index("config")
        pred = np.full(len(cs), np.nan)
        for f in range(folds):
            sub = Surrogate(self.spec, table, trees=trees, seed=seed, configs=set(cs[fold != f].tolist()))
            pred[fold == f] = sub.predict_finals([row_params(first.loc[c], self.spec) for c in cs[fold == f]])
        x, y = self._g(pred), self._g(truth.to_numpy(float))
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        sign = 1.0 if self.spec.metric.goal == "minimize" else -1.0
        better = np.argsort(sign * x)[: max(3, len(x) // 2)]
        if np.ptp(x[better]) <= 0:
            return None
        b, a = np.polyfit(x[better], y[better], 1)
        if not (np.isfinite(a) and np.isfinite(b) and 0 < b <= 5):
            return None
        return float(a), float(b)

    def _g(self, v: Any) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        return np.log(np.clip(a, 1e-300, None)) if self._log else a

    def _calibrated(self, v: np.ndarray) -> np.ndarray:
        if self.calibration is None:
            return v
        a, b = self.calibration
        z = a + b * self._g(v)
        out = np.exp(z) if self._log else z
        return np.clip(out, self._lo, self._hi)  # stays a value the table's range holds

    def predict(self, params: dict[str, Any]) -> Curve:
        """The configuration's learning curve, seconds and final metric."""
        x = self.enc.encode(self.spec.active_params(params))
        steps = self.report_steps(x)
        X = np.array([x + [math.log1p(s), 0.0] for s in steps] + [x + [math.log1p(steps[-1]), 1.0]])
        y = self._calibrated(self.quantiles.inverse_transform(self.curve_model.predict(X).reshape(-1, 1)).ravel())
        rep_sps, sps = np.exp(self.time_model.predict(np.array([x]))[0])
        reports = [(s, float(s * rep_sps), {self.metric: float(v)}) for s, v in zip(steps, y[:-1], strict=True)]
        seconds = max(float(steps[-1] * sps), reports[-1][1])
        return Curve(reports, seconds, steps[-1], {self.metric: float(y[-1])})

    def predict_finals(self, configs: list[dict[str, Any]]) -> np.ndarray:
        """The final metric of many configurations at once (one forest call; for the gates of
        ``benchmarks/tables.py``, where thousands are scored): the same values as
        ``predict(c).metrics[metric]``."""
        if not configs:
            return np.zeros(0)
        xs = [self.enc.encode(self.spec.active_params(c)) for c in configs]
        lasts = np.exp(self.steps_model.predict(np.array(xs)))
        rows = []
        for x, last in zip(xs, lasts, strict=True):
            if self.every:
                n = int(round(float(last)))
                step = (n // self.every) * self.every if n >= self.every else n
            else:
                step = self.report_steps(x)[-1]
            rows.append(x + [math.log1p(step), 1.0])
        y = self.curve_model.predict(np.array(rows))
        return self._calibrated(self.quantiles.inverse_transform(y.reshape(-1, 1)).ravel())


def fidelity(spec: SweepSpec, table: Any, holdout: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Spearman rank correlation, on held-out configurations, of the surrogate's final metric with
    the table's (mean over seeds); beside it the table's own seed-to-seed Spearman (the ceiling)
    and the seconds' Spearman."""
    from scipy.stats import spearmanr

    col = METRIC + spec.metric.name
    finals = table[(table["kind"] == "final") & (table["state"] == "complete") & table[col].notna()]
    configs = np.array(sorted(set(finals["config"].astype(int))))
    rng = np.random.default_rng(seed)
    test = set(rng.choice(configs, size=max(2, int(len(configs) * holdout)), replace=False).tolist())
    train = set(configs.tolist()) - test
    sur = Surrogate(spec, table, configs=train, seed=seed)
    truth = finals[finals["config"].isin(test)].groupby("config").agg(v=(col, "mean"), s=("elapsed_s", "mean"))
    first = table.drop_duplicates(["config"]).set_index("config")
    preds = [sur.predict(row_params(first.loc[c], spec)) for c in truth.index]
    rho = float(spearmanr(truth["v"], [p.metrics[spec.metric.name] for p in preds]).statistic)
    rho_s = float(spearmanr(truth["s"], [p.seconds for p in preds]).statistic)
    wide = finals.pivot_table(index="config", columns="seed", values=col)
    seed_rho = float(spearmanr(wide[0], wide[1], nan_policy="omit").statistic) \
        if 0 in wide and 1 in wide else float("nan")
    return {"spearman_final": rho, "spearman_seconds": rho_s, "seed_to_seed": seed_rho,
            "train_configs": len(train), "test_configs": len(test)}


__all__ = ["Curve", "Encoder", "Surrogate", "fidelity"]
