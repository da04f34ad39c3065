"""Reading parameter values from the command line and from files: ``--set``, ``--params``,
``--enqueue`` and ``--defaults-first``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.inputs import SweepOptions, UsageError
from harness.spec import SweepSpec


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


def first_configs(spec: SweepSpec, options: SweepOptions) -> list[dict[str, Any]]:
    """Configurations evaluated before the tuner's own: the defaults, then ``--enqueue`` ones."""
    import yaml

    configs: list[dict[str, Any]] = []
    if options.defaults_first:
        configs.append(spec.defaults()[0])
    if options.enqueue:
        try:
            doc = yaml.safe_load(Path(options.enqueue).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--enqueue {options.enqueue}: cannot read: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, dict):
            doc = [doc]
        if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
            raise UsageError(f"--enqueue {options.enqueue}: expected a YAML list of parameter mappings")
        for i, d in enumerate(doc):
            d = d.get("params", d) if isinstance(d.get("params"), dict) else d
            unknown = sorted(set(d) - set(spec.params))
            if unknown:
                raise UsageError(f"--enqueue {options.enqueue}: entry {i}: unknown parameter(s) {', '.join(unknown)}")
            params, _ = spec.defaults(d)
            configs.append(params)
    return configs


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


__all__ = ["first_configs", "parse_set", "read_params_doc", "read_params_file"]
