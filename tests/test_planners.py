"""MPPI and the gradient planner: the optima CEM finds, bounds, determinism, warm starts, MPPI's
weights in closed form, gradients through tiny models with fixed noise, MPC and the plan CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg
from test_cem import integrator_goal, quadratic
from test_mpc import LinearPoint, PositionHead, make_venv
from test_plan_cli import TINY

from worldmodel import dynamics
from worldmodel.cli import main
from worldmodel.dynamics.heads import fit_record, head_path_for, save_head
from worldmodel.planning import (
    MPPI,
    CEMConfig,
    GoalImage,
    GradientConfig,
    GradientPlanner,
    LearnedReward,
    MPCAgent,
    MPPIConfig,
    RandomAgent,
    Task,
    WarmStart,
    mppi_weights,
    run_episodes,
)


def mppi(**kw) -> MPPI:
    low, high = kw.pop("low", -1.0), kw.pop("high", 1.0)
    return MPPI(MPPIConfig(**kw), 2, low, high)


def grad(**kw) -> GradientPlanner:
    low, high = kw.pop("low", -1.0), kw.pop("high", 1.0)
    return GradientPlanner(GradientConfig(**kw), 2, low, high)


PLANNERS = {
    "mppi": lambda h, **kw: mppi(horizon=h, population=300, iterations=8, **kw),
    "grad": lambda h, **kw: grad(horizon=h, steps=40, lr=0.3, **kw),
    "grad-cem": lambda h, **kw: GradientPlanner(
        GradientConfig.cem_adam(CEMConfig(horizon=h, population=64, iterations=2), steps=20, lr=0.2),
        2,
        kw.pop("low", -1.0),
        kw.pop("high", 1.0),
    ),
}


# ------------------------------------------------------------------------------ optima, bounds
@pytest.mark.parametrize("returns", ["mean", "best"])
def test_mppi_finds_the_clipped_optimum(returns):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, 2, generator=gen) * 1.2  # some coordinates outside [-1, 1]
    planner = mppi(horizon=5, population=400, iterations=15, returns=returns)
    result = planner.optimize(quadratic(centres), 3, generator=gen)
    assert result.actions.shape == result.mean.shape == (3, 5, 2) and result.evaluations == 15 * 400
    err = (result.actions - centres.clamp(-1, 1)).abs().max()
    assert err < 0.05, err
    assert result.elites.shape == (3, 40, 5, 2)  # a tenth of the population, best first
    scores = quadratic(centres)(result.elites)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


@pytest.mark.parametrize("squash", ["clip", "tanh"])
def test_gradient_ascent_finds_the_optimum(squash):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, 2, generator=gen) * 1.2
    steps, lr = 40, 0.3
    if squash == "tanh":  # tanh reaches a bound only as u grows without end: an interior optimum
        centres = centres.clamp(-0.8, 0.8)
        steps, lr = 80, 0.1  # Adam at lr 0.3 still swings by 0.2 around it after 40 steps
    planner = grad(horizon=5, steps=steps, lr=lr, squash=squash)
    result = planner.optimize(quadratic(centres), 3, generator=gen)
    err = (result.actions - centres.clamp(-1, 1)).abs().max()
    assert err < 0.05, err
    assert torch.equal(result.actions, result.best) and torch.equal(result.mean, result.best)
    assert result.evaluations == 4 * (steps + 1) and result.elites.shape == (3, 4, 5, 2)
    score = quadratic(centres)(result.best[:, None])[:, 0]
    assert torch.allclose(score, result.best_score)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_the_point_reaches_the_goal_cem_reaches(name):
    """test_cem's integrator: a point must end at the goal after 30 steps (optimum cost 0)."""
    goal = torch.tensor([16.0, -10.0])
    result = PLANNERS[name](30).optimize(integrator_goal(goal), 8, generator=torch.Generator().manual_seed(0))
    miss = (result.actions.sum(1) - goal).norm(dim=-1)  # (8,) distances to the goal
    assert miss.max() < 2.0, miss  # from 18.9 at the start (the midpoint: no motion)
    assert result.actions.abs().max() <= 1.0


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_asymmetric_bounds_are_respected(name):
    centres = torch.full((1, 4, 2), 0.7)
    planner = PLANNERS[name](4, low=torch.tensor([-2.0, 1.0]), high=torch.tensor([0.0, 3.0]))
    result = planner.optimize(quadratic(centres), 1, generator=torch.Generator().manual_seed(1))
    low, high = torch.tensor([-2.0, 1.0]), torch.tensor([0.0, 3.0])
    for plan in (result.actions, result.mean, result.best, result.elites):
        assert bool(((plan >= low) & (plan <= high)).all())
    corner = torch.tensor([0.0, 1.0]).expand(1, 4, 2)  # the box corner nearest to (0.7, 0.7)
    assert (result.actions - corner).abs().max() < 0.05


# ------------------------------------------------------------------------- determinism, batching
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_deterministic_given_the_generator_and_problems_independent(name):
    centres = torch.tensor([[0.3, -0.2], [0.9, 0.9]]).view(2, 1, 2).expand(2, 6, 2).contiguous()
    other = centres.clone()
    other[1] = -0.8  # change problem 1 only
    run = lambda c, seed: PLANNERS[name](6).optimize(  # noqa: E731
        quadratic(c), 2, generator=torch.Generator().manual_seed(seed)
    )
    a, b, c = run(centres, 3), run(centres, 3), run(other, 3)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.best_score, b.best_score)
    assert torch.equal(a.actions[0], c.actions[0])  # problem 0 never sees problem 1
    assert not torch.allclose(a.actions[1], c.actions[1])
    if name != "grad":  # plain gradient ascent's first start, the mean, needs no random draw
        assert not torch.equal(a.actions, run(centres, 4).actions)


# --------------------------------------------------------------------------------- warm starts
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_warm_start_shifts_the_plan_and_is_where_the_next_call_starts(name):
    planner = PLANNERS[name](6, low=-1.0, high=3.0)  # midpoint 1
    gen = torch.Generator().manual_seed(0)
    result = planner.optimize(quadratic(torch.rand(2, 6, 2)), 2, generator=gen)
    warm = planner.warm_start(result, 2, gen)
    assert isinstance(warm, WarmStart) and warm.elites is None
    assert torch.equal(warm.mean[:, :4], result.mean[:, 2:])
    assert torch.equal(warm.mean[:, 4:], torch.ones(2, 2, 2))
    assert torch.equal(planner.initial_mean(2), torch.ones(2, 6, 2))
    # A warm start at the optimum stays there; a WarmStart with (CEM's) elites is accepted too.
    target = torch.full((1, 6, 2), 2.5)
    good = WarmStart(target.clone(), torch.zeros(1, 3, 6, 2))
    if name == "mppi":
        near = MPPI(
            MPPIConfig(horizon=6, population=32, iterations=1, init_std=0.01, min_std=0), 2, -1.0, 3.0
        )
    else:
        near = GradientPlanner(GradientConfig(horizon=6, steps=0), 2, -1.0, 3.0)
    a = near.optimize(quadratic(target), init=good, generator=gen).actions
    assert (a - target).abs().max() < 0.02
    if name != "mppi":
        assert torch.equal(a, target)  # zero gradient steps: the start itself


def test_gradient_steps_beat_the_warm_start():
    target = torch.full((2, 6, 2), 0.6)
    start = WarmStart(torch.zeros(2, 6, 2))
    planner = GradientPlanner(GradientConfig(horizon=6, steps=5, candidates=1), 2)
    result = planner.optimize(quadratic(target), init=start, generator=torch.Generator().manual_seed(0))
    before = quadratic(target)(start.mean[:, None])[:, 0]
    assert bool((result.best_score > before).all()), (result.best_score, before)
    # Adam's first step moves every coordinate by lr (0.1) towards the optimum, exactly.
    one = GradientPlanner(GradientConfig(horizon=6, steps=1, candidates=1, lr=0.1), 2)
    assert torch.allclose(one.optimize(quadratic(target), init=start).actions, torch.full((2, 6, 2), 0.1))


# ------------------------------------------------------------------------------ MPPI's weights
def test_mppi_weights_in_closed_form():
    s = torch.tensor([[1.0, 3.0, 2.0, -math.inf], [0.5, 0.5, 0.5, 0.5]])
    w = mppi_weights(s, 0.5, normalize=False)
    e = torch.exp(torch.tensor([1.0, 3.0, 2.0]) / 0.5)
    assert torch.allclose(w[0], torch.cat([e / e.sum(), torch.zeros(1)]))
    assert torch.equal(w[1], torch.full((4,), 0.25))  # equal scores: equal weights
    # temperature -> 0: all the weight on the argmax (and exactly so at 0).
    onehot = torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert torch.equal(mppi_weights(s[:1], 1e-6, normalize=False), onehot[:1])
    assert torch.equal(mppi_weights(s[:1], 1e-6), onehot[:1])
    assert torch.equal(mppi_weights(s, 0.0), onehot)  # ties at 0: the first best
    # normalize: softmax of (S - max) / (T * std over the finite scores), so affine-invariant.
    std = torch.tensor([1.0, 3.0, 2.0]).std(unbiased=False)
    want = torch.softmax(torch.tensor([1.0, 3.0, 2.0]) / (0.3 * std), 0)
    assert torch.allclose(mppi_weights(s[:1], 0.3)[0, :3], want)
    assert torch.allclose(mppi_weights(7 * s[:1] - 4, 0.3), mppi_weights(s[:1], 0.3))
    # temperature -> infinity: the plain average
    assert torch.allclose(mppi_weights(s[:1], 1e9)[0], torch.tensor([1, 1, 1, 0]) / 3)


def test_mppi_at_temperature_zero_moves_the_mean_to_the_best_sample():
    objective = quadratic(torch.full((2, 3, 2), 0.4))
    gen = torch.Generator().manual_seed(0)
    result = mppi(horizon=3, population=50, iterations=1, temperature=0.0).optimize(
        objective, 2, generator=gen
    )
    assert torch.equal(result.mean, result.best)
    gen = torch.Generator().manual_seed(0)  # the same samples, scored by hand
    cand = (0.5 * torch.randn(2, 50, 3, 2, generator=gen)).clamp(-1, 1)
    scores = objective(cand)
    assert torch.equal(result.best, cand[torch.arange(2), scores.argmax(1)])
    assert torch.equal(result.best_score, scores.max(1).values)


def test_mppi_elites_weight_only_the_best():
    objective = quadratic(torch.full((1, 3, 2), 0.4))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    planner = mppi(horizon=3, population=50, iterations=1, elites=5, temperature=1e9, normalize=False)
    result = planner.optimize(objective, 1, generator=gen())
    cand = (0.5 * torch.randn(1, 50, 3, 2, generator=gen())).clamp(-1, 1)
    top = cand[0, objective(cand)[0].topk(5).indices]
    assert torch.allclose(result.mean[0], top.mean(0))  # infinite temperature: their plain mean
    assert torch.allclose(result.std[0], top.std(0, unbiased=False).clamp_min(0.0))


# --------------------------------------------------------- gradients through differentiable models
def test_gradient_flows_through_a_tiny_svg_with_fixed_noise():
    model = noisy_tiny_svg(image_size=16)
    head = identity_head(model)
    objective = LearnedReward(head, task="push", reach_weight=0.0)  # sampled rollouts (sample=True)
    task = Task(goal_pos=torch.tensor([[0.1, 0.05, 0.0]]), query=torch.tensor([[0.0, 0.0, 0.02]]))
    task = objective.prepare(model, task)
    frames = torch.randint(
        0, 256, (1, model.config.n_past, 16, 16, 3), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        state = model.initial(frames.to(torch.uint8), torch.zeros(1, model.config.n_past - 1, 4))
    gen = torch.Generator().manual_seed(5)
    score = lambda cand, g: objective(model, state, task, cand, g)  # noqa: E731
    planner = GradientPlanner(GradientConfig(horizon=3, steps=8, candidates=1, lr=0.2), 4)
    start = planner.initial_mean(1)
    with torch.no_grad():  # as MPCAgent._plan calls it: the planner turns grad on itself
        result = planner.optimize(lambda c: score(c, gen), init=start, generator=gen)
        # Fixed noise: the generator's state at the call's start reproduces every step's noise, so
        # the best score is the score of the best plan under that noise, and beats the start's.
        at_start = score(start[:, None], torch.Generator().manual_seed(5))[:, 0]
        again = score(result.best[:, None], torch.Generator().manual_seed(5))[:, 0]
        other_noise = score(result.best[:, None], torch.Generator().manual_seed(6))[:, 0]
    assert torch.allclose(again, result.best_score, atol=1e-6), (again, result.best_score)
    assert not torch.allclose(other_noise, again, atol=1e-4)  # the noise matters to the score
    assert float(result.best_score) > float(at_start) + 0.01, (result.best_score, at_start)
    assert not torch.equal(result.best, start)
    # The objective runs without autograd unless its actions require grad.
    assert not score(start[:, None], gen).requires_grad
    with torch.enable_grad():
        assert score(start[:, None].requires_grad_(), gen).requires_grad


def test_gradient_through_the_linear_point_reaches_the_goal_image():
    model = LinearPoint()
    objective = GoalImage("features", sample=False, frames="last")
    goal = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    goal[0, 0, 0, :2] = torch.tensor([166, 89])  # the point (0.3, -0.3) as test_mpc encodes it
    task = objective.prepare(model, Task(goal_image=goal))
    state = model.initial(torch.full((1, 2, 8, 8, 3), 127, dtype=torch.uint8), torch.zeros(1, 1, 4))
    planner = GradientPlanner(GradientConfig(horizon=5, steps=30, lr=0.3), 4)
    result = planner.optimize(lambda c: objective(model, state, task, c), 1)
    end = state["pos"] + 0.1 * result.actions[:, :, :2].sum(1)
    assert torch.allclose(end, torch.tensor([[166, 89]]) / 127.5 - 1, atol=0.01), end
    assert float(result.best_score) > -0.02


def test_gradient_planner_refuses_an_objective_without_gradient():
    def no_grad_objective(cand):
        with torch.no_grad():
            return -cand.pow(2).sum((2, 3))

    with pytest.raises(ValueError, match="no gradient"):
        grad(horizon=3).optimize(no_grad_objective, 1)


# -------------------------------------------------------------------------------- MPC, the CLI
@pytest.mark.parametrize("name", ["mppi", "grad"])
def test_mpc_drives_the_point_to_its_goal(name):
    if name == "mppi":
        planner = MPPI(MPPIConfig(horizon=5, population=64, iterations=3), 4)
    else:
        planner = GradientPlanner(
            GradientConfig.cem_adam(CEMConfig(horizon=5, population=32, iterations=2)), 4
        )
    agent = MPCAgent(LinearPoint(), planner, LearnedReward(PositionHead()), seed=0)
    venv = make_venv(2)
    result = run_episodes(agent, venv, episodes=2, seed=0)
    random = run_episodes(RandomAgent(seed=0), venv, episodes=2, seed=0)
    assert result["success_rate"] == 1.0 and result["final_distance"] < 0.05, result
    assert random["success_rate"] == 0.0
    assert agent.plans == 25  # one plan per step of the 25-step episodes


def test_plan_cli_writes_the_planner(tmp_path, capsys):
    model = noisy_tiny_svg(image_size=16)
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    save_head(identity_head(model), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 0))
    for planner, oracle in (("mppi", "mppi"), ("grad", "cem")):
        report = tmp_path / f"{planner}.json"
        args = ["plan", str(ckpt), "--episodes", "1", "--oracle-budget", "4", "--planner", planner, *TINY]
        assert main([*args, "--max-steps", "3", "--json", str(report)]) == 0
        result = json.loads(report.read_text())
        assert result["args"]["planner"] == result["model"]["planner"] == planner
        assert result["oracle"]["planner"] == oracle  # the simulator has no gradient: grad's oracle is CEM
        assert result["model"]["episodes"] == 1 and result["model"]["objective"] == "learned"
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(["plan", str(ckpt), "--planner", "newton"])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "--planner" in message and "newton" in message and len(message.splitlines()) == 1


def test_bad_config():
    with pytest.raises(ValueError, match="temperature"):
        MPPIConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="elites"):
        MPPIConfig(population=8, elites=9)
    with pytest.raises(ValueError, match="init"):
        GradientConfig(init="random")
    with pytest.raises(ValueError, match="squash"):
        GradientConfig(squash="sigmoid")
    with pytest.raises(ValueError, match="horizon"):
        GradientConfig(horizon=5, init="cem", cem=CEMConfig(horizon=4))
    assert GradientConfig(init="cem", horizon=7).cem.horizon == 7
    for planner in (mppi(horizon=3, population=8), grad(horizon=3)):
        with pytest.raises(ValueError, match="objective"):
            planner.optimize(lambda a: a.sum(-1), 2)  # wrong score shape
        with pytest.raises(ValueError, match="init"):
            planner.optimize(lambda a: a.sum((2, 3)), init=torch.zeros(2, 4, 2))
        with pytest.raises(ValueError, match=r"problem\(s\) \[1\]"):
            planner.optimize(
                lambda a: torch.where(torch.arange(2)[:, None] == 1, torch.nan, -a.sum((2, 3))), 2
            )
    assert MPPIConfig.tdmpc2().samples_per_call() == 512 * 6
    assert GradientConfig(init="cem", horizon=7).samples_per_call() == 128 + 4 * 11


@pytest.mark.gpu
def test_planners_on_cuda_with_a_cuda_generator():
    """Candidates, bounds and the restored generator state live on the GPU (not run on CPU hosts)."""
    dev = torch.device("cuda")
    centres = torch.full((2, 4, 2), 0.5, device=dev)
    for planner in (mppi(horizon=4, population=200, iterations=8), grad(horizon=4, steps=40, lr=0.3)):
        a, b = (
            planner.optimize(
                quadratic(centres), 2, device=dev, generator=torch.Generator(device=dev).manual_seed(0)
            )
            for _ in range(2)
        )
        assert a.actions.device.type == "cuda" and torch.equal(a.actions, b.actions)
        assert (a.actions - centres).abs().max() < 0.05
    model = noisy_tiny_svg(image_size=16).to(dev)
    objective = LearnedReward(identity_head(model), task="push", reach_weight=0.0)
    task = objective.prepare(model, Task(goal_pos=torch.tensor([[0.1, 0.0, 0.0]]), query=torch.zeros(1, 3)))
    frames = torch.zeros(1, model.config.n_past, 16, 16, 3, dtype=torch.uint8, device=dev)
    with torch.no_grad():
        state = model.initial(frames, torch.zeros(1, model.config.n_past - 1, 4, device=dev))
    gen = torch.Generator(device=dev).manual_seed(5)
    score = lambda cand, g: objective(model, state, task, cand, g)  # noqa: E731
    planner = GradientPlanner(GradientConfig(horizon=3, steps=4, candidates=1), 4)
    with torch.no_grad():
        result = planner.optimize(lambda c: score(c, gen), 1, device=dev, generator=gen)
        again = score(result.best[:, None], torch.Generator(device=dev).manual_seed(5))
    assert torch.allclose(again[:, 0], result.best_score, atol=1e-5)
