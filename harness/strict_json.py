"""Strict JSON for everything the harness writes as a verdict: no ``Infinity``, no ``NaN``.

Python's ``json`` writes ``Infinity`` and ``NaN`` by default, which are not JSON (RFC 8259):
``jq``, JavaScript's ``JSON.parse`` and most readers refuse the file. Here every non-finite
float becomes ``null`` and the path of each one is listed in a note, so nothing is silently
lost; the text is then written with ``allow_nan=False``, which would raise rather than emit
an invalid token.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NOTES_KEY = "json_notes"


def finite(obj: Any, notes: list[str] | None = None, path: str = "$") -> Any:
    """``obj`` with numpy scalars and arrays as plain Python, tuples as lists, and every
    non-finite float as None (its path appended to ``notes``)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None  # type: ignore[assignment]
    if np is not None:
        if isinstance(obj, np.ndarray):
            obj = obj.tolist()
        elif isinstance(obj, np.generic):
            obj = obj.item()
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if notes is not None:
            notes.append(f"{path} was {obj!r}: written as null")
        return None
    if isinstance(obj, dict):
        return {str(k): finite(v, notes, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v, notes, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any, *, indent: int | None = 1, note: bool = True) -> str:
    """Strict JSON text of ``obj``; with ``note`` and a dict at the top, the replaced values are
    listed under ``json_notes`` (absent when there are none)."""
    notes: list[str] = []
    clean = finite(obj, notes)
    if note and notes and isinstance(clean, dict):
        clean = {**clean, NOTES_KEY: [*clean.get(NOTES_KEY, []), *notes]}
    return json.dumps(clean, indent=indent, allow_nan=False, default=str)


__all__ = ["NOTES_KEY", "dumps", "finite"]
