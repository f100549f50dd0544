"""Planning latency: milliseconds per planned action of MPCAgent with CEM, MPPI and the gradient
planner on an SVG world model.

    python benchmarks/planning_latency.py [--presets tiny paper] [--planners cem mppi grad] \
        [--device cpu] [--threads 1]

One plan = ``model.initial`` on the real context window + the planner, re-planning at every step,
as ``worldmodel plan --planner ...`` does: CEM and MPPI score ``--population`` candidates (1000) x
horizon ``--horizon`` (10) x ``--iterations`` (3); ``grad`` runs that CEM, then ``--grad-steps``
(10) Adam steps on its 4 best sequences through the model (a forward and a backward pass each).
Measured through ``MPCAgent.predict`` on one env, for the learned-reward objective (rollouts stay
in latent space) and the goal-image pixel objective. Weights are untrained (the cost, not the plan,
is measured). Prints each planner's time relative to CEM's in the same run, then the first
planner's tiny learned-reward figure last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PLANNERS = ("cem", "mppi", "grad")


def make_planner(name: str, action_dim: int, args):
    from worldmodel.planning import CEM, MPPI, CEMConfig, GradientConfig, GradientPlanner, MPPIConfig

    budget = {"horizon": args.horizon, "population": args.population, "iterations": args.iterations}
    if name == "mppi":
        return MPPI(MPPIConfig.mppi(**budget), action_dim)
    cem = CEMConfig.cem(elites=args.population // 10, **budget)
    if name == "grad":
        return GradientPlanner(GradientConfig.cem_adam(cem, steps=args.grad_steps), action_dim)
    return CEM(cem, action_dim)


def measure(model, objective, planner, args) -> float:
    from worldmodel.planning import MPCAgent, Task

    agent = MPCAgent(model, planner, objective, seed=0)
    size = model.config.image_size
    goal = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    agent.set_task(0, Task(goal_pos=torch.zeros(1, 3), query=torch.zeros(1, 3), goal_image=goal))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    agent.predict(obs, episode_start=np.array([True]))  # warm-up
    agent.reset_stats()
    start = time.perf_counter()
    for _ in range(args.actions):
        agent.predict(obs)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / args.actions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny"], help="svg-lp presets (tiny, paper)")
    p.add_argument("--planners", nargs="+", default=list(PLANNERS), choices=PLANNERS)
    p.add_argument("--population", type=int, default=1000)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--grad-steps", type=int, default=10, help="Adam steps of the gradient planner")
    p.add_argument("--actions", type=int, default=5, help="planned actions timed per figure")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from worldmodel import dynamics
    from worldmodel.dynamics.heads import ObjectHead
    from worldmodel.planning import GoalImage, LearnedReward

    budget = f"{args.population} candidates x H {args.horizon} x {args.iterations} iterations"
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {budget}")
    figures = {}
    for preset in args.presets:
        torch.manual_seed(0)
        model = dynamics.make("svg-lp", preset=preset).to(args.device).eval()
        head = ObjectHead(model.feature_dim)
        size = model.config.image_size
        for name, objective in (("learned", LearnedReward(head)), ("pixels", GoalImage("pixels"))):
            for planner in args.planners:
                ms = measure(model, objective, make_planner(planner, model.config.action_dim, args), args)
                figures[(preset, name, planner)] = ms
                where = f"svg-lp {preset} ({size} px), {name:<8} objective, {planner:<4}"
                print(f"{where}: {ms:8.1f} ms per planned action")
    if "cem" in args.planners:
        for (preset, name, planner), ms in figures.items():
            if planner != "cem":
                ratio = ms / figures[(preset, name, "cem")]
                print(f"svg-lp {preset} {name:<8} {planner:<4} / cem: {ratio:.2f}x the planning time")
    first, planner = args.presets[0], args.planners[0]
    ms = figures[(first, "learned", planner)]
    print(f"svg-lp {first} learned-reward MPC with {planner}: {ms:.1f} ms per planned action ({budget})")


if __name__ == "__main__":
    main()
