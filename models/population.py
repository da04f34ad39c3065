"""The population form of a trainer: up to K members of one structure trained as one batched model.

A plain trainer is ``train(config, *, device, seed, report, artifact_dir=None) -> dict``: one
trial per process. A trainer may also offer a *population form*, attached to the function as
``train.population = PopulationForm(...)``. The harness then runs up to K trials whose
configurations share a signature (the values of the ``structural`` keys, plus the ``bucket`` of
the padded ones) as one batched model: their parameters stacked with a leading [K] dimension,
one forward and one backward for all, per-member hyperparameters (learning rates, loss types,
...) as [K] tensors or row groups. ``padded`` keys (widths, depths, batch sizes) may differ
within a population: members are padded exactly to its largest (zero units with masked
gradients, masked samples), and the bucket bounds what the padding wastes.

Every member is a full trial. It keeps its own random stream (a ``torch.Generator`` seeded with
its seed, drawn outside any vmap), so a member trained inside a population produces the same
reports and final metrics as the same configuration trained alone by ``train`` with the same
seed (float64 on CPU: equal to 1e-10 relative; the exactness tests check it). A member that
diverges (NaN / inf) fails alone: its updates are masked, the others are unchanged; likewise a
member whose own work raises (a report, an artifact) is a ``failed`` event, not an exception of
``advance`` (which raises only for what concerns the whole population). Only members that run
are computed: a population of capacity K holding one member costs what a population of one does.

Continuous batching: members join at their own step 0 while others are midway (``add``), and
leave when pruned, failed or done (``remove``), so a population stays full instead of draining
to its slowest member. The harness drives it; the trainer never sees tuners or processes:

    pop = train.population.make(config_of_first_member, capacity=K, device="cuda")
    slot = pop.add(config, seed)              # joins at its step 0
    while pop.occupied():
        for ev in pop.advance():              # one unit (iteration / step / epoch) for everyone
            if ev.kind == "report": ...       # ev.step, ev.metrics (as train's report would get)
            else: pop.remove(ev.slot)         # "done" (ev.metrics: train's return) or "failed"

Anchors: torch.func model ensembling (``stack_module_state``, ``functional_call``, ``vmap``);
Flajolet et al., ICML 2022 (whole PBT populations on one accelerator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class MemberEvent:
    """What happened to one member during one ``advance``."""

    slot: int
    kind: Literal["report", "done", "failed"]
    step: int  # the member's own step (its last reported step for done / failed)
    metrics: dict[str, float] = field(default_factory=dict)  # report: as passed to report(); done: train's return
    reason: str | None = None  # failed: why (e.g. "loss is nan at step 37 (diverged)")


class Population(Protocol):
    """Up to ``capacity`` members of one structure, advanced together."""

    capacity: int

    def add(self, config: Mapping[str, Any], seed: int, artifact_dir: str | None = None) -> int:
        """Add a member at its own step 0 in a free slot; returns the slot (ValueError when full
        or when the config's structural signature differs from the population's)."""
        ...

    def remove(self, slot: int) -> None:
        """Drop a member (pruned, failed or done): its slot is free for the next ``add``."""
        ...

    def occupied(self) -> list[int]:
        """The slots that hold a member."""
        ...

    def advance(self) -> list[MemberEvent]:
        """Advance every member by one unit of its trainer (a GFlowNet iteration, a diffusion
        step, a LocoProp epoch). Returns the reports due at this unit, in slot order, then the
        members that finished (``done``) or failed. A done or failed member keeps its slot (it
        is no longer computed) until ``remove``."""
        ...


@dataclass(frozen=True)
class PopulationForm:
    """How the harness builds populations of one trainer."""

    structural: tuple[str, ...]  # config keys whose values must be equal within a population
    make: Callable[..., Population]  # make(config, *, capacity, device) -> Population
    # bytes one member needs on the device (optional): the harness splits or refuses a
    # population that would not fit before any trial starts
    member_bytes: Callable[[Mapping[str, Any]], int] | None = None
    # keys that differ freely between members (learning rates, loss types chosen per member, ...)
    per_member: tuple[str, ...] = ()
    # keys that change sizes only (widths, batch sizes, depths by masked bypass): members are
    # padded to the population's largest, exactly (zero rows, masked gradients, masked samples)
    padded: tuple[str, ...] = ()
    # the bucket of a padded configuration (optional): members share a population only when
    # their buckets are equal too, which bounds the padding's waste (e.g. widths within 2x)
    bucket: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None

    def signature(self, config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """The structural signature: members with equal signatures may share a population."""
        sig = tuple((k, repr(config.get(k))) for k in sorted(self.structural))
        if self.bucket is not None:
            sig += (("bucket", repr(tuple(self.bucket(config)))),)
        return sig


def population_form(fn: Any) -> PopulationForm | None:
    """The population form attached to a trainer function, or None (a plain trainer)."""
    form = getattr(fn, "population", None)
    return form if isinstance(form, PopulationForm) else None
