"""Comparing tuners: read sweeps back from MLflow, per-tuner statistics, paired tests, a verdict, tables.

``harness compare`` and ``harness benchmark`` use this package; the figures live in
:mod:`harness.plots` and :mod:`harness.ranking_plots`, the verdict's statistics in
:mod:`harness.ranking`. By job:

- :mod:`harness.compare.read`: the sweeps and their trials, read back from MLflow;
- :mod:`harness.compare.stats`: per-tuner statistics, paired tests, the verdict;
- :mod:`harness.compare.render`: terminal tables, CSV, JSON, markdown;
- :mod:`harness.compare.benchmark`: planning and running a benchmark;
- :mod:`harness.compare.run`: the commands' work (files, plots, the comparison run in MLflow).
"""

from __future__ import annotations

from harness.compare.benchmark import (
    STEPS_ONLY_TRIAL_CAP,
    BenchmarkPlan,
    parse_seeds,
    plan_benchmark,
    run_benchmark,
    seeds_text,
)
from harness.compare.read import Event, SweepRecord, TrialPoint, load_sweeps
from harness.compare.render import COLUMNS, FORMATS, fmt, fmt_count, render_text, table_rows, tables
from harness.compare.run import log_comparison, run_compare, write_verdict_plots
from harness.compare.stats import (
    ALPHA,
    TEST_NAME,
    Comparison,
    PairTest,
    TunerRow,
    VerdictReport,
    compare_sweeps,
    holm,
    paired_test,
    value_range,
    verdict_report,
)
from harness.spec import better

__all__ = [
    "ALPHA", "COLUMNS", "FORMATS", "STEPS_ONLY_TRIAL_CAP", "TEST_NAME", "BenchmarkPlan", "Comparison", "Event",
    "PairTest", "SweepRecord", "TrialPoint", "TunerRow", "VerdictReport", "better", "compare_sweeps", "fmt",
    "fmt_count", "holm", "load_sweeps", "log_comparison", "paired_test", "parse_seeds", "plan_benchmark",
    "render_text", "run_benchmark", "run_compare", "seeds_text", "table_rows", "tables", "value_range", "verdict_report",
    "write_verdict_plots",
]
