"""Engines: where trials run. ``local`` (worker processes here) or ``ray`` (a Ray cluster)."""

from __future__ import annotations

from typing import Any

from harness.engines.base import Done, Engine, EngineError, Report, TrialTask

ENGINES = ("local", "ray")


def make_engine(name: str, slots: list[str], **options: Any) -> Engine:
    """Build the engine ``name`` for the given device slots (validated by :func:`engine_slots`)."""
    if name == "local":
        from harness.engines.local import LocalEngine

        return LocalEngine(slots)
    if name == "ray":
        from harness.engines.ray import RayEngine  # type: ignore[import-not-found]

        return RayEngine(slots, **options)
    raise EngineError(f"--engine {name}: unknown engine (use one of {', '.join(ENGINES)})")


__all__ = ["ENGINES", "Done", "Engine", "EngineError", "Report", "TrialTask", "make_engine"]
