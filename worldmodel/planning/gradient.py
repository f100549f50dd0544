"""Gradient-based planning through a differentiable world model, as a pure batched optimiser.

``GradientPlanner.optimize`` maximises the objective by gradient ascent on the action sequence
itself, backpropagating through the model's rollout (shooting with gradients: Srinivas et al.,
"Universal planning networks", ICML 2018; Henaff et al., "Model-based planning with discrete and
continuous actions", 2017; the GD solver of stable-worldmodel). ``P`` problems, each with ``N``
sequences optimised in parallel (``candidates``), all in one batch ``(P, N, H, A)``; same
objective, result (``CEMResult``) and warm starts as ``CEM``, so ``MPCAgent`` and
``worldmodel plan --planner grad`` use it unchanged.

Per call:

1. Starting sequences: the warm-start mean plus ``N - 1`` perturbations of it (``init="mean"``),
   or a short CEM run's executed plan and elites (``init="cem"``, Bharadhwaj et al., "Model-
   predictive control via cross-entropy and gradient-based optimization", L4DC 2020).
2. Parameterisation: ``a = mid + half * u`` with ``u`` projected back onto ``[-1, 1]`` after every
   step (``squash="clip"``, the default: projected gradient ascent, which reaches optima on a
   bound), or ``a = mid + half * tanh(u)`` with ``u`` unconstrained (``squash="tanh"``; an optimum
   on a bound is then approached only as ``u`` grows without end, and Adam slows as
   ``1 - tanh(u)^2`` shrinks the gradient).
3. ``steps`` Adam steps (Kingma and Ba) on ``-sum(scores)``. Adam is elementwise and the scores of
   different candidates do not depend on each other's actions, so the problems stay independent.
4. The result is the best sequence scored at any step (the start included), so a plan is never
   worse than the one it started from, on the objective.

What must be differentiable. The objective is called on candidates that require grad, with grad
mode on (``optimize`` enables it, so it works inside ``MPCAgent._plan``'s ``no_grad``);
``worldmodel.planning.objectives``' ``Objective.__call__`` then keeps the graph. Differentiable:
``LearnedReward`` (the task's reward on an ``ObjectHead`` through the model's features),
``GoalImage("features")`` and ``GoalImage("pixels")`` (through the decoder), on models whose
``step`` is a differentiable function of the action: gradients reach the actions through the
rollouts of SVG-LP/FP (reparameterised ``z``), VGAN and VideoFlow, and their ``for_inference``
copies (an untrained VideoFlow's zero-initialised priors ignore the actions, so its gradient is
exactly 0 until trained). Not differentiable:
the simulator oracle (``SimOracle``, MuJoCo), or any objective computed under ``torch.no_grad``;
``optimize`` raises a ``ValueError`` when the scores carry no gradient.

Fixed noise (reparameterisation). A sampled rollout must see the same noise at every step, or the
ascent chases a moving target. ``optimize`` saves ``generator``'s state before the first gradient
step and restores it before every evaluation, so an objective that draws its noise from that
generator (``MPCAgent`` passes the planner's generator to the objective) sees the same draws
within a call and fresh ones at the next call. An objective drawing from another source is
stochastic across steps (stochastic gradient ascent).

Departures: UPN and Henaff et al. use plain gradient descent from one sequence; here Adam from
``N`` starts, keeping the best (Bharadhwaj et al. refine every CEM sample and refit CEM to them;
here CEM runs once, then only gradients). Non-finite gradients are zeroed (a diverged rollout does
not poison its sequence's Adam state).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from worldmodel.planning.box import checked_scores, raise_unless_finite
from worldmodel.planning.cem import CEM, CEMConfig, CEMResult, Objective, WarmStart
from worldmodel.planning.optimiser import BestSoFar, Optimiser, check_choices, check_counts, white_noise

INITS = ("mean", "cem")
SQUASH = ("clip", "tanh")
_EDGE = 0.995  # tanh starts at most this far out: atanh(1) is infinite and its gradient 0


@dataclasses.dataclass
class GradientConfig:
    """Options of ``GradientPlanner``. ``GradientConfig.adam()`` starts from the warm-start mean,
    ``GradientConfig.cem_adam()`` from a short CEM run."""

    horizon: int = 10
    """Planned steps ``H``."""
    steps: int = 10
    """Adam steps per call."""
    lr: float = 0.1
    """Adam step size, in units of the half-range ``(high - low) / 2`` (in ``u`` for tanh)."""
    candidates: int = 4
    """Sequences per problem optimised in parallel; the best is returned."""
    init: str = "mean"
    """``"mean"``: the warm-start mean and ``candidates - 1`` perturbations of it; ``"cem"``: a
    short CEM run (``cem``) then its executed plan and best elites."""
    init_std: float = 0.3
    """Perturbation of the extra starting sequences, as a fraction of the half-range."""
    squash: str = "clip"
    """``"clip"``: ``a = mid + half * u``, ``u`` projected onto ``[-1, 1]`` after each step (reaches
    optima on a bound); ``"tanh"``: ``a = mid + half * tanh(u)``, ``u`` unconstrained."""
    cem: CEMConfig | None = None
    """The initialising CEM's options (``init="cem"``); None: 64 samples, 2 iterations. Its
    horizon must be ``horizon``."""

    def __post_init__(self) -> None:
        check_choices(self, {"init": INITS, "squash": SQUASH})
        check_counts(self, ("horizon", "candidates"))
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.lr > 0 or not self.init_std >= 0:
            raise ValueError(f"lr must be > 0 and init_std >= 0, got {self.lr}, {self.init_std}")
        if self.init == "cem" and self.cem is None:
            self.cem = CEMConfig(horizon=self.horizon, population=64, iterations=2)
        if self.cem is not None and self.cem.horizon != self.horizon:
            raise ValueError(f"cem: its horizon {self.cem.horizon} must be the planner's, {self.horizon}")

    @classmethod
    def adam(cls, **overrides: Any) -> GradientConfig:
        """Adam from the warm-start mean and ``candidates - 1`` perturbations of it."""
        return cls(**overrides)

    @classmethod
    def cem_adam(cls, cem: CEMConfig | None = None, **overrides: Any) -> GradientConfig:
        """A short CEM run (``cem``; default 64 samples, 2 iterations), then Adam on its plan and
        elites (Bharadhwaj et al. 2020, simplified: see the module docstring)."""
        horizon = overrides.pop("horizon", cem.horizon if cem is not None else 10)
        return cls(horizon=horizon, init="cem", cem=cem, **overrides)

    def samples_per_call(self) -> int:
        """Objective evaluations per problem and call (each gradient step also backpropagates)."""
        start = self.cem.samples_per_call() if self.init == "cem" and self.cem is not None else 0
        return start + self.candidates * (self.steps + 1)


class GradientPlanner(Optimiser):
    """Batched gradient ascent on action sequences in a box (see the module docstring; ``config``:
    a ``GradientConfig``)."""

    config: GradientConfig

    def __init__(
        self, config: GradientConfig, action_dim: int, low: float | Tensor = -1.0, high: float | Tensor = 1.0
    ) -> None:
        super().__init__(config, action_dim, low, high)
        self.cem = CEM(config.cem, action_dim, low, high) if config.init == "cem" else None

    # --- parameterisation -----------------------------------------------------------------------
    def _mid_half(self, device: torch.device) -> tuple[Tensor, Tensor]:
        low, high = self._bounds(device)
        return (low + high) / 2, (high - low) / 2

    def _free(self, actions: Tensor) -> Tensor:
        """Actions in the box → the optimised parameter ``u``."""
        mid, half = self._mid_half(actions.device)
        x = ((actions - mid) / half).clamp(-1, 1)
        return torch.atanh(x.clamp(-_EDGE, _EDGE)) if self.config.squash == "tanh" else x

    def _actions(self, u: Tensor) -> Tensor:
        """The parameter ``u`` → actions in the box (differentiable)."""
        mid, half = self._mid_half(u.device)
        return mid + half * (torch.tanh(u) if self.config.squash == "tanh" else u)

    # --- the optimiser ----------------------------------------------------------------------------
    def _starts(self, objective: Objective, start: WarmStart, generator: torch.Generator | None):
        """Starting sequences ``(P, N, H, A)`` and the objective evaluations they took."""
        cfg = self.config
        n = cfg.candidates
        mean = start.mean
        parts, evaluations = [], 0
        if self.cem is not None:
            res = self.cem.optimize(objective, init=start, generator=generator)
            evaluations = res.evaluations
            parts = [res.actions[:, None], res.elites[:, : n - 1]]
        else:
            parts = [mean[:, None]]
        have = sum(x.shape[1] for x in parts)
        if have < n:
            eps = white_noise((len(mean), n - have, *mean.shape[1:]), generator, mean.device)
            parts.append(self._perturb(mean, self._std(cfg.init_std, mean.device), eps))
        return torch.cat(parts, dim=1)[:, :n], evaluations

    def _search(self, objective: Objective, start: WarmStart, generator: torch.Generator | None) -> CEMResult:
        """Adam on a differentiable ``objective`` (see the module docstring) from ``start``; with
        ``init="cem"`` its shifted elites, if any, seed the CEM run.
        ``generator``'s state is restored before every gradient step so the objective's noise is
        fixed within the call.

        Returns a ``CEMResult``: ``actions`` = ``mean`` = ``best`` ``(P, H, A)`` the best sequence
        scored, ``best_score`` ``(P,)`` its score, ``elites`` ``(P, N, H, A)`` the final sequences
        sorted best first, ``std`` their spread, ``evaluations`` the candidates scored per problem
        (forward passes; each gradient step also runs a backward pass).
        """
        cfg = self.config
        p, dev = len(start.mean), start.mean.device
        starts, evaluations = self._starts(objective, start, generator)
        u = self._free(starts).requires_grad_(True)
        optimiser = torch.optim.Adam([u], lr=cfg.lr)
        saved = generator.get_state() if generator is not None else None
        best = BestSoFar(starts[:, 0])
        with torch.enable_grad():
            for k in range(cfg.steps + 1):
                if saved is not None:
                    generator.set_state(saved)  # the same noise draws at every step
                cand = self._actions(u)
                scores = checked_scores(objective, cand)
                evaluations += cand.shape[1]
                last = scores.detach()
                top, idx = last.max(1)
                best.update(cand.detach()[torch.arange(p, device=dev), idx], top)
                if k == cfg.steps:
                    break
                if not scores.requires_grad:
                    raise ValueError(
                        "objective: its scores carry no gradient with respect to the actions (a "
                        "non-differentiable objective, e.g. the simulator, or one run under "
                        "torch.no_grad); plan with CEM or MPPI instead"
                    )
                finite = torch.isfinite(last)
                loss = -torch.where(finite, scores, torch.zeros_like(scores)).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                u.grad = torch.nan_to_num(u.grad, nan=0.0, posinf=0.0, neginf=0.0)
                optimiser.step()
                if cfg.squash == "clip":
                    with torch.no_grad():
                        u.clamp_(-1, 1)  # projection onto the box
        raise_unless_finite(best.score)
        final = self._actions(u.detach())
        order = last.argsort(1, descending=True)
        elites = final.gather(1, order[:, :, None, None].expand_as(final))
        std = final.std(1, unbiased=False)
        return CEMResult(
            best.actions, best.actions, std, best.actions.clone(), best.score, elites, evaluations
        )
