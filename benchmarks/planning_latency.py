"""Planning latency: milliseconds per planned action of MPCAgent with CEM on an SVG world model.

    python benchmarks/planning_latency.py [--presets tiny paper] [--device cpu] [--threads 1]

One plan = ``model.initial`` on the real context window + CEM with ``--population`` candidates
(1000) x horizon ``--horizon`` (10) x ``--iterations`` (3), re-planning at every step, as
``worldmodel plan`` does. Measured through ``MPCAgent.predict`` on one env, for the learned-reward
objective (rollouts stay in latent space) and the goal-image pixel objective. Weights are
untrained (the cost, not the plan, is measured). Prints the tiny learned-reward figure last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def measure(model, objective, args) -> float:
    from worldmodel.planning import CEM, CEMConfig, MPCAgent, Task

    cfg = CEMConfig.cem(
        horizon=args.horizon,
        population=args.population,
        elites=args.population // 10,
        iterations=args.iterations,
    )
    agent = MPCAgent(model, CEM(cfg, model.config.action_dim), objective, seed=0)
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
    p.add_argument("--population", type=int, default=1000)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--iterations", type=int, default=3)
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
        for name, objective in (("learned", LearnedReward(head)), ("pixels", GoalImage("pixels"))):
            ms = measure(model, objective, args)
            figures[(preset, name)] = ms
            size = model.config.image_size
            print(f"svg-lp {preset} ({size} px), {name:<8} objective: {ms:8.1f} ms per planned action")
    first = args.presets[0]
    ms = figures[(first, "learned")]
    print(f"svg-lp {first} learned-reward MPC: {ms:.1f} ms per planned action ({budget})")


if __name__ == "__main__":
    main()
