"""Reading parameter values from the command line and from files: ``--set`` and ``--params``
(``--enqueue`` and ``--defaults-first`` are validated with the other inputs:
:func:`harness.inputs.first_configs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.inputs import UsageError


def read_params_file(path: str, member: int | None = None) -> dict[str, Any]:
    """A YAML mapping of params, or a document with a ``params`` key (``harness best`` output);
    a list of such documents (a Pareto front) needs ``member``."""
    return read_params_doc(path, member)[0]


def read_params_doc(path: str, member: int | None = None) -> tuple[dict[str, Any], int | None]:
    """The params of a ``--params`` file and its ``seed`` (None when it names none).

    ``harness best`` writes one document (``params``, ``seed``, ...) for a single objective and a
    list of them, the Pareto front, for several: a list of more than one needs ``--member I``
    (silently running the first member would hide the others)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--params {path}: cannot read: {str(exc).splitlines()[0]}") from None
    if isinstance(doc, list):
        if member is None and len(doc) > 1:
            raise UsageError(f"--params {path}: holds {len(doc)} configurations (a Pareto front): "
                             f"choose one with --member I (0 .. {len(doc) - 1})")
        i = 0 if member is None else member
        if not 0 <= i < len(doc):
            raise UsageError(f"--member {i}: {path} holds {len(doc)} configuration(s) (0 .. {len(doc) - 1})")
        doc = doc[i]
    elif member not in (None, 0):
        raise UsageError(f"--member {member}: {path} holds one configuration (use --member 0 or leave it out)")
    seed = None
    if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
        raw = doc.get("seed")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise UsageError(f"--params {path}: seed must be a whole number, got {raw!r}")
            seed = raw
        doc = doc["params"]
    if not isinstance(doc, dict):
        raise UsageError(f"--params {path}: expected a mapping of parameter values")
    return doc, seed


def parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (1e-3, 64, true, tb)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


__all__ = ["parse_set", "read_params_doc", "read_params_file"]
