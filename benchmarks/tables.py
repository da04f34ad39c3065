"""The shipped tables (benchmarks/tables/*.parquet) against their acceptance gates (issue 22).

    python benchmarks/tables.py [SPACE ...] [--folds 5] [--fresh 4096] [--json FILE]

Per table: its size (configurations with every seed, seeds, trials, the CPU seconds it cost),
its sha256 (checked against the .sha256 file beside it), and the gates a table must pass before
a simulated verdict on it is trusted:

- ``top-q rho``: Spearman rank correlation, among the top-quartile configurations (by their true
  mean final over seeds), of the surrogate's prediction with the truth, every prediction made
  out of fold (``--folds``-fold cross-validation over configurations): >= 0.8. Overall Spearman
  beside it (it flatters: the bad configurations are easy to rank);
- ``slope``: calibration slope of the predicted against the true normalized regret on the top
  half (least squares), out of fold: >= 0.8 (a surrogate that pulls toward the middle has a
  slope well below 1 where tuners compete);
- ``min regret``: the lowest regret the surrogate (fitted on the whole table) predicts over
  ``--fresh`` new Sobol configurations (another design seed): < 0.05, else no simulated tuner can
  get as close to the optimum as a real one does;
- ``noise``: simulated / real seed-to-seed spread, every configuration held out in turn
  (:func:`harness.oracle.noise_spread_ratio`; pooled SD, its 95% bootstrap interval, the
  median-based ratio): in [0.8, 1.25].

Beside the gates, what the table's own seed noise allows (:func:`noise_limits`), for the gates
are measured against seed-averaged truth: ``ceil`` is the top-quartile Spearman a perfect
predictor of the true mean would reach against the k-seed means (simulated from each
configuration's own residuals), and ``floor`` the regret of the
table's best configuration, picked on all seeds but one and read on that one (the optimum is
the minimum of hundreds of noisy means, biased low): a surrogate of the mean cannot be expected
below it.

Regret is normalized as every verdict is (:func:`harness.ranking.normalization`: the best
per-configuration mean, the median configuration). The full tables of the issue (>= 500 Sobol
configurations x 3 seeds, then >= 100 dense configurations x 3 seeds around the best decile,
:func:`harness.tabulate.dense_design`) are built by ``make tables``; their commands are printed at
the end.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPACES = ("gflownet-quick", "diffusion-quick", "locoprop-quick")
GATES = {"topq_spearman": 0.8, "slope": 0.8, "min_regret": 0.05, "noise": (0.8, 1.25)}


def out_of_fold(spec: Any, table: Any, folds: int, seed: int = 0,
                calibrate: bool = False) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(true mean final, out-of-fold prediction, config index) for every configuration with a
    complete final."""
    from harness.surrogate import Surrogate
    from harness.tabulate import METRIC, row_params

    col = METRIC + spec.metric.name
    fin = table[(table["kind"] == "final") & (table["state"] == "complete")]
    fin = fin[np.isfinite(fin[col].to_numpy(float))]
    truth = fin.groupby("config")[col].mean()
    configs = np.array(truth.index.astype(int))
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(configs)) % folds
    first = table.drop_duplicates("config").set_index("config")
    pred = np.full(len(configs), np.nan)
    for f in range(folds):
        test = configs[fold == f]
        sur = Surrogate(spec, table, configs=set(configs[fold != f].tolist()), seed=seed, calibrate=calibrate)
        pred[fold == f] = sur.predict_finals([row_params(first.loc[c], spec) for c in test])
    return truth.to_numpy(float), pred, configs.tolist()


def noise_limits(wide: Any, goal: str, optimum: float, worst: float, sims: int = 200,
                 seed: int = 0) -> dict[str, float]:
    """``wide``: configuration x seed finals (complete configurations only).

    ``topq_ceiling``: the top-quartile Spearman that a perfect predictor of each configuration's
    mean would reach against k-seed means, simulated: the tabulated means stand for the truth and
    k new seeds per configuration are drawn from its own residuals (sign-symmetrized, rescaled by
    sqrt(k / (k - 1))), the top quartile chosen on the drawn means as the gate chooses it.
    ``floor_regret``: the best configuration picked on all seeds but one, its regret read on that
    one, averaged over the seeds."""
    from scipy.stats import spearmanr

    from harness.ranking import normalized_regret

    sign = 1.0 if goal == "minimize" else -1.0
    values = wide.to_numpy(float)
    n, k = values.shape
    truth = values.mean(axis=1)
    resid = (values - truth[:, None]) * math.sqrt(k / (k - 1))
    resid = np.concatenate([resid, -resid], axis=1)  # symmetric: 2k draws per configuration
    rng = np.random.default_rng(seed)
    q = max(3, n // 4)
    rhos = []
    for _ in range(sims):
        pick = rng.integers(0, resid.shape[1], size=(n, k))
        drawn = truth + np.take_along_axis(resid, pick, axis=1).mean(axis=1)
        top = np.argsort(sign * drawn)[:q]
        rhos.append(float(spearmanr(truth[top], drawn[top]).statistic))
    floor = []
    for s in range(k):
        rest = np.delete(values, s, axis=1).mean(axis=1)
        best = int(np.argmin(sign * rest))
        floor.append(float(normalized_regret(np.array([values[best, s]]), optimum, worst, goal)[0]))
    return {"topq_ceiling": float(np.mean(rhos)), "floor_regret": float(np.mean(floor))}


def gates(space: str, table_path: Path, *, folds: int = 5, fresh: int = 4096, sims: int = 30,
          calibrate: bool = False) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from harness.oracle import load_table, noise_spread_ratio
    from harness.ranking import normalization, normalized_regret
    from harness.spec import load_spec
    from harness.surrogate import Surrogate
    from harness.tabulate import METRIC, sha256, sobol_design

    t0 = time.perf_counter()
    spec = load_spec(space)
    df = load_table(table_path, space)
    goal = spec.metric.goal
    col = METRIC + spec.metric.name
    digest = sha256(table_path)
    want = Path(str(table_path) + ".sha256")
    finals = df[df["kind"] == "final"]
    seeds = int(finals["seed"].nunique())
    full = int((finals.groupby("config")["seed"].nunique() >= seeds).sum())
    values = {str(c): g[np.isfinite(g)].tolist() for c, g in
              finals[finals["state"] == "complete"].groupby("config_id")[col]}
    norm = normalization(values, goal)  # type: ignore[arg-type]

    truth, pred, _ = out_of_fold(spec, df, folds, calibrate=calibrate)
    sign = 1.0 if goal == "minimize" else -1.0
    order = np.argsort(sign * truth)
    q = order[:max(3, len(order) // 4)]
    h = order[:max(3, len(order) // 2)]
    rho_all = float(spearmanr(truth, pred).statistic)
    rho_top = float(spearmanr(truth[q], pred[q]).statistic)
    r_true = normalized_regret(truth, norm.optimum, norm.worst, goal)
    r_pred = normalized_regret(pred, norm.optimum, norm.worst, goal)
    slope = float(np.polyfit(r_true[h], r_pred[h], 1)[0]) if np.ptp(r_true[h]) > 0 else math.nan

    sur = Surrogate(spec, df, calibrate=calibrate)
    design = sobol_design(spec, fresh, seed=12_345)
    fresh_pred = sur.predict_finals(design)
    fresh_regret = normalized_regret(fresh_pred, norm.optimum, norm.worst, goal)
    min_regret = float(np.min(fresh_regret))
    best_seen = float(np.min(r_true))  # the table's own best configuration: 0 by construction

    wide = finals[finals["state"] == "complete"].pivot_table(index="config", columns="seed", values=col).dropna()
    limits = noise_limits(wide, goal, norm.optimum, norm.worst) if wide.shape[1] >= 2 else None
    noise = noise_spread_ratio(spec, df, sims=sims)
    lo, hi = GATES["noise"]  # type: ignore[misc]
    passed = {"topq_spearman": rho_top >= GATES["topq_spearman"],  # type: ignore[operator]
              "slope": slope >= GATES["slope"],  # type: ignore[operator]
              "min_regret": min_regret < GATES["min_regret"],  # type: ignore[operator]
              "noise": lo <= noise["ratio"] <= hi}
    return {"space": space, "table": str(table_path), "configs_all_seeds": full, "seeds": seeds,
            "trials": int(len(finals)), "failed": int((finals["state"] != "complete").sum()),
            "cpu_seconds": float(finals["elapsed_s"].sum()), "sha256": digest,
            "sha256_ok": want.exists() and want.read_text().split()[0] == digest,
            "normalization": norm.as_dict(), "spearman_all": rho_all, "topq_spearman": rho_top,
            "topq_configs": int(len(q)), "slope_top_half": slope, "min_regret_fresh": min_regret,
            "fresh_configs": fresh, "best_table_regret": best_seen, "noise": noise, "noise_limits": limits,
            "passed": passed,
            "accepted": all(passed.values()), "calibrated": calibrate, "seconds": time.perf_counter() - t0}


def lim(r: dict[str, Any], key: str) -> str:
    v = (r.get("noise_limits") or {}).get(key)
    return f"{v:5.2f}" if v is not None else f"{'-':>5}"


def main(argv: list[str] | None = None) -> int:
    from harness.oracle import TableError, find_table
    from harness.strict_json import dumps

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spaces", nargs="*", default=list(SPACES))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fresh", type=int, default=4096)
    ap.add_argument("--sims", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--calibrated", action="store_true",
                    help="the surrogate with its calibration line (Surrogate(calibrate=True)), nested in each fold")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'table':16} {'cfgs':>5} {'seeds':>5} {'trials':>6} {'cpu_s':>7} {'rho':>6} {'topq':>6} "
          f"{'slope':>6} {'minreg':>7} {'noise':>6} {'noise 95%':>13} {'med':>5} {'ceil':>5} {'floor':>5}  accepted  sha256")
    for space in args.spaces:
        try:
            path = find_table(space)
            r = gates(space, path, folds=args.folds, fresh=args.fresh, sims=args.sims,  # type: ignore[arg-type]
                      calibrate=args.calibrated)
        except TableError as exc:
            print(f"{space:16} {exc}")
            continue
        rows.append(r)
        n, ok = r["noise"], r["passed"]
        cells = {"topq_spearman": f"{r['topq_spearman']:.3f}", "slope": f"{r['slope_top_half']:.3f}",
                 "min_regret": f"{r['min_regret_fresh']:.3f}", "noise": f"{n['ratio']:.3f}"}
        cells = {k: v + ("" if ok[k] else "*") for k, v in cells.items()}
        ci = f"[{n['ratio_ci'][0]:.2f}, {n['ratio_ci'][1]:.2f}]"
        check = "" if r["sha256_ok"] else " (checksum file differs!)"
        print(f"{space:16} {r['configs_all_seeds']:5d} {r['seeds']:5d} {r['trials']:6d} {r['cpu_seconds']:7.0f} "
              f"{r['spearman_all']:6.3f} {cells['topq_spearman']:>6} {cells['slope']:>6} {cells['min_regret']:>7} "
              f"{cells['noise']:>6} {ci:>13} {n['ratio_median']:5.2f} {lim(r, 'topq_ceiling')} {lim(r, 'floor_regret')}  "
              f"{'yes' if r['accepted'] else 'NO':8}  "
              f"{r['sha256'][:16]}{check}")
    print("\n* = gate missed. Gates: top-quartile Spearman >= 0.8 (out of fold), calibration slope >= 0.8 on the "
          "top half, lowest surrogate regret over fresh Sobol configurations < 0.05, noise spread ratio in "
          "[0.8, 1.25] (pooled SD, leave-one-out; 'med' = median-based). Regret on the best per-configuration "
          "mean .. the median configuration. What the seed noise allows: 'ceil' = the top-quartile Spearman of a "
          "perfect mean predictor against the seed-averaged truth, 'floor' = the held-out-seed regret of the table's "
          "best configuration.")
    print("Full tables (resumable: rerun the same command):\n"
          "  make tables        # each quick space: harness tabulate SPACE --configs 500 --seeds 3 --dense 100, "
          "then this script")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(dumps({"tables": rows}))
    return 0 if rows and all(r["accepted"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
