"""Translation of a sweep spec into Ax's terms (``ax.api`` configs), faithful or refused.

Never a silently changed domain:

- ``float`` / ``int`` -> ``RangeParameterConfig`` with ``scaling="log"`` where the spec says
  ``log``; a range with ``low == high`` becomes a one-value choice (Ax's fixed parameter).
- ``choice`` -> ``ChoiceParameterConfig`` of one type (str, int, float or bool; a mix is refused).
- ``when: {parent: value}`` -> ``ChoiceParameterConfig(dependent_parameters={value: [child]})``
  (Ax's hierarchical search space). Ax's space is a tree, so a child active for several values
  of its parent (``when: {method: [a, b]}``) gets one copy per value (``gamma__method_0``,
  ``gamma__method_1``, each with the same domain) and the copies map back to ``gamma``; the set
  of configurations is exactly the spec's. A condition on two parents is refused.
- the metrics -> ``configure_optimization``'s objective string (and, with several objectives,
  the spec's reference point as Ax's objective thresholds).

Ax's config classes are imported here (``import ax`` takes about 5 s): this module is imported
only for ``--tuner ax`` and by the tuner module :mod:`harness.tuners.ax`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.spec import ChoiceParam, FloatParam, IntParam, SweepSpec
from harness.tuners.base import TunerError

# Ax logs one INFO line ("Ax SQL storage initialized ...") from this logger while it is imported
IMPORT_LOGGER = "ax.storage.sqa_store.with_db_settings_base"


class _WarningsAndAbove(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextmanager
def quiet_ax_import() -> Iterator[None]:
    """Keep Ax's INFO lines of its import off the CLI's stderr, changing nothing else: a filter on
    the one Ax logger that writes them, removed again after the import (no global logging state,
    no level of Ax's handlers: those are set through Ax's own API when a client is created)."""
    logger = logging.getLogger(IMPORT_LOGGER)
    only = _WarningsAndAbove()
    logger.addFilter(only)
    try:
        yield
    finally:
        logger.removeFilter(only)


with quiet_ax_import():
    from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig
    from ax.api.utils.instantiation.from_config import parameter_from_config
    from ax.core.parameter import ChoiceParameter, FixedParameter, RangeParameter

AxConfig = RangeParameterConfig | ChoiceParameterConfig


@dataclass(frozen=True)
class AxParam:
    """One Ax parameter: the spec parameter it stands for and the branch that activates it."""

    ax_name: str
    spec_name: str
    config: AxConfig
    conditions: tuple[tuple[str, Any], ...] = ()  # (parent's Ax name, value) pairs, outermost first


@dataclass
class Translation:
    params: list[AxParam] = field(default_factory=list)

    @property
    def configs(self) -> list[AxConfig]:
        return [p.config for p in self.params]

    def to_spec(self, ax_params: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
        """An Ax parameterization back in the spec's names and types (inactive ones dropped)."""
        by_name = {p.ax_name: p for p in self.params}
        out: dict[str, Any] = {}
        for ax_name, value in ax_params.items():
            if ax_name not in by_name or value is None:
                continue
            name = by_name[ax_name].spec_name
            out[name] = _cast(spec.params[name], value)
        return spec.active_params(out)

    def to_ax(self, params: dict[str, Any]) -> dict[str, Any]:
        """Spec-named params (an active configuration) in Ax's names."""
        out: dict[str, Any] = {}
        for p in self.params:  # parents come before their children
            if p.spec_name in params and all(out.get(k, _MISSING) == v for k, v in p.conditions):
                out[p.ax_name] = params[p.spec_name]
        return out


_MISSING = object()


def _cast(p: FloatParam | IntParam | ChoiceParam, value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value  # numpy scalars from Ax
    if isinstance(p, FloatParam):
        return float(value)
    if isinstance(p, IntParam):
        return int(round(float(value)))
    for v in p.values:  # the spec's own object
        if v == value and isinstance(v, bool) == isinstance(value, bool):
            return v
    return value


def _choice_type(name: str, values: list[Any]) -> str:
    kinds = {("bool" if isinstance(v, bool) else "int" if isinstance(v, int) else
              "float" if isinstance(v, float) else "str") for v in values}
    if len(kinds) != 1:
        raise TunerError(
            f"params.{name}: Ax needs the values of a choice to be of one type, got "
            f"{sorted(kinds)} in {values} (write them all as strings or all as numbers of one type)"
        )
    return kinds.pop()


def _config(ax_name: str, p: FloatParam | IntParam | ChoiceParam,
            dependents: dict[Any, list[str]] | None) -> AxConfig:
    if isinstance(p, ChoiceParam):
        kind = _choice_type(ax_name, p.values)
        return ChoiceParameterConfig(
            name=ax_name, values=list(p.values), parameter_type=kind,  # type: ignore[arg-type]
            is_ordered=kind in ("int", "float"), dependent_parameters=dependents or None,
        )
    kind = "float" if isinstance(p, FloatParam) else "int"
    if p.low == p.high:  # Ax's ranges need low < high; one value is Ax's fixed parameter
        return ChoiceParameterConfig(name=ax_name, values=[p.low], parameter_type=kind)  # type: ignore[arg-type]
    return RangeParameterConfig(
        name=ax_name, bounds=(p.low, p.high), parameter_type=kind,  # type: ignore[arg-type]
        scaling="log" if p.log else "linear",
    )


def translate(spec: SweepSpec) -> Translation:
    """The spec as Ax parameter configs; :class:`TunerError` (one line) when Ax cannot express it."""
    children: dict[str, dict[Any, list[str]]] = {}  # parent -> value -> children
    for name, p in spec.params.items():
        if not p.when:
            continue
        if len(p.when) > 1:
            parents = ", ".join(p.when)
            raise TunerError(
                f"params.{name}.when names {len(p.when)} parents ({parents}): Ax's hierarchical "
                "search space is a tree with one parent per parameter; nest the conditions or "
                "use --tuner optuna, ray or random"
            )
        ((parent, allowed),) = p.when.items()
        for value in allowed if isinstance(allowed, list) else [allowed]:
            children.setdefault(parent, {}).setdefault(value, []).append(name)

    out = Translation()
    taken = set(spec.params)

    def emit(name: str, ax_name: str, conditions: tuple[tuple[str, Any], ...]) -> None:
        p = spec.params[name]
        branches = children.get(name, {})
        plan: list[tuple[Any, str, str]] = []  # (value, child, child's Ax name)
        dependents: dict[Any, list[str]] = {}
        for i, value in enumerate(getattr(p, "values", [])):
            for child in branches.get(value, []):
                several = sum(child in kids for kids in branches.values()) > 1
                child_ax = f"{child}{ax_name[len(name):]}" + (f"__{name}_{i}" if several else "")
                if child_ax != child and child_ax in taken:
                    raise TunerError(
                        f"params.{child}: its Ax copy name '{child_ax}' clashes with another "
                        "parameter; rename one of them"
                    )
                taken.add(child_ax)
                plan.append((value, child, child_ax))
                dependents.setdefault(value, []).append(child_ax)
        out.params.append(AxParam(ax_name, name, _config(ax_name, p, dependents), conditions))
        for value, child, child_ax in plan:
            emit(child, child_ax, (*conditions, (ax_name, value)))

    for name in spec.order():
        if not spec.params[name].when:
            emit(name, name, ())
    return out


def check_space(spec: SweepSpec) -> None:
    """Raise :class:`TunerError` when Ax cannot express the space (for ``prepare``)."""
    tr = translate(spec)
    from ax.core.search_space import SearchSpace
    from ax.exceptions.core import UserInputError

    try:
        SearchSpace(parameters=[parameter_from_config(c) for c in tr.configs])
    except (UserInputError, ValueError) as exc:
        raise TunerError(f"Ax cannot express this space: {str(exc).splitlines()[0]}") from None


def domains(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    """Each spec parameter's domain as Ax's own parameter objects hold it (for the contract test).

    ``("float"|"int", low, high, log)`` or ``("choice", values)``; every copy of a parameter
    (one per parent value) must carry the same domain, which is checked here.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for p in translate(spec).params:
        core = parameter_from_config(p.config)
        if isinstance(core, RangeParameter):
            kind = "int" if core.parameter_type.name == "INT" else "float"
            dom: tuple[Any, ...] = (kind, core.lower, core.upper, bool(core.log_scale))
        elif isinstance(core, FixedParameter):
            sp = spec.params[p.spec_name]
            dom = (sp.type, core.value, core.value, bool(getattr(sp, "log", False))) \
                if not isinstance(sp, ChoiceParam) else ("choice", [core.value])
        else:
            assert isinstance(core, ChoiceParameter)
            dom = ("choice", sorted(core.values, key=repr))
        if p.spec_name in out and out[p.spec_name] != dom:
            raise AssertionError(f"{p.spec_name}: Ax copies differ: {out[p.spec_name]} vs {dom}")
        out[p.spec_name] = dom
    return out


def metric_name(name: str) -> str:
    """Ax parses the objective string: keep the metric name an identifier."""
    safe = re.sub(r"\W", "_", name)
    return safe if safe and not safe[0].isdigit() else f"m_{safe}"


def optimization(spec: SweepSpec) -> dict[str, Any]:
    """``configure_optimization``'s arguments: one objective, or several as Ax's comma-separated
    string (``"-branin, -currin"``: a leading minus minimizes). With several, the spec's reference
    point becomes Ax's objective thresholds: in ax-platform 1.3 an outcome constraint on an
    objective metric of a multi-objective string is turned into its objective threshold
    (``ax.api.utils.instantiation.from_string.optimization_config_from_string``)."""
    terms = [("-" if m.goal == "minimize" else "") + metric_name(m.name) for m in spec.metrics]
    out: dict[str, Any] = {"objective": ", ".join(terms)}
    if spec.multi and all(m.reference is not None for m in spec.metrics):
        out["outcome_constraints"] = [
            f"{metric_name(m.name)} {'<=' if m.goal == 'minimize' else '>='} {float(m.reference):.17g}"  # type: ignore[arg-type]
            for m in spec.metrics
        ]
    return out


__all__ = ["AxConfig", "AxParam", "Translation", "check_space", "domains", "metric_name", "optimization",
           "translate"]
