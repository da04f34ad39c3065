"""Drivers join a tuner to where trials run and hand every trial event to the one recorder.

- :mod:`harness.drivers.base`: the :class:`~harness.drivers.base.Driver` protocol.
- :mod:`harness.drivers.ask_tell`: our loop: ask the tuner, dispatch on an engine (local
  processes, populations, Ray), decide prunes from reports, tell the tuner (optuna, ax, random,
  plugins); step-wise.
- :mod:`harness.drivers.multi`: several ask/tell sweeps over one shared engine (a benchmark's
  sweeps at once), each capped at its own ``--workers``, round-robin by age.
- :mod:`harness.drivers.ray_tune`: Ray Tune's own loop, its searcher and schedulers placing
  and stopping trials on Ray; a callback hands its trial events to the same recorder.
"""
