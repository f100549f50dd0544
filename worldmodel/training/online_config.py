"""Settings of an online model-based RL run (``OnlineConfig``; the loop: ``worldmodel.training.online``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.choices import check_choice
from worldmodel.envs.task import TASKS, TaskSpec

PLANNERS = ("cem", "icem")
FREE_ON_RESUME = ("out", "iterations", "device", "ppo_run")
"""Settings a resumed run may change: where the run folder is, how far to go, where to compute."""


@dataclasses.dataclass
class OnlineConfig:
    """Settings of one online run; ``worldmodel online`` flags map onto these fields."""

    out: Path
    """Run folder (``worldmodel.training.online``); an existing one is resumed."""
    data: Path
    """The initial dataset (a finished ``worldmodel collect`` folder); never written."""
    checkpoint: Path | None = None
    """Initial model with a state head (``--set state_head=true``); ``None``: train one."""
    model: str = "svg-lp"
    """Without ``checkpoint``: the model to train on the initial data ..."""
    preset: str | None = "tiny"
    """... its preset ..."""
    model_set: dict[str, Any] = dataclasses.field(default_factory=dict)
    """... config overrides (``state_head`` is always on; ``image_size`` the data's) ..."""
    initial_steps: int = 1000
    """... and its optimiser steps."""
    iterations: int = 3
    """Collect / fine-tune / evaluate rounds after iteration 0."""
    episodes_per_iter: int = 16
    """Real episodes collected per iteration (of the dataset's ``seq_len`` steps each)."""
    train_steps: int = 200
    """Optimiser steps of fine-tuning per iteration."""
    batch_size: int | None = None
    """Training batch (``None``: the model's)."""
    lr: float | None = None
    """Learning rate of the fine-tuning (``None``: the checkpoint's optimiser's)."""
    task: str = "push"
    """``push``, ``recorded-goal`` or ``reach``: what the planner aims at and is judged on."""
    recorded_k: int = 20
    reach_weight: float = 0.5
    push_offset: float = 0.0
    """The task's numbers (``TaskSpec``)."""
    max_steps: int | None = None
    """Steps of an evaluation episode (``None``: the task's budget)."""
    eval_episodes: int = 20
    """Evaluation episodes per iteration (a multiple of ``envs``)."""
    envs: int = 4
    """Episodes run side by side, planned as one batch (divides the episode counts)."""
    explore_noise: float = 0.3
    """Std of the Gaussian noise added to the planned actions while collecting (0: none)."""
    planner: str = "cem"
    population: int = 400
    elites: int | None = None
    horizon: int = 10
    plan_iterations: int = 3
    replan_every: int = 1
    temperature: float = 1.0
    """The planner (``cem`` or ``icem``) and the model's sampling temperature, as ``worldmodel plan``."""
    num_objects: int | None = None
    """Objects per episode (``None``: as the initial dataset was collected)."""
    seed: int = 0
    """Seeds the episodes, the planner, the exploration noise and the training."""
    device: str = "auto"
    ppo_run: Path | None = None
    """An ``agents.train_real`` run folder to compare against (read only)."""

    def __post_init__(self) -> None:
        self.out, self.data = Path(self.out), Path(self.data)
        self.checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        self.ppo_run = None if self.ppo_run is None else Path(self.ppo_run)
        check_choice("task", self.task, TASKS)
        check_choice("planner", self.planner, PLANNERS)
        self._check_numbers()
        if self.elites is not None and not 1 <= self.elites < self.population:
            raise ValueError(f"elites ({self.elites}) must be in 1..population-1 ({self.population - 1})")
        if not 1 <= self.replan_every <= self.horizon:
            raise ValueError(f"replan_every must be in 1..horizon ({self.horizon}), got {self.replan_every}")
        if self.checkpoint is None and self.initial_steps < 1:
            raise ValueError("without a checkpoint the loop trains one: initial_steps must be >= 1")
        self.spec()  # checks the task's numbers

    def _check_numbers(self) -> None:
        """Counts, bounds and finite numbers (what the CLI's flag types check, for library callers)."""
        # field -> (lowest value, highest value or None, may be None)
        whole = {"episodes_per_iter": (1, None, False), "train_steps": (1, None, False)}
        whole.update(eval_episodes=(1, None, False), envs=(1, None, False), horizon=(1, None, False))
        whole.update(iterations=(0, None, False), initial_steps=(0, None, False), seed=(0, None, False))
        whole.update(max_steps=(1, None, True), batch_size=(1, None, True), num_objects=(1, 4, True))
        whole.update(population=(2, None, False), plan_iterations=(1, None, False))
        for name, (low, high, optional) in whole.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"in {low}..{high}"
                raise ValueError(f"{name} must be a whole number {bound}, got {value!r}")
        for name, positive in (("lr", True), ("temperature", False), ("explore_noise", False)):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
        for name in ("episodes_per_iter", "eval_episodes"):
            if getattr(self, name) % self.envs:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of envs ({self.envs}): every "
                    "env runs the same number of episodes"
                )

    def spec(self) -> TaskSpec:
        """The task."""
        numbers = {"reach_weight": self.reach_weight, "push_offset": self.push_offset}
        return TaskSpec(name=self.task, recorded_k=self.recorded_k, **numbers)

    @property
    def eval_steps(self) -> int:
        """Steps of an evaluation episode."""
        return int(self.max_steps or self.spec().budget)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (``OUT/settings.json``)."""
        out = dataclasses.asdict(self)
        for key in ("out", "data", "checkpoint", "ppo_run"):
            out[key] = None if out[key] is None else str(Path(out[key]).resolve())
        return out
