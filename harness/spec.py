"""Sweep specification: the YAML search-space format, validated with pydantic.

One file drives every tuner identically::

    objective: gflownet            # registry name or module:function
    metric: {name: l1, goal: minimize}
    fixed: {ndim: 2, height: 8}
    params:
      lr:      {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3}
      hidden:  {type: int, low: 32, high: 512, log: true}
      loss:    {type: choice, values: [tb, db, subtb, fm]}
      lambda_: {type: float, low: 0.5, high: 0.99, when: {loss: subtb}}
    budget: {trials: 32, report_every: 100}

Several objectives (a multi-objective sweep, issue 17) replace ``metric:`` with ``metrics:``,
a list of ``{name, goal}`` entries, each with an optional ``reference``: that metric's
coordinate of the hypervolume reference point (see :mod:`harness.pareto`)::

    metrics:
      - {name: branin, goal: minimize, reference: 18.0}
      - {name: currin, goal: minimize, reference: 6.0}

The reference coordinates may instead be written as a top-level mapping
``reference_point: {branin: 18.0, currin: 6.0}``; either way they end up on the metrics
(``Metric.reference``) and :attr:`SweepSpec.reference_point` reads them back as a mapping.
Rules: a spec gives ``metric`` or ``metrics``, not both; names are distinct; reference
coordinates are given for every metric or for none (a hypervolume needs a full point; with
none, :func:`harness.pareto.default_reference` is used), and never twice with different
values. ``metric: X`` means ``metrics: [X]``: :attr:`SweepSpec.metric` is always the first
metric (what a single-objective tuner and the progress metrics read), ``SweepSpec.metrics``
the whole list, ``SweepSpec.multi`` whether there is more than one. A single metric without
a reference is stored, hashed and written back in the ``metric:`` form, so the hash of a
spec saved before ``metrics:`` existed is unchanged (resume compares hashes).

The metric names ``seconds`` and ``steps`` are allowed: they are the harness's measured
costs of every trial (wall seconds and steps trained, logged on every child run), so
"quality versus cost" is one line, e.g. ``metrics: [{name: l1}, {name: seconds}]``.

Every error is a :class:`SpecError` with one line naming the file, the field and the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Scalar = bool | int | float | str

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class SpecError(ValueError):
    """A search-space file or a value given for it breaks a rule (one line, for the CLI)."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, Scalar | list[Scalar]] | None = None

    def active(self, params: Mapping[str, Any]) -> bool:
        """True when every ``when`` condition holds for the already-chosen ``params``."""
        if not self.when:
            return True
        for parent, allowed in self.when.items():
            if parent not in params:
                return False
            values = allowed if isinstance(allowed, list) else [allowed]
            if params[parent] not in values:
                return False
        return True


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    default: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.default)
        return self

    def middle(self) -> float:
        if self.log:
            return math.sqrt(self.low * self.high)
        return (self.low + self.high) / 2

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and (
            self.low <= value <= self.high
        )


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    default: int | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.default)
        return self

    def middle(self) -> int:
        if self.log:
            return int(round(math.sqrt(self.low * self.high)))
        return (self.low + self.high) // 2

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and (
            self.low <= value <= self.high
        )


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)
    default: Scalar | None = None

    @model_validator(mode="after")
    def _check(self) -> ChoiceParam:
        if len(set(map(repr, self.values))) != len(self.values):
            raise ValueError(f"values must be distinct, got {self.values}")
        if self.default is not None and self.default not in self.values:
            raise ValueError(f"default {self.default!r} is not one of values {self.values}")
        return self

    def middle(self) -> Scalar:
        return self.values[0]

    def contains(self, value: Any) -> bool:
        return value in self.values


Param = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool, default: float | None) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, got low={low} > high={high}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got low={low}")
    if default is not None and not low <= default <= high:
        raise ValueError(f"default {default} is outside [{low}, {high}]")


def better(a: float, b: float, goal: str) -> bool:
    """True when value ``a`` is strictly better than ``b`` for ``goal`` (minimize | maximize)."""
    return a > b if goal == "maximize" else a < b


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    goal: Literal["minimize", "maximize"] = "minimize"
    reference: float | None = Field(default=None, allow_inf_nan=False)

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b``."""
        return better(a, b, self.goal)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(default=20, ge=1)
    report_every: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    trial_timeout: float | None = Field(default=None, gt=0)


class SweepSpec(BaseModel):
    """A validated search space plus the objective, metric and budget it is searched with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: str = Field(min_length=1)
    metrics: list[Metric] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Param] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)
    # Folded into the metrics' ``reference`` by _check_metrics, then holds the whole mapping
    # (or None); excluded from dumps, so the hash and to_yaml see the references only once.
    reference_point: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, exclude=True
    )

    @model_validator(mode="before")
    @classmethod
    def _one_metric_form(cls, data: Any) -> Any:
        """``metric: X`` means ``metrics: [X]``; a spec gives one form or the other."""
        if not isinstance(data, dict):
            return data
        if "metric" in data:
            if "metrics" in data:
                raise ValueError("give 'metric' (one) or 'metrics' (a list), not both")
            data = {("metrics" if k == "metric" else k): ([v] if k == "metric" else v)
                    for k, v in data.items()}
        elif "metrics" not in data:
            raise ValueError("metric (or metrics, a list of {name, goal}) is required")
        return data

    @model_validator(mode="after")
    def _check_metrics(self) -> SweepSpec:
        names = [m.name for m in self.metrics]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"metrics: '{name}' is listed twice (metric names must be distinct)")
        given = dict(self.reference_point or {})
        for name in given:
            if name not in names:
                raise ValueError(f"reference_point: '{name}' is not a metric (metrics: {', '.join(names)})")
        merged: list[Metric] = []
        for m in self.metrics:
            if m.name in given and m.reference is not None and m.reference != given[m.name]:
                raise ValueError(
                    f"reference_point: '{m.name}' is {given[m.name]} but the metric's reference is {m.reference}"
                )
            ref = given.get(m.name, m.reference)
            merged.append(m if ref == m.reference else m.model_copy(update={"reference": ref}))
        missing = [m.name for m in merged if m.reference is None]
        if len(missing) != len(merged) and missing:
            raise ValueError(
                f"reference_point: give a coordinate for every metric or for none (missing: {', '.join(missing)})"
            )
        refs = {m.name: float(m.reference) for m in merged if m.reference is not None}
        # The model is frozen; a validator may still settle its own fields (pydantic stores them in __dict__).
        self.__dict__["metrics"] = merged
        self.__dict__["reference_point"] = refs or None
        return self

    @property
    def metric(self) -> Metric:
        """The first metric: the one a single-objective tuner optimizes and progress is tracked on."""
        return self.metrics[0]

    @property
    def multi(self) -> bool:
        """True when the sweep has more than one objective (a Pareto front, not a best trial)."""
        return len(self.metrics) > 1

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        for name in self.params:
            if name in self.fixed:
                raise ValueError(f"'{name}' is both a parameter and a fixed value")
        for name, p in self.params.items():
            for parent, allowed in (p.when or {}).items():
                if parent not in self.params:
                    raise ValueError(f"params.{name}.when names '{parent}', which is not a parameter")
                ref = self.params[parent]
                if not isinstance(ref, ChoiceParam):
                    raise ValueError(
                        f"params.{name}.when: '{parent}' must be a choice parameter, got {ref.type}"
                    )
                for v in allowed if isinstance(allowed, list) else [allowed]:
                    if v not in ref.values:
                        raise ValueError(
                            f"params.{name}.when: {v!r} is not one of {parent}'s values {ref.values}"
                        )
        self.order()  # raises on a cycle
        return self

    def order(self) -> list[str]:
        """Parameter names with every ``when`` parent before its children."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in seen:
                return
            if name in path:
                raise ValueError(f"conditional parameters form a cycle: {' -> '.join(path + (name,))}")
            for parent in self.params[name].when or {}:
                visit(parent, path + (name,))
            seen.add(name)
            done.append(name)

        for name in self.params:
            visit(name, ())
        return done

    def active_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Drop the parameters whose ``when`` conditions do not hold."""
        out: dict[str, Any] = {}
        for name in self.order():
            if name in params and self.params[name].active(out):
                out[name] = params[name]
        return out

    def config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trainer's config: fixed values, then the trial's params, then report_every."""
        cfg = dict(self.fixed)
        cfg.update(params)
        if self.budget.report_every is not None and "report_every" not in cfg:
            cfg["report_every"] = self.budget.report_every
        return cfg

    def defaults(self, overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Params and fixed overrides for ``harness trial``.

        Each parameter takes its override, else its ``default``, else the middle of its range
        (geometric middle on a log scale) or its first choice; inactive parameters stay unset.
        Overrides may also name a ``fixed`` key; anything else is an error.
        """
        overrides = dict(overrides or {})
        fixed_over: dict[str, Any] = {}
        for key in list(overrides):
            if key not in self.params:
                if key in self.fixed or key == "report_every":
                    fixed_over[key] = overrides.pop(key)
                else:
                    known = ", ".join([*self.params, *self.fixed]) or "none"
                    raise SpecError(
                        f"--set {key}: not a parameter or fixed value of this space (known: {known})"
                    )
        params: dict[str, Any] = {}
        for name in self.order():
            p = self.params[name]
            if not p.active(params):
                continue
            if name in overrides:
                params[name] = coerce(name, p, overrides[name])
            else:
                params[name] = p.default if p.default is not None else p.middle()
        return params, fixed_over

    def hash(self) -> str:
        """A stable hash of the resolved spec (resume refuses a changed spec)."""
        blob = json.dumps(self._dump(exclude_none=False), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._dump(exclude_none=True), sort_keys=False)

    def _dump(self, exclude_none: bool) -> dict[str, Any]:
        """The spec as plain data, in its canonical form.

        One metric without a reference is written as ``metric: {name, goal}``, exactly what
        the spec held before ``metrics:`` existed, so the hash of such a spec is unchanged;
        otherwise ``metrics:`` with every metric's ``reference``.
        """
        data = self.model_dump(mode="json", exclude_none=exclude_none)
        if self.multi or self.metric.reference is not None:
            return data
        single = {"name": self.metric.name, "goal": self.metric.goal}
        return {("metric" if k == "metrics" else k): (single if k == "metrics" else v) for k, v in data.items()}


def coerce(name: str, p: FloatParam | IntParam | ChoiceParam, value: Any) -> Any:
    """Check a user-given value against its parameter's domain, converting int-like floats."""
    if isinstance(p, IntParam) and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(p, FloatParam) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not p.contains(value):
        if isinstance(p, ChoiceParam):
            rule = f"one of {p.values}"
        else:
            rule = f"{p.type} in [{p.low}, {p.high}]"
        raise SpecError(f"--set {name}={value!r}: must be {rule}")
    return value


def resolve_path(space: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped space (``branin`` -> search_spaces/branin.yaml)."""
    path = Path(space)
    if path.is_file():
        return path
    shipped = SPACES_DIR / f"{space}.yaml"
    if not path.suffix and shipped.is_file():
        return shipped
    names = ", ".join(p.stem for p in shipped_spaces()) or "none"
    raise SpecError(f"search space '{space}': no such file, nor a shipped space ({names})")


def shipped_spaces() -> list[Path]:
    return sorted(SPACES_DIR.glob("*.yaml")) if SPACES_DIR.is_dir() else []


def load_spec(space: str | Path) -> SweepSpec:
    """Read and validate a search-space file; raise :class:`SpecError` with one line on any fault."""
    path = resolve_path(space)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}:{where}: malformed YAML: {problem}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the top level must be a mapping with objective, metric, params")
    params = raw.get("params")
    if isinstance(params, dict):
        for name, p in params.items():
            if not isinstance(p, dict):
                raise SpecError(f"{source}: params.{name}: must be a mapping with a 'type'")
            kind = p.get("type")
            if kind not in ("float", "int", "choice"):
                raise SpecError(
                    f"{source}: params.{name}.type: unknown parameter type {kind!r} "
                    "(use float, int or choice)"
                )
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        err = _first_error(exc.errors())
        parts = list(err["loc"])
        if "metric" in raw and parts[:2] == ["metrics", 0]:
            parts[:2] = ["metric"]  # the user wrote the one-metric form; name what they wrote
        loc = ".".join(str(x) for x in parts)
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{loc}: " if loc else ""
        raise SpecError(f"{source}: {where}{msg}") from None


def _without_param_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the tag pydantic puts after a parameter's name: ``params.lr.float.low``."""
    if len(loc) > 2 and loc[0] == "params" and loc[2] in ("float", "int", "choice"):
        return loc[:2] + loc[3:]
    return loc


_SCALARS = ("bool", "int", "float", "str")
_KINDS = {"bool": "a bool", "int": "an integer", "float": "a number", "str": "a string",
          "none": "null", "list[union[bool,int,float,str]]": "a list of scalars"}


def _first_error(errors: list[Any]) -> Any:
    """The first error, as one readable line even when it is a union's.

    pydantic reports a value that fits no member of a union (``Scalar``, say) once per
    member, each at ``loc + (member,)``: ``values.0.bool: Input should be a valid boolean``,
    ``values.0.int: ...``. Those collapse into one error at ``loc`` naming the rule:
    ``values: each value must be a scalar (bool, int, float or string), got [1, 2]``.
    """
    errors = [{**e, "loc": _without_param_tag(tuple(e["loc"]))} for e in errors]
    first = errors[0]
    loc = first["loc"]
    for k, tag in enumerate(loc):
        if not _is_type_label(tag):
            continue
        group = [e for e in errors if len(e["loc"]) > k and tuple(e["loc"][:k]) == loc[:k]
                 and _is_type_label(e["loc"][k])]
        tags = list(dict.fromkeys(e["loc"][k] for e in group))
        leaves = [e for e in group if len(e["loc"]) == k + 1]
        # members of one union: several kinds tried on the same input value
        if len(tags) < 2 or not leaves or any(e["input"] is not leaves[0]["input"] for e in leaves):
            continue
        kinds = [_KINDS.get(t, f"a {t.split('[')[0]}") for t in tags if t not in _SCALARS]
        if set(_SCALARS) <= set(tags):
            kinds.insert(0, "a scalar (bool, int, float or string)")
        else:
            kinds[:0] = [_KINDS[t] for t in tags if t in _SCALARS]
        rule = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
        value = repr(leaves[0]["input"])
        value = value if len(value) <= 60 else value[:57] + "..."
        where, what = loc[:k], "must be"
        if where and isinstance(where[-1], int):  # an item of a list: name the list's rule
            where, what = where[:-1], "each value must be"
        return {**first, "loc": where, "msg": f"{what} {rule}, got {value}"}
    return first


def _is_type_label(x: Any) -> bool:
    """A pydantic union member's tag in an error's loc: ``int``, ``str``, ``list[...]``."""
    return isinstance(x, str) and (x in _KINDS or (x.endswith("]") and "[" in x[1:]))
