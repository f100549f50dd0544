"""What ``CEM``, ``MPPI`` and ``GradientPlanner`` share beyond ``box.py``: the constructor and
``optimize``'s contract, clipped Gaussian perturbations of a mean sequence, best-so-far tracking
and the checks of their configs' common options.

Each planner keeps its own update rule in ``_search`` (see its module docstring); ``optimize``
only resolves the starting mean and runs it without autograd (the gradient planner turns grad
mode back on for its own steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from worldmodel.choices import check_choice
from worldmodel.planning.box import BoxPlanner, CEMResult, Objective, WarmStart


class Optimiser(BoxPlanner):
    """A batched optimiser over action sequences in a box, configured by ``config``.

    Args:
        config: the planner's options (``CEMConfig``, ``MPPIConfig``, ``GradientConfig``).
        action_dim: ``A``.
        low, high: action bounds, floats or tensors broadcastable to ``(A,)``.
    """

    def __init__(
        self, config: Any, action_dim: int, low: float | Tensor = -1.0, high: float | Tensor = 1.0
    ) -> None:
        super().__init__(action_dim, low, high)
        self.config = config

    @torch.no_grad()
    def optimize(
        self,
        objective: Objective,
        problems: int | None = None,
        *,
        init: WarmStart | Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CEMResult:
        """Maximise ``objective`` for every problem.

        Args:
            objective: candidates ``(P, N, H, A)`` → scores ``(P, N)`` (higher is better).
            problems: ``P`` (may be omitted when ``init`` is given).
            init: a ``WarmStart`` (or a mean ``(P, H, A)``) to start from; default the midpoint.
            generator: the source of all sampling, for reproducible plans.
            device: where candidates live (default: ``init``'s device, else the CPU).

        Returns:
            A ``CEMResult``; ``actions`` ``(P, H, A)`` is the plan to execute (each planner's
            ``_search`` says what the other fields hold).
        """
        mean = self._start(init, problems, device)
        elites = init.elites if isinstance(init, WarmStart) else None
        if elites is not None:
            elites = elites.to(mean.device)
        return self._search(objective, WarmStart(mean, elites), generator)

    def _search(self, objective: Objective, start: WarmStart, generator: torch.Generator | None) -> CEMResult:
        """The planner's update rule from ``start``: the checked mean ``(P, H, A)`` and the shifted
        elites ``(P, K, H, A)`` of a ``WarmStart`` ``init`` (or None), on the candidates' device."""
        raise NotImplementedError  # pragma: no cover

    def _std(self, fraction: float, device: torch.device) -> Tensor:
        """``fraction`` of the half-range ``(high - low) / 2``: ``(A,)``."""
        return fraction * self._half_range(device)

    def _perturb(self, mean: Tensor, std: Tensor, eps: Tensor) -> Tensor:
        """``mean + std * eps`` clipped to the box: ``(P, N, L, A)`` from a mean ``(P, L, A)``, a
        standard deviation broadcastable to it and standard normals ``eps`` ``(P, N, L, A)``."""
        low, high = self._bounds(mean.device)
        return clamp(mean[:, None] + std.expand_as(mean)[:, None] * eps, low, high)


class BestSoFar:
    """The best sequence ``actions`` ``(P, H, A)`` and its ``score`` ``(P,)`` seen so far per problem,
    starting from ``start`` with the score ``-inf``."""

    def __init__(self, start: Tensor) -> None:
        self.actions = start.clone()
        self.score = torch.full((len(start),), -math.inf, device=start.device)

    def update(self, actions: Tensor, score: Tensor) -> None:
        """Keep ``actions`` ``(P, H, A)`` where its ``score`` ``(P,)`` beats the best so far."""
        improved = score > self.score
        self.actions = torch.where(improved[:, None, None], actions, self.actions)
        self.score = torch.where(improved, score, self.score)


def white_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normals of ``shape`` from ``generator``."""
    return torch.randn(shape, generator=generator, device=device)


def clamp(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``x`` clipped elementwise to ``[low, high]`` (tensors broadcast against it)."""
    return torch.maximum(torch.minimum(x, high), low)


# ---------------------------------------------------------------------------- config checks
def check_choices(config: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """``ValueError`` unless every field named in ``choices`` holds one of its allowed values."""
    for name, allowed in choices.items():
        check_choice(name, getattr(config, name), allowed)


def check_counts(config: Any, names: tuple[str, ...]) -> None:
    """``ValueError`` unless every field in ``names`` is at least 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


def check_refit(config: Any) -> None:
    """``ValueError`` unless the momentum ``alpha`` is in ``[0, 1)``, ``init_std > 0`` and
    ``min_std >= 0`` (the sampling planners' refit options)."""
    if not 0.0 <= config.alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {config.alpha}")
    if not config.init_std > 0 or not config.min_std >= 0:
        raise ValueError(f"init_std must be > 0 and min_std >= 0, got {config.init_std}, {config.min_std}")
