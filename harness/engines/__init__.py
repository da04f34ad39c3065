"""Engines: where trials run. ``local`` (worker processes here) or ``ray`` (a Ray cluster)."""

from __future__ import annotations

from typing import Any

from harness.engines.base import Done, Engine, EngineError, Report, TrialTask

ENGINES = ("local", "ray")


def make_engine(name: str, slots: list[str], population: int = 1, **options: Any) -> Engine:
    """Build the engine ``name`` for the given device slots (validated by :func:`harness.engines.local.device_slots`);
    ``population`` > 1: local workers run populations of that many members (engines/population.py)."""
    if name == "local":
        if population > 1:
            from harness.engines.population import PopulationEngine

            return PopulationEngine(slots, population)
        from harness.engines.local import LocalEngine

        return LocalEngine(slots)
    if name == "ray":
        from harness.engines.ray import RayEngine  # type: ignore[import-not-found]

        return RayEngine(slots, **options)
    raise EngineError(f"--engine {name}: unknown engine (use one of {', '.join(ENGINES)})")


__all__ = ["ENGINES", "Done", "Engine", "EngineError", "Report", "TrialTask", "make_engine"]
