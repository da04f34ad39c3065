"""benchmarks/tables.py's noise limits against tables of known seed noise: what a perfect
predictor of the mean could reach on the top-quartile gate, and the regret floor of the table's
own best configuration read on a held-out seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from tests.conftest import load_script


def _script():
    return load_script("benchmarks/tables.py")


def _table(rng: np.random.Generator, true: np.ndarray, sigma: float, k: int = 3) -> pd.DataFrame:
    return pd.DataFrame(true[:, None] + rng.normal(0.0, sigma, (len(true), k)), columns=list(range(k)))


def test_no_seed_noise_allows_everything() -> None:
    true = np.random.default_rng(0).normal(size=200)
    lim = _script().noise_limits(_table(np.random.default_rng(1), true, 0.0), "minimize",
                                 float(true.min()), float(np.median(true)), sims=20)
    assert lim["topq_ceiling"] == pytest.approx(1.0) and lim["floor_regret"] == pytest.approx(0.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_the_ceiling_is_the_top_quartile_spearman_of_the_true_means(sigma: float) -> None:
    """The true means are known here: the top-quartile Spearman of truth against 3-seed means,
    over many draws of the table, is what the estimate (from one table alone) must come near."""
    rng = np.random.default_rng(2)
    true = rng.normal(size=600)
    reached = []
    for _ in range(30):
        means = _table(rng, true, sigma).mean(axis=1).to_numpy()
        top = np.argsort(means)[:150]
        reached.append(spearmanr(true[top], means[top]).statistic)
    wide = _table(rng, true, sigma)
    m = wide.mean(axis=1)
    lim = _script().noise_limits(wide, "minimize", float(m.min()), float(m.median()), sims=50)
    assert lim["topq_ceiling"] == pytest.approx(float(np.mean(reached)), abs=0.06)
    assert lim["topq_ceiling"] < 0.9  # noisy: below a noiseless table's 1.0
    assert lim["floor_regret"] > 0.02  # the optimum is a lucky minimum: a held-out seed falls short of it
