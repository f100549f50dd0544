"""CEM / iCEM: closed-form optima within bounds, iCEM's sample efficiency, batching, warm starts."""

from __future__ import annotations

import pytest
import torch

from worldmodel.planning import CEM, CEMConfig, WarmStart, colored_noise
from worldmodel.planning.cem import truncate_normal


def quadratic(centres: torch.Tensor):
    """Objective ``-||a - c_p||^2`` per problem: its maximiser in the box is ``clip(c_p)``."""

    def objective(a: torch.Tensor) -> torch.Tensor:  # (P, N, H, A) -> (P, N)
        return -(a - centres[:, None]).pow(2).sum((2, 3))

    return objective


@pytest.mark.parametrize("sampling", ["clip", "truncate"])
@pytest.mark.parametrize("returns", ["mean", "best"])
def test_finds_the_clipped_optimum(sampling, returns):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, 2, generator=gen) * 1.2  # some coordinates outside [-1, 1]
    if sampling == "truncate":
        # Truncation keeps mu +- 2 sigma inside the box, so the mean reaches a bound only
        # asymptotically: test it on an interior optimum.
        centres = centres.clamp(-0.5, 0.5)
    cfg = CEMConfig(horizon=5, population=400, elites=40, iterations=15, sampling=sampling, returns=returns)
    result = CEM(cfg, action_dim=2).optimize(quadratic(centres), 3, generator=gen)
    optimum = centres.clamp(-1, 1)
    assert result.actions.shape == (3, 5, 2)
    assert result.actions.abs().max() <= 1.0
    assert (result.actions - optimum).abs().max() < 0.05, (result.actions - optimum).abs().max()
    assert result.evaluations == 15 * 400


def test_asymmetric_bounds():
    centres = torch.full((1, 4, 2), 0.7)
    cfg = CEMConfig(horizon=4, population=300, elites=30, iterations=12)
    cem = CEM(cfg, 2, low=[-2.0, 1.0], high=[0.0, 3.0])
    a = cem.optimize(quadratic(centres), 1, generator=torch.Generator().manual_seed(1)).actions
    want = torch.tensor([0.0, 1.0]).expand(1, 4, 2)  # the box corner nearest to (0.7, 0.7)
    assert (a - want).abs().max() < 0.05


def integrator_goal(goal: torch.Tensor):
    """A point that integrates its actions over the horizon must end at ``goal``: the optimum needs
    long runs of large, consistent actions, which colored noise proposes and white noise does not."""

    def objective(a: torch.Tensor) -> torch.Tensor:
        return -(a.sum(2) - goal).pow(2).sum(-1)

    return objective


def test_icem_reaches_the_cost_with_fewer_samples():
    goal = torch.tensor([16.0, -10.0])
    cem = CEMConfig.cem(horizon=30, population=300, elites=30, iterations=5)
    icem = CEMConfig.icem(horizon=30, population=100, elites=10, iterations=5)
    costs = {}
    for name, cfg in (("cem", cem), ("icem", icem)):
        planner = CEM(cfg, 2)
        result = planner.optimize(integrator_goal(goal), 8, generator=torch.Generator().manual_seed(0))
        costs[name] = float((result.actions.sum(1) - goal).pow(2).sum(-1).mean())
        costs[name + "_samples"] = result.evaluations
    assert costs["icem_samples"] * 4 < costs["cem_samples"], costs
    assert costs["icem"] < costs["cem"], costs


def test_batched_problems_are_independent():
    gen_seed = 3
    cfg = CEMConfig.icem(horizon=6, population=64, elites=8, iterations=3)
    centres = torch.tensor([[0.3, -0.2], [0.9, 0.9]]).view(2, 1, 2).expand(2, 6, 2).contiguous()
    other = centres.clone()
    other[1] = -0.8  # change problem 1 only
    a = CEM(cfg, 2).optimize(quadratic(centres), 2, generator=torch.Generator().manual_seed(gen_seed))
    b = CEM(cfg, 2).optimize(quadratic(other), 2, generator=torch.Generator().manual_seed(gen_seed))
    assert torch.equal(a.actions[0], b.actions[0])  # problem 0 never sees problem 1
    assert not torch.allclose(a.actions[1], b.actions[1])


def test_warm_start_shifts_the_plan():
    cfg = CEMConfig.icem(horizon=6, population=64, elites=10, iterations=2)
    cem = CEM(cfg, 2, low=-1.0, high=3.0)  # midpoint 1
    gen = torch.Generator().manual_seed(0)
    result = cem.optimize(quadratic(torch.rand(2, 6, 2)), 2, generator=gen)
    warm = cem.warm_start(result, 2, gen)
    assert torch.equal(warm.mean[:, :4], result.mean[:, 2:])
    assert torch.equal(warm.mean[:, 4:], torch.ones(2, 2, 2))
    assert warm.elites.shape == (2, cfg.kept(), 6, 2)
    assert torch.equal(warm.elites[:, :, :4], result.elites[:, : cfg.kept(), 2:])
    assert warm.elites.min() >= -1 and warm.elites.max() <= 3
    # A warm start is where the next call starts: one iteration near a good plan stays near it.
    target = torch.full((1, 6, 2), 2.5)
    good = WarmStart(target.clone())
    one = CEM(CEMConfig(horizon=6, population=32, elites=4, iterations=1, init_std=0.01), 2, -1.0, 3.0)
    a = one.optimize(quadratic(target), init=good, generator=gen).actions
    assert (a - target).abs().max() < 0.05
    assert WarmStart.cat([warm[0:1], warm[1:2]]).mean.shape == (2, 6, 2)


def test_colored_noise_has_unit_variance_and_correlates_with_beta():
    gen = torch.Generator().manual_seed(0)
    lag1 = []
    for beta in (0.0, 1.0, 2.0):
        x = colored_noise((20000,), 10, beta, gen)
        assert abs(float(x.var()) - 1.0) < 0.03 and abs(float(x.mean())) < 0.02
        lag1.append(float((x[:, 1:] * x[:, :-1]).mean()))
    assert abs(lag1[0]) < 0.03 and lag1[0] < lag1[1] < lag1[2]


def test_truncated_normal_stays_within_two_sigma():
    eps = truncate_normal(torch.randn(10000, generator=torch.Generator().manual_seed(0)) * 3, 2.0)
    assert eps.abs().max() <= 2.0 and float(eps.std()) > 0.5


def test_elites_default_to_a_tenth_of_the_population():
    assert CEMConfig().elites == 100 and CEMConfig(population=16).elites == 2
    assert CEMConfig.icem(population=16).elites == 2  # used to raise: the default was 100 elites
    assert CEMConfig(population=300, elite_fraction=0.25).elites == 75
    assert CEMConfig(population=5).elites == 1 and CEMConfig(population=64, elites=8).elites == 8


def test_bad_input():
    with pytest.raises(ValueError, match="elites"):
        CEMConfig(population=10, elites=20)
    with pytest.raises(ValueError, match=r"elites \(16\) must be < population \(16\)"):
        CEMConfig(population=16, elites=16)  # a CEM that never selects
    with pytest.raises(ValueError, match="elite_fraction"):
        CEMConfig(elite_fraction=1.0)
    with pytest.raises(ValueError, match="sampling"):
        CEMConfig(sampling="reject")
    for bad in (-0.1, float("nan")):  # NaN is refused too (a "< 0" check lets it through)
        with pytest.raises(ValueError, match="min_std"):
            CEMConfig(min_std=bad)
    cem = CEM(CEMConfig(horizon=3, population=8, elites=2, iterations=1), 2)
    with pytest.raises(ValueError, match="objective"):
        cem.optimize(lambda a: a.sum(-1), 2)  # wrong score shape
    with pytest.raises(ValueError, match="init"):
        cem.optimize(lambda a: a.sum((2, 3)), init=torch.zeros(2, 4, 2))
    # Non-finite scores lose.
    nan_high = lambda a: torch.where(a[..., 0, 0] > 0, torch.nan, -a[..., 0, 0].abs())  # noqa: E731
    out = cem.optimize(nan_high, 1, generator=torch.Generator().manual_seed(0))
    assert out.best[0, 0, 0] <= 0


def test_no_finite_score_is_an_error_naming_the_problem():
    cem = CEM(CEMConfig(population=8, elites=2, iterations=2, horizon=3), action_dim=2)

    def objective(cand):
        scores = -cand.pow(2).sum((2, 3))
        scores[1] = float("nan")  # problem 1's model diverged
        return scores

    with pytest.raises(ValueError, match=r"problem\(s\) \[1\]"):
        cem.optimize(objective, 2, generator=torch.Generator().manual_seed(0))


def test_warm_start_cat_keeps_elites_when_one_problem_restarts():
    a = WarmStart(torch.zeros(2, 3, 1), torch.ones(2, 4, 3, 1))
    fresh = WarmStart(torch.full((1, 3, 1), 0.5))
    both = WarmStart.cat([a, fresh])
    assert both.mean.shape == (3, 3, 1) and both.elites.shape == (3, 4, 3, 1)
    assert torch.equal(both.elites[:2], a.elites) and torch.equal(both.elites[2], torch.full((4, 3, 1), 0.5))
    assert WarmStart.cat([fresh, fresh]).elites is None
