"""An out-of-tree harness plugin: the worked example of "one backend per tool".

It adds, by entry points only (see ``pyproject.toml``), a tuner and an objective:

- ``qmc`` (group ``harness.tuners``): :class:`~harness_qmc_plugin.tuner.QMCTuner`, a scrambled
  Sobol' or Halton design from :mod:`scipy.stats.qmc` over the spec's space;
- ``noisy_quadratic`` (group ``harness.objectives``): :func:`~harness_qmc_plugin.objective.train`,
  a small trainer-shaped function with a learning curve.
"""

__version__ = "0.1.0"
