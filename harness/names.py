"""The MLflow names the harness writes and reads: tags, metrics, artifacts, in one place.

Writers (:mod:`harness.tracking`, :mod:`harness.runner`) and readers (:mod:`harness.records`,
:mod:`harness.compare`) use these constants, so a name changes in one line. ``flt(tag, value)``
builds the MLflow search filter for one tag.
"""

from __future__ import annotations

# -- tags on every harness run ------------------------------------------------------------------
TAG_KIND = "harness.kind"  # sweep | trial | comparison
KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
KIND_COMPARISON = "comparison"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: a trial's sweep run
TAG_NOTE = "mlflow.note.content"  # MLflow's own: the run's description

# -- sweep (parent run) tags --------------------------------------------------------------------
TAG_TUNER = "harness.tuner"
TAG_OBJECTIVE = "harness.objective"
TAG_SEED = "harness.seed"  # also on every trial run
TAG_ENGINE = "harness.engine"
TAG_SWEEP = "harness.sweep"
TAG_SPEC_HASH = "harness.spec_hash"
TAG_METRIC = "harness.metric"
TAG_GOAL = "harness.goal"
TAG_OBJECTIVES = "harness.objectives"  # a multi-objective sweep: JSON [{name, goal, reference}]
TAG_BUDGET = "harness.budget"
TAG_BUDGET_STEPS = "harness.budget_steps"
TAG_BENCHMARK = "harness.benchmark"
TAG_SHARED = "harness.shared"
TAG_RERUN_OF = "harness.rerun_of"
TAG_GIT_COMMIT = "harness.git_commit"
TAG_GIT_DIRTY = "harness.git_dirty"
TAG_COMMAND = "harness.command"
TAG_VERSION_PREFIX = "harness.version."  # + a package name: its installed version
TAG_POPULATION = "harness.population"  # the sweep ran its trials as populations (K members, one model)
TAG_POPULATION_SIZE = "harness.population_size"
TAG_PARETO = "harness.pareto"  # a multi-objective sweep: its front is in pareto.json
TAG_SIMULATED = "harness.simulated"  # a simulated sweep or benchmark (harness benchmark --simulated)
TAG_TABULATE = "harness.tabulate"  # the run that holds a tabulated space's table (harness tabulate)
TAG_SEEDS = "harness.seeds"  # a simulated benchmark's seeds, comma-separated

# -- trial (child run) tags ---------------------------------------------------------------------
TAG_TRIAL = "harness.trial"  # the trial number
TAG_STATE = "harness.state"  # running | complete | pruned | failed
TAG_REASON = "harness.reason"
TAG_DEVICE = "harness.device"
STATE_RUNNING = "running"
REASON_INTERRUPTED = "interrupted"

# -- comparison run tags ------------------------------------------------------------------------
TAG_COMPARED_RUNS = "harness.compared_runs"
TAG_TUNERS = "harness.tuners"
TAG_TEST = "harness.test"
TAG_TARGET = "harness.target"

# -- metrics ------------------------------------------------------------------------------------
METRIC_BEST_SO_FAR = "best_so_far"  # sweep: step = finished trials
METRIC_BEST_SO_FAR_BY_STEPS = "best_so_far_by_steps"  # sweep: step = cumulative training steps
METRIC_TRIALS_FINISHED = "trials_finished"
METRIC_HYPERVOLUME = "hypervolume"  # multi-objective sweep: step = finished trials
METRIC_HYPERVOLUME_BY_STEPS = "hypervolume_by_steps"
METRIC_ELAPSED = "elapsed_s"  # trial: seconds since the sweep loop started, when it finished
METRIC_SECONDS = "seconds"  # trial: its own wall seconds
METRIC_STEPS = "steps"  # trial: training steps it ran

METRIC_TABLE_TRIALS = "trials"  # tabulate: finished trials in the table
METRIC_TABLE_COMPLETE_CONFIGS = "complete_configs"  # tabulate: configurations with every seed
METRIC_WALL_SECONDS = "wall_seconds"  # simulated benchmark: real seconds per tuner (<tuner>.wall_seconds)

# -- artifacts ----------------------------------------------------------------------------------
ARTIFACT_SPEC = "spec.yaml"
ARTIFACT_TRACEBACK = "traceback.txt"
ARTIFACT_PARETO = "pareto.json"


def flt(tag: str, value: str) -> str:
    """The MLflow filter string matching runs whose ``tag`` equals ``value``."""
    return f"tags.`{tag}` = '{value}'"
