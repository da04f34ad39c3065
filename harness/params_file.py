"""Reading parameter values from the command line and from files: ``--set``, ``--params``,
``--enqueue`` and ``--defaults-first``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.inputs import SweepOptions, UsageError
from harness.spec import SweepSpec


def read_params_file(path: str) -> dict[str, Any]:
    """A YAML mapping of params, or a document with a ``params`` key (``harness best`` output)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--params {path}: cannot read: {str(exc).splitlines()[0]}") from None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
        doc = doc["params"]
    if not isinstance(doc, dict):
        raise UsageError(f"--params {path}: expected a mapping of parameter values")
    return doc


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


__all__ = ["first_configs", "parse_set", "read_params_file"]
