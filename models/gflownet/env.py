"""A vectorized hypergrid environment (Bengio et al. 2021, https://arxiv.org/abs/2106.04399).

States are integer vectors in {0..H-1}^n, the walk starts at 0, and an action either adds 1
to one coordinate (masked when that coordinate is H-1) or stops. Every state can stop, so
there are H^n terminal states. Actions are numbered 0..n-1 (increment coordinate i) and n
(stop).

Inside the sampler a state carries one extra last column: the number of stop actions taken
so far (0 while the trajectory runs). The stop action is then a plain increment of that
column, and the forward mask is one comparison against ``limit`` = [H-1, ..., H-1, inf].
Everything here works on batches of states (any leading shape); there is no Python loop
over the states of a batch. The few loops left run over the n dimensions or the n(H-1)+1
levels of the DAG, in exact evaluation only.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-12  # pads the strict inequalities of the reward (see REFERENCES: the H = 16 trap)


class Hypergrid:
    """The n-dimensional hypergrid of side H with the reward of Bengio et al. 2021."""

    def __init__(
        self,
        ndim: int,
        height: int,
        r0: float = 0.1,
        r1: float = 0.5,
        r2: float = 2.0,
        device: str | torch.device = "cpu",
    ) -> None:
        if ndim < 1:
            raise ValueError(f"hypergrid: ndim must be >= 1, got {ndim}")
        if height < 2:
            raise ValueError(f"hypergrid: height must be >= 2, got {height}")
        if r0 <= 0:
            raise ValueError(f"hypergrid: r0 must be > 0, got {r0}")
        self.ndim, self.height = ndim, height
        self.r0, self.r1, self.r2 = r0, r1, r2
        self.device = torch.device(device)
        self.n_actions = ndim + 1  # n increments + stop
        self.stop = ndim  # index of the stop action
        self.n_states = height**ndim
        self.max_actions = ndim * (height - 1) + 1  # longest trajectory: to the far corner, stop
        # flat index of a state: sum_i x_i * H^i
        self.strides = torch.tensor([height**i for i in range(ndim)], device=self.device)  # [n]
        big = torch.iinfo(torch.long).max
        self.limit = torch.tensor([height - 1] * ndim + [big], device=self.device)  # [n+1]
        self._log_reward_tables: dict[torch.dtype, Tensor] = {}
        self._all_states: Tensor | None = None
        self._levels: list[Tensor] | None = None

    # ---- reward -------------------------------------------------------------------------

    def reward_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two indicator products of the reward, ``[...]`` bool each, for ``x [..., n]``.

        a_i = |x_i / (H-1) - 0.5|; band1 = prod_i [0.25 < a_i]; band2 = prod_i [0.3 < a_i < 0.4].
        Computed in float64, with EPS on every strict inequality so that a = 0.25 or 0.3 met
        exactly (H = 9, H = 16) is never counted through rounding.
        """
        a = (x.to(torch.float64) / (self.height - 1) - 0.5).abs()  # [..., n]
        band1 = (a > 0.25 + EPS).all(-1)  # [...]
        band2 = ((a > 0.3 + EPS) & (a < 0.4 - EPS)).all(-1)  # [...]
        return band1, band2

    def reward(self, x: Tensor) -> Tensor:
        """R(x) = R0 + R1 prod[0.25 < a] + R2 prod[0.3 < a < 0.4], float64, ``[...]``."""
        band1, band2 = self.reward_terms(x)
        return self.r0 + self.r1 * band1.to(torch.float64) + self.r2 * band2.to(torch.float64)

    def log_reward(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """log R(x) of states ``x [..., n]`` -> ``[...]``, by table look-up."""
        return self.log_reward_at(self.index(x), dtype)

    def log_reward_at(self, index: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """log R of the states with flat indices ``index`` (one table per dtype, built once)."""
        if dtype not in self._log_reward_tables:
            self._log_reward_tables[dtype] = self.reward(self.all_states()).log().to(dtype)  # [N]
        return self._log_reward_tables[dtype][index]

    def log_partition(self) -> float:
        """The true log Z = log sum_x R(x) over all H^n terminal states."""
        return float(self.reward(self.all_states()).sum().log())

    # ---- states and masks ---------------------------------------------------------------

    def index(self, x: Tensor) -> Tensor:
        """Flat index sum_i x_i H^i of states ``x [..., n]`` -> ``[...]``."""
        return (x * self.strides).sum(-1)

    def all_states(self) -> Tensor:
        """Every state, ``[H^n, n]``, row k being the state with flat index k."""
        if self._all_states is None:
            k = torch.arange(self.n_states, device=self.device)[:, None]  # [N, 1]
            self._all_states = (k // self.strides) % self.height  # [N, n]
        return self._all_states

    def levels(self) -> list[Tensor]:
        """Flat indices of the states with sum(x) = 0, 1, ..., n(H-1): the DAG's topological layers."""
        if self._levels is None:
            level = self.all_states().sum(-1)  # [N]
            order = torch.argsort(level, stable=True)
            counts = torch.bincount(level, minlength=self.max_actions).tolist()
            self._levels = list(torch.split(order, counts))
        return self._levels

    def forward_invalid(self, s: Tensor) -> Tensor:
        """Invalid forward actions of sampler states ``s [..., n+1]`` -> ``[..., n+1]`` bool.

        Increment i is invalid at x_i = H-1; stop (the counter column) never is.
        """
        return s >= self.limit

    def forward_mask(self, x: Tensor) -> Tensor:
        """Valid forward actions of states ``x [..., n]`` -> ``[..., n+1]`` bool."""
        stop = torch.ones_like(x[..., :1], dtype=torch.bool)
        return torch.cat([x < self.height - 1, stop], -1)

    def backward_mask(self, x: Tensor) -> Tensor:
        """Valid backward actions (decrement coordinate i) of states ``x [..., n]`` -> ``[..., n]``."""
        return x > 0

    def n_parents(self, x: Tensor) -> Tensor:
        """Number of parents of states ``x [..., n]`` (0 for the initial state) -> ``[...]``."""
        return (x > 0).sum(-1)

    # ---- modes --------------------------------------------------------------------------

    def is_mode(self, x: Tensor) -> Tensor:
        """True for maximum-reward states (the R2 band, R = R0 + R1 + R2), ``[...]`` bool."""
        return self.reward_terms(x)[1]

    def corner(self, x: Tensor) -> Tensor:
        """Which of the 2^n corner regions a state lies in: sum_i [x_i > (H-1)/2] 2^i."""
        upper = (2 * x > self.height - 1).long()  # [..., n]
        return (upper << torch.arange(self.ndim, device=x.device)).sum(-1)

    def n_modes(self) -> int:
        """Corner regions holding a maximum-reward state: 2^n, or 0 (H <= 6, H = 11)."""
        x = self.all_states()
        return int(self.corner(x[self.is_mode(x)]).unique().numel())
