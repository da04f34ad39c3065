"""Running sweeps from the command line: ``harness sweep`` / ``resume`` / ``trial``.

The jobs live apart; this module keeps the names other code imports:

- :mod:`harness.inputs`: validating every input before anything is created (:func:`prepare`,
  :class:`SweepOptions`, :class:`UsageError`, population sizing, the tuner vocabulary);
- :mod:`harness.sweep_dir`: the sweep's folder, lock, ``state.json`` and resume;
- :mod:`harness.builder`: the one sweep builder (assemble, run, close), :func:`launch`,
  :func:`resume` and sweeps that run together;
- :mod:`harness.params_file`: ``--set``, ``--params`` and ``--enqueue`` values;
- here: :func:`run_trial` (``harness trial``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import names
from harness.builder import (
    SweepInterrupted,
    SweepsInterrupted,
    SweepSummary,
    launch,
    provenance,
    resume,
)
from harness.engines.base import EngineError
from harness.inputs import (
    POPULATION_CUDA,
    STATE_ROOT,
    Prepared,
    SweepOptions,
    UsageError,
    first_configs,
    free_bytes_per_worker,
    prepare,
    tuner_options,
)
from harness.params_file import parse_set, read_params_doc, read_params_file
from harness.recorder import SweepStats
from harness.sweep_dir import repair_state


def run_trial(options: SweepOptions, overrides: dict[str, Any],
              on_update: Callable[[SweepStats], None] | None = None, *,
              params_file: str | None = None, from_run: str | None = None,
              seed: int | None = None, member: int | None = None) -> SweepSummary:
    """``harness trial``: one configuration, through the same engine, as a one-trial sweep.

    Parameters come from ``--set`` overrides, over a ``--params`` file (what ``harness best``
    writes; ``member`` picks one of a Pareto front), over a finished run's params
    (``--from-run``), over the space's defaults. The seed: ``seed``, else the file's ``seed``,
    else the rerun run's, else the sweep seed.
    """
    explicit = seed
    options.tuner = "manual"
    options.trials = 1
    if options.workers is None:
        options.workers = 1
    spec = None
    base: dict[str, Any] = {}
    if from_run is not None:
        from harness.records import run_for_rerun
        from harness.tracking import resolve_uri

        uri = resolve_uri(options.tracking_uri)
        if uri is None:
            raise UsageError("--from-run needs a tracking store (not --tracking-uri none)")
        spec, base, run_seed, experiment = run_for_rerun(uri, from_run)
        seed = run_seed if seed is None else seed
        options.experiment = options.experiment or experiment
        options.space = options.space or "rerun"
        options.tags = {**options.tags, names.TAG_RERUN_OF: from_run}
    if params_file is not None:
        values, file_seed = read_params_doc(params_file, member)
        base.update(values)
        if explicit is None and file_seed is not None:
            seed = file_seed
    elif member is not None:
        raise UsageError(f"--member {member}: needs --params FILE (a Pareto front from harness best)")
    p = prepare(options, spec)
    params, fixed_over = p.spec.defaults({**base, **overrides})
    if fixed_over:
        p.spec = p.spec.model_copy(update={"fixed": {**p.spec.fixed, **fixed_over}})
    if options.name is None:
        p.name = p.name.replace("-manual-", "-trial-")
        p.state_dir = options.state_root / p.name
    return launch(options, on_update, prepared=p, manual_configs=[params],
                  manual_seeds=[seed if seed is not None else options.seed])


__all__ = ["POPULATION_CUDA", "STATE_ROOT", "EngineError", "Prepared", "SweepInterrupted", "SweepOptions",
           "SweepSummary", "SweepsInterrupted", "UsageError", "first_configs", "free_bytes_per_worker",
           "launch", "parse_set", "prepare", "provenance", "read_params_file", "repair_state", "resume",
           "run_trial", "tuner_options"]
