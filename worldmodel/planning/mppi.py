"""Model predictive path integral control (MPPI) as a pure batched optimiser.

MPPI (Williams et al., "Aggressive driving with model predictive path integral control", ICRA
2016, and "Information theoretic MPC for model-based reinforcement learning", ICRA 2017) replaces
CEM's hard elite selection by a soft one: every sample counts, weighted by the exponentiated
score. ``MPPI.optimize`` runs it for ``P`` problems at once on candidates ``(P, N, H, A)``, with the
same objective, result (``CEMResult``) and warm starts as ``CEM``, so ``MPCAgent`` and
``worldmodel plan --planner mppi`` use it unchanged.

Per iteration (TD-MPC2's variant, Hansen et al., ICLR 2024, which also refits the spread):

    a_n  = clip(mu + sigma * eps_n, low, high),   eps_n ~ N(0, I)        (n = 1..N)
    w    = softmax(S(a) / (temperature * scale))                         over the N samples
    mu   <- alpha * mu + (1 - alpha) * sum_n w_n a_n
    sigma <- max(sqrt(sum_n w_n (a_n - sum_n w_n a_n)^2), min_std)        (``update_std``)

and the result is the final mean or the best sample scored (``returns``). ``temperature -> 0``
gives all the weight to the best sample (the argmax); ``temperature -> inf`` the plain average.

Where this departs from the papers, deliberately:

- ``scale``: with ``normalize`` (the default) the scores are divided by their standard deviation
  over the problem's samples before the softmax, so that ``temperature`` is unit-free: our
  objectives are in metres, RMS pixel distances or feature distances, whose scales differ by
  orders of magnitude. ``normalize=False`` is the papers' ``exp(S / lambda)`` (TD-MPC2 writes it
  ``exp(temperature * S)``: its 0.5 is our 2.0; ``MPPIConfig.tdmpc2()``).
- Williams et al. keep the noise fixed and run one iteration per control step; ``update_std=False``
  and ``iterations=1`` do that. Their control-cost term (``lambda * u^T Sigma^-1 eps``) is left out:
  the objectives here carry no action cost.
- TD-MPC2 weights only its top ``num_elites`` samples (``elites`` here; None weights them all, as
  MPPI does), mixes in policy samples (there is no policy here), and executes an elite drawn by
  the weights plus exploration noise; here the mean (or the best) is executed, deterministic given
  the generator. Its ``momentum`` (TD-MPC) is ``alpha``, applied to the mean only.
- Optional colored noise along the horizon (``noise_beta``, iCEM's, as in ``CEM``).

Warm start: the mean is shifted by the executed steps with the midpoint as its tail (as ``CEM``
does); the standard deviation restarts from ``init_std`` at every call (TD-MPC2 restarts it too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from worldmodel.planning.box import checked_scores, raise_unless_finite, take
from worldmodel.planning.cem import RETURNS, CEMResult, Objective, WarmStart, candidate_noise
from worldmodel.planning.optimiser import BestSoFar, Optimiser, check_choices, check_counts, check_refit


@dataclasses.dataclass
class MPPIConfig:
    """Options of ``MPPI``. ``MPPIConfig.mppi()`` and ``MPPIConfig.tdmpc2()`` are the presets."""

    horizon: int = 10
    """Planned steps ``H``."""
    population: int = 1000
    """Samples drawn per iteration ``N``."""
    iterations: int = 3
    """Weighted refits per call."""
    temperature: float = 0.3
    """Softmax temperature: ``w ~ exp(S / (temperature * scale))``; 0 is the argmax. With
    ``normalize``, 0.3 puts most of the weight on the samples about a standard deviation above the
    rest (0.5 was slower on test_cem's integrator by an order of magnitude in cost, 0.2 collapsed)."""
    normalize: bool = True
    """Divide the scores by their standard deviation over the samples (``scale``), so that
    ``temperature`` is unit-free; False: ``scale = 1`` (the papers' raw scores)."""
    elites: int | None = None
    """Weight only the best ``elites`` samples (TD-MPC2: 64 of 512); None: all of them (MPPI)."""
    alpha: float = 0.0
    """Momentum: weight of the old mean in each refit (TD-MPC: 0.1)."""
    init_std: float = 0.5
    """Initial standard deviation, as a fraction of the half-range ``(high - low) / 2``."""
    min_std: float = 0.0
    """Floor on the standard deviation (same units as ``init_std``; TD-MPC2: 0.05). A floor keeps
    clipped samples around an optimum on a bound, which pulls the mean inside by about
    ``0.4 * min_std``."""
    update_std: bool = True
    """Refit the standard deviation to the weighted samples (TD-MPC2); False keeps ``init_std``
    (Williams et al.)."""
    returns: str = "mean"
    """``"mean"``: the final mean; ``"best"``: the best sample scored over all iterations."""
    noise_beta: float = 0.0
    """Colored-noise exponent along the horizon (0: white noise, as in MPPI; iCEM: 0.25-3.5)."""

    def __post_init__(self) -> None:
        check_choices(self, {"returns": RETURNS})
        check_counts(self, ("horizon", "population", "iterations"))
        if self.elites is not None and not 1 <= self.elites <= self.population:
            raise ValueError(f"elites must be in 1..population={self.population} or None, got {self.elites}")
        if not self.temperature >= 0 or math.isinf(self.temperature):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        check_refit(self)
        if not self.noise_beta >= 0:
            raise ValueError(f"noise_beta must be >= 0, got {self.noise_beta}")

    @classmethod
    def mppi(cls, **overrides: Any) -> MPPIConfig:
        """MPPI with a refitted spread and unit-free temperature 0.3 (this library's defaults)."""
        return cls(**overrides)

    @classmethod
    def tdmpc2(cls, **overrides: Any) -> MPPIConfig:
        """TD-MPC2's settings: 512 samples, the best 64 weighted, 6 iterations, horizon 3, raw scores
        with its temperature 0.5 (``exp(0.5 * S)``, i.e. our 2.0), std from 2 down to >= 0.05."""
        values = dict(
            horizon=3,
            population=512,
            elites=64,
            iterations=6,
            temperature=2.0,
            normalize=False,
            init_std=2.0,
            min_std=0.05,
        )
        return cls(**{**values, **overrides})

    def samples_per_call(self) -> int:
        """Objective evaluations per problem and call."""
        return self.population * self.iterations


def mppi_weights(scores: Tensor, temperature: float, normalize: bool = True) -> Tensor:
    """Softmax weights ``(P, N)`` of scores ``(P, N)`` (higher is better), per problem (row).

    ``w = softmax((S - max S) / (temperature * scale))`` with ``scale`` the standard deviation of
    the row's finite scores when ``normalize`` (1 otherwise). Non-finite scores get weight 0;
    ``temperature == 0`` puts weight 1 on the first best score (the limit of the softmax). A row
    without a finite score comes out NaN. Rows whose finite scores are all equal get equal weights.
    """
    scores = scores.float()
    finite = torch.isfinite(scores)
    masked = torch.where(finite, scores, torch.full_like(scores, -math.inf))
    if temperature == 0:
        best = masked.argmax(1, keepdim=True)
        return torch.zeros_like(scores).scatter_(1, best, 1.0)
    top = masked.max(1, keepdim=True).values
    z = masked - top  # <= 0; -inf where not finite
    if normalize:
        count = finite.sum(1, keepdim=True).clamp_min(1)
        safe = torch.where(finite, scores, torch.zeros_like(scores))
        mu = safe.sum(1, keepdim=True) / count
        var = torch.where(finite, (scores - mu) ** 2, torch.zeros_like(scores)).sum(1, keepdim=True) / count
        # Equal scores (var 0) give z = 0 for every finite entry: equal weights, whatever the scale.
        z = z / (temperature * var.sqrt().clamp_min(torch.finfo(scores.dtype).tiny))
    else:
        z = z / temperature
    return torch.softmax(z, dim=1)


class MPPI(Optimiser):
    """Batched MPPI over action sequences in a box (see the module docstring; ``config``: an
    ``MPPIConfig``)."""

    config: MPPIConfig

    def _sample(self, mean: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
        """``N`` candidates per problem ``(P, N, H, A)`` from ``N(mean, std^2)``, clipped to the box."""
        cfg = self.config
        p, h, a = mean.shape
        eps = candidate_noise((p, cfg.population, h, a), cfg.noise_beta, generator, mean.device)
        return self._perturb(mean, std, eps)

    def _search(self, objective: Objective, start: WarmStart, generator: torch.Generator | None) -> CEMResult:
        """MPPI's weighted refits from ``start.mean`` (shifted elites are not used).

        Returns a ``CEMResult``: ``actions`` ``(P, H, A)`` the plan to execute (the mean or the best),
        ``mean`` and ``std`` the final distribution, ``best``/``best_score`` the best sample,
        ``elites`` ``(P, E, H, A)`` the last iteration's heaviest samples, best first (``E`` is
        ``elites``, else a tenth of the population).
        """
        cfg = self.config
        mean = start.mean
        dev = mean.device
        std = self._std(cfg.init_std, dev).expand(mean.shape).clone()
        min_std = self._std(cfg.min_std, dev)
        best = BestSoFar(mean)
        keep = cfg.elites or max(1, round(0.1 * cfg.population))
        elites = mean[:, None]
        for _ in range(cfg.iterations):
            cand = self._sample(mean, std, generator)
            scores = checked_scores(objective, cand)
            top, idx = scores.topk(cfg.elites or cfg.population, dim=1)  # sorted, best first
            weighted = take(cand, idx)
            w = mppi_weights(top, cfg.temperature, cfg.normalize)[:, :, None, None]
            best.update(weighted[:, 0], top[:, 0])
            # A problem without a finite score this iteration keeps its distribution (no NaN).
            ok = torch.isfinite(top[:, :1, None])
            new_mean = torch.where(ok, (w * weighted).sum(1), mean)
            if cfg.update_std:
                spread = (w * (weighted - new_mean[:, None]) ** 2).sum(1).sqrt()
                std = torch.where(ok, torch.maximum(spread, min_std), std)
            mean = cfg.alpha * mean + (1 - cfg.alpha) * new_mean
            elites = weighted[:, :keep]
        raise_unless_finite(best.score)
        actions = mean if cfg.returns == "mean" else best.actions
        return CEMResult(
            actions, mean, std, best.actions, best.score, elites, cfg.iterations * cfg.population
        )
