"""The cross-entropy method (CEM) and its improved variant iCEM, as a pure batched optimiser.

``CEM.optimize`` maximises a batched objective over action sequences for ``P`` independent
planning problems at once. Candidates have the layout ``(P, N, H, A)``: problem-major, so that a
planner that flattens them to ``(P * N, H, A)`` lines up with a model state tiled by
``state.repeat_interleave(N)`` (row ``p * N + n`` is candidate ``n`` of problem ``p``).

Per iteration ``i`` (CEM, as in PlaNet and mbrl-lib):

    a ~ N(mu, sigma^2) within [low, high]           (clipped, or truncated at +-2 sigma)
    elites = the ``elites`` best candidates by score
    mu     <- alpha * mu    + (1 - alpha) * mean(elites)
    sigma  <- alpha * sigma + (1 - alpha) * std(elites)

and the result is the final mean or the best candidate ever scored (``returns``).

iCEM (Pinneri et al., CoRL 2020) adds, each behind its own option:

- colored noise: samples are Gaussian with a power spectrum ``1 / f**beta`` along the horizon
  (``noise_beta``; 0 is CEM's white noise), so that sequences are temporally correlated;
- population decay: iteration ``i`` draws ``max(N * gamma**-i, 2 * elites)`` samples;
- kept elites: a fraction of the previous iteration's elites joins the next iteration's pool;
- shifted elites: that fraction of the previous call's elites, shifted by the executed steps with
  freshly drawn tail actions, joins the first iteration (``warm_start`` carries them);
- the mean joins the pool at the last iteration;
- executing the best sequence instead of the mean.

Warm start: ``warm_start(result, steps)`` shifts a solution by the steps executed since it was
planned and fills the tail with the bounds' midpoint (mbrl-lib's ``keep_last_solution``); the
standard deviation restarts from ``init_std`` on every call (as iCEM resets it after each env step).

Deviations, deliberate: the truncated Gaussian is obtained by the inverse-CDF map of each
standard normal onto N(0, 1) truncated at +-2, which also applies to colored noise (iCEM clips
colored samples instead; ``sampling="clip"`` does that). mbrl-lib keeps a random subset of the
elites; here the best ones are kept (deterministic given the scores). Non-finite scores count as
the worst possible score (mbrl-lib maps NaN to a small negative number).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from worldmodel.planning.box import CEMResult, Objective, WarmStart, checked_scores, raise_unless_finite, take
from worldmodel.planning.optimiser import (
    BestSoFar,
    Optimiser,
    check_choices,
    check_counts,
    check_refit,
    white_noise,
)

SAMPLING = ("clip", "truncate")
RETURNS = ("mean", "best")

"""Batched objective: candidates ``(P, N, H, A)`` → scores ``(P, N)``, higher is better."""


@dataclasses.dataclass
class CEMConfig:
    """Options of ``CEM``. ``CEMConfig.cem()`` and ``CEMConfig.icem()`` are the two presets."""

    horizon: int = 10
    """Planned steps ``H``."""
    population: int = 1000
    """Candidates drawn per iteration ``N`` (at the first iteration when ``population_decay > 1``)."""
    elites: int | None = None
    """Candidates the distribution is refitted to; ``None``: ``elite_fraction`` of ``population``
    (resolved to a count when the config is made, so ``config.elites`` is always an int)."""
    elite_fraction: float = 0.1
    """Elites as a share of the population when ``elites`` is not given (DINO-WM: 30 of 300)."""
    iterations: int = 3
    """Refits per call."""
    alpha: float = 0.0
    """Momentum: weight of the old mean and std in each refit (0: PlaNet, 0.1: mbrl-lib, iCEM)."""
    init_std: float = 0.5
    """Initial standard deviation, as a fraction of the half-range ``(high - low) / 2``."""
    min_std: float = 0.0
    """Floor on the standard deviation (same units as ``init_std``), against early collapse."""
    sampling: str = "clip"
    """``"clip"``: clamp Gaussian samples to the bounds; ``"truncate"``: truncate at +-2 sigma and
    shrink sigma so that mu +- 2 sigma stays within the bounds (mbrl-lib; the mean then approaches
    an optimum on a bound only asymptotically)."""
    returns: str = "mean"
    """``"mean"``: the final mean (mbrl-lib's ``return_mean_elites``); ``"best"``: the best
    candidate scored over all iterations (Visual Foresight, iCEM)."""
    noise_beta: float = 0.0
    """iCEM colored-noise exponent along the horizon (0: white noise; iCEM uses 0.25-3.5)."""
    population_decay: float = 1.0
    """iCEM population decay ``gamma`` (1: none; iCEM uses 1.25)."""
    keep_elites: float = 0.0
    """iCEM: fraction of the elites carried into the next iteration (0: none; iCEM uses 0.3)."""
    shift_elites: bool = False
    """iCEM: carry the kept fraction of the last call's elites, shifted, into the next call."""
    add_mean: bool = False
    """iCEM: add the mean as a candidate at the last iteration."""

    def __post_init__(self) -> None:
        check_choices(self, {"sampling": SAMPLING, "returns": RETURNS})
        if not 0.0 < self.elite_fraction < 1.0:
            raise ValueError(f"elite_fraction must be in (0, 1), got {self.elite_fraction}")
        if self.elites is None:
            self.elites = max(1, round(self.elite_fraction * self.population))
        check_counts(self, ("horizon", "population", "elites", "iterations"))
        if self.population >= 2 and self.elites >= self.population:
            # refitting to every candidate never selects: the distribution would only drift
            raise ValueError(
                f"elites ({self.elites}) must be < population ({self.population}); leave elites unset "
                f"for {self.elite_fraction:g} of the population"
            )
        check_refit(self)
        if self.population_decay < 1.0:
            raise ValueError(f"population_decay must be >= 1, got {self.population_decay}")
        if not 0.0 <= self.keep_elites <= 1.0:
            raise ValueError(f"keep_elites must be in [0, 1], got {self.keep_elites}")

    @classmethod
    def cem(cls, **overrides: Any) -> CEMConfig:
        """Plain CEM (PlaNet-like: white noise, no momentum, the mean is executed)."""
        return cls(**overrides)

    @classmethod
    def icem(cls, **overrides: Any) -> CEMConfig:
        """iCEM's settings: beta 2, decay 1.25, keep 0.3 of the elites, shift them, add the mean,
        momentum 0.1, execute the best sequence."""
        values = dict(
            noise_beta=2.0,
            population_decay=1.25,
            keep_elites=0.3,
            shift_elites=True,
            add_mean=True,
            alpha=0.1,
            returns="best",
        )
        return cls(**{**values, **overrides})

    def samples_per_call(self) -> int:
        """Objective evaluations per problem and call (drawn samples plus carried candidates)."""
        total = 0
        for i in range(self.iterations):
            total += self.population_at(i) + self._extra_at(i)
        return total

    def population_at(self, i: int) -> int:
        """Fresh samples drawn at iteration ``i``: ``max(N * gamma**-i, 2 * elites)`` (iCEM), at most N."""
        n = math.ceil(self.population * self.population_decay**-i)
        return min(self.population, max(n, 2 * self.elites))

    def kept(self) -> int:
        """Elites carried per iteration (and shifted between calls)."""
        return round(self.keep_elites * self.elites)

    def _extra_at(self, i: int) -> int:
        kept = self.kept() if (i > 0 or self.shift_elites) else 0
        return kept + (1 if self.add_mean and i == self.iterations - 1 else 0)


class CEM(Optimiser):
    """Batched CEM / iCEM over action sequences in a box (``config``: a ``CEMConfig``)."""

    config: CEMConfig

    def warm_start(
        self, result: CEMResult | WarmStart, steps: int, generator: torch.Generator | None = None
    ) -> WarmStart:
        """Shift a solution by the ``steps`` executed since it was planned.

        The mean's tail is refilled with the midpoint; kept elites (iCEM ``shift_elites``) get tail
        actions drawn from the initial distribution. Returns a ``WarmStart`` for ``optimize``.
        """
        cfg = self.config
        shifted = super().warm_start(result, steps)
        source = result.elites
        if not (cfg.shift_elites and cfg.kept() > 0 and source is not None and source.shape[1] >= cfg.kept()):
            return shifted
        steps = min(max(int(steps), 0), self.horizon)
        dev = shifted.mean.device
        kept = source[:, : cfg.kept()]
        fresh = self.initial_mean(len(kept), dev)[:, :steps]
        eps = white_noise(kept[:, :, :steps].shape, generator, dev)
        tail = self._perturb(fresh, self._std(cfg.init_std, dev), eps)
        return WarmStart(shifted.mean, torch.cat([kept[:, :, steps:], tail], dim=2))

    def _sample(self, mean: Tensor, std: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` candidates per problem ``(P, n, H, A)`` from ``N(mean, std^2)`` within the bounds."""
        cfg = self.config
        p, h, a = mean.shape
        eps = candidate_noise((p, n, h, a), cfg.noise_beta, generator, mean.device)
        if cfg.sampling == "truncate":
            # Keep mu +- 2 sigma inside the bounds (mbrl-lib), then fold eps into N(0,1) | [-2, 2].
            low, high = self._bounds(mean.device)
            std = torch.minimum(std, torch.minimum(mean - low, high - mean).clamp_min(0) / 2)
            eps = truncate_normal(eps, 2.0)
        return self._perturb(mean, std, eps)

    # --- the optimiser ------------------------------------------------------------------------
    def _search(self, objective: Objective, start: WarmStart, generator: torch.Generator | None) -> CEMResult:
        """CEM's refits; ``start.elites`` are iCEM's shifted elites, if any."""
        cfg = self.config
        mean = start.mean
        dev = mean.device
        std = self._std(cfg.init_std, dev).expand(mean.shape).clone()
        min_std = self._std(cfg.min_std, dev)
        carried = None
        if cfg.shift_elites and start.elites is not None:
            carried = start.elites[:, : cfg.kept()]
        best = BestSoFar(mean)
        elites = mean[:, None]
        evaluations = 0
        for i in range(cfg.iterations):
            pool = [self._sample(mean, std, cfg.population_at(i), generator)]
            if carried is not None and carried.shape[1] > 0:
                pool.append(carried)
            if cfg.add_mean and i == cfg.iterations - 1:
                pool.append(mean[:, None])
            cand = torch.cat(pool, dim=1)
            scores = checked_scores(objective, cand)
            evaluations += cand.shape[1]
            top, idx = scores.topk(min(cfg.elites, cand.shape[1]), dim=1)  # sorted, best first
            elites = take(cand, idx)
            best.update(elites[:, 0], top[:, 0])
            mean = cfg.alpha * mean + (1 - cfg.alpha) * elites.mean(1)
            std = cfg.alpha * std + (1 - cfg.alpha) * elites.std(1, unbiased=False)
            std = torch.maximum(std, min_std)
            carried = elites[:, : cfg.kept()] if cfg.kept() > 0 else None
        actions = mean if cfg.returns == "mean" else best.actions
        raise_unless_finite(best.score)  # one host sync per call
        return CEMResult(actions, mean, std, best.actions, best.score, elites, evaluations)


# ----------------------------------------------------------------------------------- noise
def candidate_noise(
    shape: tuple[int, int, int, int], beta: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Standard normals ``(P, N, H, A)`` for sampled action sequences: white, or colored along the
    horizon ``H`` with exponent ``beta > 0`` (iCEM). Shared by CEM and MPPI."""
    p, n, h, a = shape
    if beta > 0:
        return colored_noise((p, n, a), h, beta, generator, device).transpose(-1, -2)
    return white_noise(shape, generator, device)


def truncate_normal(eps: Tensor, bound: float) -> Tensor:
    """Map standard normals one-to-one onto N(0, 1) truncated to ``[-bound, bound]`` (inverse CDF).

    Monotone, so the ordering and, roughly, the correlations of colored noise survive.
    """
    lo = torch.special.ndtr(torch.tensor(-bound, dtype=eps.dtype, device=eps.device))
    u = lo + (1 - 2 * lo) * torch.special.ndtr(eps)
    return torch.special.ndtri(u).clamp(-bound, bound)


def colored_noise(
    shape: tuple[int, ...],
    length: int,
    beta: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Gaussian noise with power spectrum ``~ 1 / f**beta`` along the last axis: ``(*shape, length)``.

    Each entry has zero mean and unit variance (Timmer and Koenig's method: random Fourier
    amplitudes scaled by ``f**(-beta / 2)``, frequencies below ``1 / length`` cut off, normalised
    by the exact variance of the inverse transform).
    ``beta = 0`` is white noise; larger ``beta`` gives smoother sequences.
    """
    freqs = torch.fft.rfftfreq(length, device=device)
    freqs[0] = 1.0 / length  # low-frequency cut-off: the DC term gets the lowest resolvable power
    scale = freqs ** (-beta / 2.0)
    nf = len(freqs)
    re = torch.randn((*shape, nf), generator=generator, device=device) * scale
    im = torch.randn((*shape, nf), generator=generator, device=device) * scale
    # Real signal: the DC term (and the Nyquist term for even lengths) has no imaginary part; its
    # real part carries the whole variance of that frequency.
    im[..., 0] = 0
    re[..., 0] *= math.sqrt(2)
    weights = scale.clone()
    weights[0] /= math.sqrt(2)
    if length % 2 == 0:
        im[..., -1] = 0
        re[..., -1] *= math.sqrt(2)
        weights[-1] /= math.sqrt(2)
    sigma = 2 * torch.sqrt((weights**2).sum()) / length
    return torch.fft.irfft(torch.complex(re, im), n=length) / sigma
