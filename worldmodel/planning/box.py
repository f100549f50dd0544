"""What every planner shares: action bounds, the midpoint start, the warm-start shift and the
score check (``BoxPlanner``; ``optimiser.py`` builds the planners' shared constructor and
``optimize`` on it).

Every planner here plans ``P`` independent problems over action sequences ``(P, H, A)`` in a box
``[low, high]^A`` and answers ``MPCAgent``'s questions the same way ``CEM`` does: ``horizon``,
``action_dim``, ``initial_mean(P, device)``, ``optimize(objective, init=, generator=)`` returning a
``CEMResult``, and ``warm_start(result, steps, generator)`` returning a ``WarmStart``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Objective = Callable[[Tensor], Tensor]
"""Candidates ``(P, N, H, A)`` → scores ``(P, N)``, higher is better."""


@dataclasses.dataclass
class CEMResult:
    """What ``CEM.optimize`` returns (tensors on the objective's device).

    ``actions`` ``(P, H, A)`` is the plan to execute (the mean or the best, per ``returns``);
    ``mean`` and ``std`` ``(P, H, A)`` the final distribution; ``best`` ``(P, H, A)`` and
    ``best_score`` ``(P,)`` the best candidate seen; ``elites`` ``(P, E, H, A)`` the last elites
    (best first); ``evaluations`` the candidates scored per problem.
    """

    actions: Tensor
    mean: Tensor
    std: Tensor
    best: Tensor
    best_score: Tensor
    elites: Tensor
    evaluations: int


@dataclasses.dataclass
class WarmStart:
    """A previous solution shifted in time: ``mean`` ``(P, H, A)`` and, for iCEM's shifted elites,
    ``elites`` ``(P, K, H, A)`` (or None)."""

    mean: Tensor
    elites: Tensor | None = None

    def __getitem__(self, idx: Any) -> WarmStart:
        """The warm start of a subset of problems."""
        return WarmStart(self.mean[idx], None if self.elites is None else self.elites[idx])

    @staticmethod
    def cat(parts: list[WarmStart]) -> WarmStart:
        """Problems of several warm starts, in order. Parts without elites (a problem that just
        started) get copies of their mean in place of the ``K`` shifted elites the others carry."""
        sizes = {p.elites.shape[1] for p in parts if p.elites is not None}
        mean = torch.cat([p.mean for p in parts])
        if len(sizes) != 1:
            return WarmStart(mean, None)
        k = sizes.pop()
        elites = [p.elites if p.elites is not None else p.mean[:, None].expand(-1, k, -1, -1) for p in parts]
        return WarmStart(mean, torch.cat(elites))


class BoxPlanner:
    """Bounds and warm starts of a planner over ``(P, H, A)`` action sequences; subclasses set
    ``self.config`` (with a ``horizon``) and provide ``optimize`` (the planners do through
    ``optimiser.Optimiser``).

    Args:
        action_dim: ``A``.
        low, high: action bounds, floats or tensors broadcastable to ``(A,)``.
    """

    config: Any

    def __init__(self, action_dim: int, low: float | Tensor = -1.0, high: float | Tensor = 1.0) -> None:
        self.action_dim = int(action_dim)
        self.low = torch.as_tensor(low, dtype=torch.float32).expand(self.action_dim).clone()
        self.high = torch.as_tensor(high, dtype=torch.float32).expand(self.action_dim).clone()
        if not bool((self.high > self.low).all()):
            raise ValueError(f"high must exceed low in every dimension, got {self.low} and {self.high}")
        self._bounds_on: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def _bounds(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Cached per device: a CPU -> GPU copy per call would sync the stream every iteration.
        key = str(device)
        if key not in self._bounds_on:
            self._bounds_on[key] = (self.low.to(device), self.high.to(device))
        return self._bounds_on[key]

    def _half_range(self, device: torch.device) -> Tensor:
        low, high = self._bounds(device)
        return (high - low) / 2

    def initial_mean(self, problems: int, device: torch.device | str = "cpu") -> Tensor:
        """The bounds' midpoint repeated: ``(P, H, A)``."""
        low, high = self._bounds(torch.device(device))
        return ((low + high) / 2).expand(problems, self.horizon, self.action_dim).clone()

    def warm_start(
        self, result: CEMResult | WarmStart, steps: int, generator: torch.Generator | None = None
    ) -> WarmStart:
        """Shift ``result.mean`` ``(P, H, A)`` by the ``steps`` executed since it was planned; the
        tail is refilled with the midpoint (no elites are carried). ``generator`` is unused (it is
        accepted so that every planner has ``CEM.warm_start``'s signature)."""
        mean = result.mean
        steps = min(max(int(steps), 0), self.horizon)
        fresh = self.initial_mean(len(mean), mean.device)
        return WarmStart(torch.cat([mean[:, steps:], fresh[:, :steps]], dim=1))

    def _start(
        self, init: WarmStart | Tensor | None, problems: int | None, device: torch.device | str | None
    ) -> Tensor:
        """The starting mean ``(P, H, A)`` of ``optimize``, checked against the horizon and ``A``."""
        if isinstance(init, WarmStart):
            init = init.mean
        if init is None:
            if problems is None:
                raise ValueError("problems: give the number of problems or an init")
            init = self.initial_mean(problems, device or "cpu")
        mean = init.to(device) if device is not None else init
        if (
            mean.dim() != 3
            or tuple(mean.shape[1:]) != (self.horizon, self.action_dim)
            or (problems is not None and len(mean) != problems)
        ):
            raise ValueError(
                f"init: expected a mean of shape ({problems or 'P'}, {self.horizon}, {self.action_dim}), "
                f"got {tuple(mean.shape)}"
            )
        return mean.detach().float()


def checked_scores(objective: Objective, cand: Tensor) -> Tensor:
    """``objective(cand)`` checked to be ``(P, N)``, as float32 on ``cand``'s device, with
    non-finite scores replaced by ``-inf`` (the worst: they never win and get no weight). The
    autograd graph, if any, is kept."""
    scores = objective(cand)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != tuple(cand.shape[:2]):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"objective: expected scores of shape {tuple(cand.shape[:2])}, got {got}")
    scores = scores.to(cand.device, torch.float32)
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))


def raise_unless_finite(best_score: Tensor) -> None:
    """``ValueError`` naming the problems that never got a finite score (one host sync)."""
    if not bool(torch.isfinite(best_score).all()):
        bad = torch.nonzero(~torch.isfinite(best_score)).flatten().tolist()
        raise ValueError(f"objective: no finite score for planning problem(s) {bad} (a diverged model?)")


def take(cand: Tensor, idx: Tensor) -> Tensor:
    """``cand[p, idx[p, k]]`` for every problem: ``(P, K, H, A)``."""
    return cand.gather(1, idx[:, :, None, None].expand(-1, -1, *cand.shape[2:]))
