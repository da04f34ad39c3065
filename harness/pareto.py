"""Pareto fronts and hypervolume: one code path for every tuner (issue 17).

A multi-objective sweep (``metrics:`` in the spec, :mod:`harness.spec`) is judged by the
harness itself, from the metrics every trial logged, never by a tuner's own notion of its
front (Optuna's ``study.best_trials``, Ax's frontier), so Optuna, Ax, Ray Tune and random
search are compared on exactly the same arithmetic (``/work/shared/DESIGN.md``, "Fronts").

Conventions, shared by every function here:

- ``points`` is an ``(n, m)`` array, one row per trial, one column per metric, in the spec's
  metric order; ``goals`` gives ``"minimize"`` or ``"maximize"`` per column.
- A row holding a NaN (a failed trial, a metric the trainer did not return) is never on the
  front, dominates nothing and adds no hypervolume.
- Point ``a`` dominates ``b`` when it is at least as good in every objective and strictly
  better in one (Deb, *Multi-Objective Optimization using Evolutionary Algorithms*, 2001,
  def. 2.5). Equal points do not dominate each other, so every copy of a front point is on
  the front.
- Hypervolume is the Lebesgue measure of the region dominated by the front and bounded by
  the reference point (Zitzler & Thiele 1998). It is computed by BoTorch's maintained
  implementation, :class:`botorch.utils.multi_objective.hypervolume.Hypervolume` (the
  dimension-sweep algorithm of Fonseca, Paquete & Lopez-Ibanez 2006), which assumes
  maximization: minimized objectives and their reference coordinates are negated first
  (``/work/shared/REFERENCES.md``, "Multi-objective"). Only points that strictly dominate
  the reference point contribute; a point on its boundary adds zero volume anyway.

BoTorch (and torch) are imported inside the functions that need them, so importing this
module costs numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GOALS = ("minimize", "maximize")

# Rows compared at once in pareto_mask: block * n * m booleans (about 24 MB at n = 5000, m = 3).
_BLOCK = 512


def _signs(goals: Sequence[str], m: int) -> np.ndarray:
    """+1 for a minimized column, -1 for a maximized one: ``points * signs`` is all-minimize."""
    if len(goals) != m:
        raise ValueError(f"{len(goals)} goals for {m} objectives")
    bad = [g for g in goals if g not in GOALS]
    if bad:
        raise ValueError(f"goal must be 'minimize' or 'maximize', got {bad[0]!r}")
    return np.array([1.0 if g == "minimize" else -1.0 for g in goals])


def _as_points(points: Any) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"points must be an (n, m) array, got shape {arr.shape}")
    return arr


def pareto_mask(points: Any, goals: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (shape ``(n,)``).

    Vectorized numpy, ``O(n^2 m)`` time in blocks of rows (so ``O(block * n * m)`` memory):
    fine for the few thousand trials a sweep has. Ties and exact duplicates are handled by
    the definition of dominance (module docstring): duplicates of a front point are all on
    the front; a point tied with a front point in one objective and worse in another is not.
    Works for any ``m >= 1`` (for ``m = 1`` the front is every row equal to the best value).
    """
    pts = _as_points(points)
    n, m = pts.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    valid = ~np.isnan(pts).any(axis=1)
    mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return mask
    p = pts[idx] * _signs(goals, m)  # all objectives minimized now
    keep = np.ones(idx.size, dtype=bool)
    for start in range(0, idx.size, _BLOCK):
        rows = p[start:start + _BLOCK]  # (b, m): is row i dominated by some j?
        le = (p[None, :, :] <= rows[:, None, :]).all(axis=2)  # (b, n): j at least as good as i
        lt = (p[None, :, :] < rows[:, None, :]).any(axis=2)  # (b, n): j strictly better somewhere
        keep[start:start + _BLOCK] = ~(le & lt).any(axis=1)
    mask[idx] = keep
    return mask


def _maximization(points: np.ndarray, goals: Sequence[str]) -> np.ndarray:
    return points * -_signs(goals, points.shape[1])


def hypervolume(points: Any, goals: Sequence[str], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` and bounded by ``reference`` (0.0 when none dominates it).

    ``reference`` is in the metrics' own units and directions (e.g. ``[18.0, 6.0]`` for
    Branin-Currin, both minimized). The front is extracted with :func:`pareto_mask`,
    deduplicated, restricted to the points that strictly dominate the reference point, and
    handed to BoTorch's ``Hypervolume`` in its maximization convention.
    """
    pts = _as_points(points)
    ref = np.asarray(reference, dtype=float).reshape(-1)
    m = ref.size
    if pts.shape[0] == 0:
        return 0.0
    if pts.shape[1] != m:
        raise ValueError(f"points have {pts.shape[1]} objectives, the reference point {m}")
    if not np.isfinite(ref).all():
        raise ValueError(f"reference point must be finite, got {ref.tolist()}")
    front = pts[pareto_mask(pts, goals)]
    y = _maximization(front, goals)
    r = _maximization(ref[None, :], goals)[0]
    y = y[(y > r).all(axis=1)]
    if y.shape[0] == 0:
        return 0.0
    y = np.unique(y, axis=0)

    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    hv = Hypervolume(ref_point=torch.as_tensor(r, dtype=torch.float64))
    return float(hv.compute(torch.as_tensor(y, dtype=torch.float64)))


def zero_volume_reason(points: Any, goals: Sequence[str], reference: Sequence[float] | None) -> str | None:
    """Why the hypervolume of ``points`` under ``reference`` is 0, in one line, or None when it is
    not 0 for that reason (no reference, or no complete point at all: nothing to explain).

    A point adds volume only when it is strictly better than the reference point in every
    objective (module docstring): when none is, each complete trial is named by how it misses
    the box, so the user sees whether the reference point or the trials are off.
    """
    pts = _as_points(points)
    if reference is None or pts.shape[0] == 0:
        return None
    ref = np.asarray(reference, dtype=float).reshape(-1)
    pts = pts[~np.isnan(pts).any(axis=1)]
    if pts.shape[0] == 0:
        return None
    signs = _signs(goals, ref.size)
    inside = (pts * signs < ref * signs).all(axis=1)
    if inside.any():
        return None
    worse = (pts * signs >= ref * signs).sum(axis=0)  # per objective: trials not better than the reference
    where = ", ".join(f"objective {i + 1} in {int(k)} of {pts.shape[0]}" for i, k in enumerate(worse) if k)
    return (f"hypervolume 0: no complete trial is better than the reference point "
            f"{[float(v) for v in ref]} in every objective (not better: {where}); move the "
            "reference point (the spec's metrics' reference) past the values the trials reach")


def default_reference(points: Any, goals: Sequence[str]) -> list[float]:
    """The reference point used when the spec gives none: the front's nadir, pushed back 10%.

    Per objective: the worst value on the Pareto front of ``points`` (the nadir), moved
    away from the front by 10% of the front's range in that objective (a range of zero counts
    as 1e-7; a single front point moves by 10% of its own magnitude). This is BoTorch's
    ``infer_reference_point(pareto_Y, scale=0.1)``, which is called here; the 0.1 multiplier is
    the robust choice of Ishibuchi et al. 2011 ("Many-objective test problems to visually
    examine the behavior of multiobjective evolution in a decision space", cited there), and
    Optuna's multi-objective TPE pushes its reference point back by the same 10%.

    Every front point then strictly dominates the reference, so each contributes volume.
    The point depends on the data: hypervolumes of two sweeps are only comparable under the
    same reference, which is why a space meant for comparing tuners (``branin-currin``)
    states its reference in the spec. Raises ``ValueError`` when no row is free of NaN.
    """
    pts = _as_points(points)
    front = pts[pareto_mask(pts, goals)]
    if front.shape[0] == 0:
        raise ValueError("no complete points to infer a reference point from")

    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point

    y = torch.as_tensor(_maximization(front, goals), dtype=torch.float64)
    r = infer_reference_point(y, scale=0.1).numpy()
    return [float(v) for v in _maximization(r[None, :], goals)[0]]


def hypervolume_curve(points: Any, goals: Sequence[str], reference: Sequence[float]) -> list[float]:
    """Hypervolume of the first ``k`` points, for ``k = 1 .. n`` (points in completion order).

    The hypervolume of a superset is never smaller, so the curve is non-decreasing; the
    running maximum is taken as well, so floating-point noise in the sweep algorithm cannot
    make it dip. It is recomputed only when a point joins the front and dominates the
    reference point, otherwise the previous value is carried. This is what the parent run's
    ``hypervolume`` metric (by trials) and ``hypervolume_by_steps`` are logged from.
    """
    pts = _as_points(points)
    ref = np.asarray(reference, dtype=float).reshape(-1)
    out: list[float] = []
    best = 0.0
    front = np.empty((0, ref.size))
    signs = _signs(goals, ref.size)
    if pts.shape[0] and pts.shape[1] != ref.size:
        raise ValueError(f"points have {pts.shape[1]} objectives, the reference point {ref.size}")
    for row in pts:
        p = row * signs
        if not np.isnan(row).any() and (p < ref * signs).all():
            f = front * signs
            dominated = ((f <= p).all(axis=1) & (f < p).any(axis=1)).any()
            duplicate = (f == p).all(axis=1).any()
            if not dominated and not duplicate:
                front = np.vstack([front, row])
                front = front[pareto_mask(front, goals)]
                best = max(best, hypervolume(front, goals, ref))
        out.append(best)
    return out


@dataclass
class Front:
    """What ``pareto.json`` holds: the metrics, the reference point, the hypervolume and the members.

    ``members`` are the non-dominated trials, each ``{"number", "params", "metrics",
    "run_id", "seed"}``, sorted by the first metric (best first), then trial number.
    ``reference_source`` says whether the reference point came from the spec or from
    :func:`default_reference`.
    """

    metrics: list[str]
    goals: list[str]
    reference: list[float] | None
    reference_source: str
    hypervolume: float
    members: list[dict[str, Any]] = field(default_factory=list)
    trials: int = 0
    note: str | None = None  # why the hypervolume is 0 (:func:`zero_volume_reason`)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``json.dumps`` (the ``pareto.json`` artifact)."""
        return {
            "metrics": [{"name": n, "goal": g} for n, g in zip(self.metrics, self.goals, strict=True)],
            "reference_point": None if self.reference is None else dict(zip(self.metrics, self.reference, strict=True)),
            "reference_source": self.reference_source,
            "hypervolume": self.hypervolume,
            "trials": self.trials,
            "front": self.members,
            **({"note": self.note} if self.note else {}),
        }


def _value(metrics: Mapping[str, Any], name: str) -> float:
    v = metrics.get(name)
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x


def front_records(
    trials: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    goals: Sequence[str],
    reference: Sequence[float] | None = None,
    reference_source: str = "spec",
) -> Front:
    """The Pareto front of finished trials, as :class:`Front` (``pareto.json``).

    ``trials`` are dicts with keys ``number`` (trial number), ``params``, ``metrics`` (name
    -> value, holding at least ``names``; ``seconds`` and ``steps`` are ordinary metrics
    here), ``run_id`` (MLflow child run, may be None) and ``seed``. A trial missing one of
    ``names`` (or with a NaN) is not on the front. ``reference`` is the spec's reference
    point in ``names`` order (``reference_source`` says where it came from: ``"spec"``, or
    ``"default"`` for a default chosen once for the whole sweep, :mod:`harness.front`); when
    None, :func:`default_reference` of the trials is used (source ``"default"``), or none at all
    when no trial is complete. A hypervolume of 0 comes with a ``note`` saying why.
    """
    if not names or len(names) != len(goals):
        raise ValueError(f"need one goal per metric name, got {len(names)} names and {len(goals)} goals")
    points = np.array([[_value(t.get("metrics") or {}, n) for n in names] for t in trials],
                      dtype=float).reshape(len(trials), len(names))
    mask = pareto_mask(points, goals)
    source = reference_source
    ref: list[float] | None = None if reference is None else [float(v) for v in reference]
    if ref is None:
        source = "default"
        if mask.any():
            ref = default_reference(points, goals)
    hv = hypervolume(points, goals, ref) if ref is not None else 0.0
    first_sign = 1.0 if goals[0] == "minimize" else -1.0
    members = [
        {
            "number": t.get("number"),
            "params": dict(t.get("params") or {}),
            "metrics": {k: v for k, v in (t.get("metrics") or {}).items()},
            "run_id": t.get("run_id"),
            "seed": t.get("seed"),
        }
        for t, on in zip(trials, mask, strict=True) if on
    ]
    members.sort(key=lambda r: (first_sign * _value(r["metrics"], names[0]),
                                r["number"] if r["number"] is not None else -1))
    return Front(metrics=list(names), goals=list(goals), reference=ref, reference_source=source,
                 hypervolume=hv, members=members, trials=len(trials),
                 note=zero_volume_reason(points, goals, ref) if hv == 0.0 else None)


class LiveFront:
    """The front of a running sweep, kept current as trials finish (the :class:`~harness.recorder.Recorder` holds one).

    :meth:`add` takes each finished trial's objective values (None for a pruned or failed trial,
    or one missing a value) and returns which trials' membership changed: ``{number: True}`` for
    a trial that joined the front, ``{number: False}`` for one it pushed off, and the new trial
    itself with ``False`` when it is not on the front. So a child run's ``harness.pareto`` tag
    is written once when it finishes and again only when it leaves the front. ``hypervolume``
    is that of every point so far under the spec's reference point (0.0 without one: a
    data-dependent default reference would move, so the curve is logged at the end instead).
    It never decreases: the points only grow, and a new point is measured only when it joins
    the front and dominates the reference point.
    """

    def __init__(self, names: Sequence[str], goals: Sequence[str], reference: Sequence[float] | None) -> None:
        self.names = list(names)
        self.goals = list(goals)
        self.reference = None if reference is None else [float(v) for v in reference]
        self.signs = _signs(self.goals, len(self.names))
        self.numbers: list[int] = []  # complete trials, in the order they finished
        self.points = np.empty((0, len(self.names)))
        self.on: dict[int, bool] = {}  # every trial seen -> on the front now
        self.hypervolume = 0.0

    def add(self, number: int, values: Sequence[float] | None) -> dict[int, bool]:
        if values is None or any(not math.isfinite(float(v)) for v in values):
            self.on[number] = False
            return {number: False}
        row = np.asarray(values, dtype=float).reshape(1, -1)
        self.numbers.append(number)
        self.points = np.vstack([self.points, row])
        mask = pareto_mask(self.points, self.goals)
        changes: dict[int, bool] = {}
        for n, flag in zip(self.numbers, mask, strict=True):
            flag = bool(flag)
            if self.on.get(n) != flag or n == number:
                changes[n] = flag
            self.on[n] = flag
        if changes.get(number) and self.reference is not None:
            self.hypervolume = max(self.hypervolume, hypervolume(self.points[mask], self.goals, self.reference))
        return changes

    @property
    def front_numbers(self) -> list[int]:
        return [n for n in self.numbers if self.on.get(n)]
