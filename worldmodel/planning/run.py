"""Plan in the real sim from Python: ``plan(PlanJob(...))``, what ``worldmodel plan`` runs.

The learned model (``MPCAgent`` with the job's objective and planner), the simulator as an oracle
(``OracleAgent`` over ``SimOracle``, skipped with ``oracle_budget=0``) and uniform random actions
play the same seeded episodes of one task in ``worldmodel/PushTable-v0``; ``plan`` returns the
report (``task``, ``max_steps``, and per agent ``success_rate``, ``successes``, ``ci95``,
``final_distance``, ``ms_per_action``, ``episodes``; on push and recorded goal with the learned
objective, the model's entry also has ``prediction_check``: its readings of the target object at
each plan against the sim's, ``worldmodel.planning.prediction_check``). Notes go to ``say``.

    from worldmodel.planning.run import PlanJob, plan

    report = plan(PlanJob("runs/svg/checkpoints/last.pt", task="reach", episodes=20))
    report["model"]["success_rate"], report["random"]["success_rate"]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldmodel.choices import check_choice

PLANNERS = ("cem", "icem", "mppi", "grad")
OBJECTIVES = ("auto", "learned", "pixels", "features")


@dataclasses.dataclass
class PlanJob:
    """One comparison of the learned planner, the oracle and random actions (the flags of
    ``worldmodel plan``, which documents each)."""

    checkpoint: str | os.PathLike
    task: str = "push"
    recorded_k: int = 20
    episodes: int = 4
    planner: str = "cem"
    population: int = 400
    elites: int | None = None
    horizon: int = 10
    iterations: int = 3
    replan_every: int = 1
    objective: str = "auto"
    head: str | None = None
    temperature: float = 1.0
    particles: int = 1
    """Noise draws per candidate; the learned planner averages their returns."""
    score_frames: str = "all"
    """``all``: the learned planner sums the reward over the horizon; ``last``: its last step only."""
    oracle_budget: int = 32
    reach_weight: float = 0.5
    learned_reach_weight: float | None = None
    push_offset: float = 0.0
    max_steps: int | None = None
    """Steps per episode; ``None``: the task's budget."""
    envs: int = 1
    num_objects: int | None = None
    seed: int = 0
    device: str = "auto"
    record: bool = False
    """Keep env 0's real | imagined | goal frames (``plan``'s ``trace``) for a video."""

    def __post_init__(self) -> None:
        check_choice("--planner", self.planner, PLANNERS)
        check_choice("--objective", self.objective, OBJECTIVES)
        if self.max_steps is None:
            self.max_steps = _spec(self).budget
        _check_counts(self)


def plan(job: PlanJob, say: Callable[[str], None] = lambda _: None) -> tuple[dict[str, Any], list]:
    """Run the three agents on the same episodes; returns ``(report, trace)`` (``trace``: env 0's
    frames per step when ``job.record``, else empty)."""
    import torch

    from worldmodel.dynamics import load
    from worldmodel.envs.push_table import REST_ACTION
    from worldmodel.planning import MPCAgent, OracleAgent, RandomAgent, run_episodes
    from worldmodel.planning.oracle import SimOracle
    from worldmodel.planning.prediction_check import checkable

    torch.manual_seed(job.seed)
    ckpt = Path(job.checkpoint)
    model = load(ckpt, device=job.device)
    kind, objective = _objective(job, ckpt, model)
    planner, oracle_planner, oracle_name = _planners(job, model.config.action_dim)
    mpc = MPCAgent(model, planner, objective, job.replan_every, seed=job.seed, rest_action=REST_ACTION,
                   check_predictions=checkable(objective))  # fmt: skip
    mpc.record = job.record
    venv = _venv(job, model.config.image_size)
    agents = {"model": mpc, "random": RandomAgent(model.config.action_dim, seed=job.seed)}
    if oracle_planner is not None:
        oracle = SimOracle(venv.get_attr("config", indices=[0])[0], reach_weight=job.reach_weight)
        agents["oracle"] = OracleAgent(oracle_planner, oracle, job.replan_every, seed=job.seed)
    results: dict[str, dict | None] = {"model": None, "oracle": None, "random": None}
    try:
        for name in ("model", "oracle", "random"):
            if name in agents:
                say(f"running {name} for {job.episodes} episode(s)...")
                results[name] = run_episodes(agents[name], venv, job.episodes, seed=job.seed)
    finally:
        venv.close()
    results["model"].update(objective=kind, planner=job.planner, population=job.population)
    if mpc.prediction_check is not None:
        results["model"]["prediction_check"] = mpc.prediction_check.summary()
    if results["oracle"] is not None:
        results["oracle"].update(planner=oracle_name, population=job.oracle_budget)
    report = {"task": job.task, "max_steps": job.max_steps, **results}
    if job.task == "recorded-goal":
        report["recorded_k"] = job.recorded_k
    return report, mpc.trace


def video_frames(trace: list[dict], size: int):
    """uint8 ``(T, h, 3w, 3)``: real | imagined | goal per step, upscaled to about 64 px."""
    import numpy as np

    scale = max(1, 64 // size)
    rows = []
    for step in trace:
        blank = np.zeros_like(step["real"])
        parts = [step["real"], step["imagined"] if step["imagined"] is not None else blank]
        parts.append(step["goal"] if step["goal"] is not None else blank)
        row = np.concatenate(parts, axis=1)
        rows.append(row.repeat(scale, 0).repeat(scale, 1))
    return np.stack(rows)


def _objective(job: PlanJob, ckpt: Path, model):
    from worldmodel.dynamics.heads import select_head
    from worldmodel.planning import GoalImage, LearnedReward

    options = {
        "temperature": job.temperature,
        "sample": job.temperature > 0,
        "particles": job.particles,
        "frames": job.score_frames,
    }
    kind = job.objective
    head = None
    if job.head or kind in ("auto", "learned"):
        # --head, else the model's own state head, else the checkpoint's; refused when stale or
        # fitted to another model (a different feature size).
        head, _ = select_head(ckpt, model, job.head)
        if head is None and (kind == "learned" or job.task == "reach"):
            raise ValueError(
                f"{ckpt}: --objective learned (and --task reach) needs a state head: train the model with "
                "--set state_head=true or run `worldmodel train-head`"
            )
    if kind == "learned" or (kind == "auto" and head is not None):
        weight = job.reach_weight if job.learned_reach_weight is None else job.learned_reach_weight
        return "learned", LearnedReward(head, task=_spec(job), reach_weight=weight, **options)
    if job.task == "reach":
        raise ValueError("--task reach is scored on the gripper's position: use --objective learned")
    kind = "pixels" if kind == "auto" else kind
    return kind, GoalImage(kind, **options)


def _planners(job: PlanJob, action_dim: int):
    """The model's planner, the oracle's (None with --oracle-budget 0) and the oracle's planner name:
    the simulator has no gradient, so ``grad``'s oracle plans with ``cem``."""
    from worldmodel.planning import CEM, MPPI, CEMConfig, GradientConfig, GradientPlanner, MPPIConfig

    planning = {"horizon": job.horizon, "iterations": job.iterations}
    if job.planner == "mppi":
        model = MPPI(MPPIConfig.mppi(population=job.population, elites=job.elites, **planning), action_dim)
        if not job.oracle_budget:
            return model, None, None
        return model, MPPI(MPPIConfig.mppi(population=job.oracle_budget, **planning), 4), "mppi"
    make_config = CEMConfig.icem if job.planner == "icem" else CEMConfig.cem
    config = make_config(population=job.population, elites=job.elites, **planning)
    if job.planner == "grad":
        model = GradientPlanner(GradientConfig.cem_adam(config), action_dim)
    else:
        model = CEM(config, action_dim)
    if not job.oracle_budget:
        return model, None, None
    elites = min(job.oracle_budget - 1, max(2, min(config.elites, job.oracle_budget // 4)))
    oracle_cfg = make_config(population=job.oracle_budget, elites=elites, **planning)
    return model, CEM(oracle_cfg, 4), "icem" if job.planner == "icem" else "cem"


def _spec(job: PlanJob):
    from worldmodel.envs.task import TaskSpec

    return TaskSpec(
        name=job.task, reach_weight=job.reach_weight, recorded_k=job.recorded_k, push_offset=job.push_offset
    )


def _venv(job: PlanJob, image_size: int):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import worldmodel

    kw = {"image_size": image_size, "max_episode_steps": job.max_steps, "task": job.task}
    kw.update(recorded_k=job.recorded_k, reach_weight=job.reach_weight, push_offset=job.push_offset)
    if job.num_objects is not None:
        kw["num_objects"] = job.num_objects
    return DummyVecEnv([lambda: gym.make(worldmodel.PUSH_TABLE_ID, **kw) for _ in range(job.envs)])


def _check_counts(job: PlanJob) -> None:
    if job.envs < 1 or job.episodes < 1 or job.episodes % job.envs:
        # SB3's evaluate_policy gives env i episodes // envs (+1 for the first ones); envs that are
        # done keep stepping and would keep planning, which skews the timing and the video.
        raise ValueError(f"--episodes ({job.episodes}) must be a positive multiple of --envs ({job.envs})")
    if job.elites is not None and job.elites >= job.population:
        raise ValueError(
            f"--elites ({job.elites}) must be < --population ({job.population}): refitting to every "
            "candidate never selects; leave --elites out for 10% of the population"
        )
    if job.oracle_budget and job.oracle_budget < 2:
        raise ValueError(f"--oracle-budget must be 0 (skip the oracle) or >= 2, got {job.oracle_budget}")
