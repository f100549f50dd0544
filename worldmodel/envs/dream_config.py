"""The options of ``worldmodel/Dream-v0`` and the batched dreams: ``DreamConfig``.

Every field is also a ``gym.make("worldmodel/Dream-v0", ...)`` keyword, checked here at
construction. Episode length: ``horizon`` (None by default: ``Dream-v0`` leaves it to
``gym.make``'s ``TimeLimit``, registered at ``MAX_EPISODE_STEPS`` = 50; the batched envs use 50).
"""

from __future__ import annotations

import dataclasses

from worldmodel.choices import check_choice
from worldmodel.dynamics.inference import DTYPES
from worldmodel.envs import task as tasks
from worldmodel.envs.task import MAX_EPISODE_STEPS, TaskSpec

REWARDS = ("learned", "goal-image")
OBS_TYPES = ("pixels", "latent")
GOAL_DISTANCES = ("pixels", "features")


@dataclasses.dataclass
class DreamConfig:
    """Options of ``Dream-v0`` / ``DreamVecEnv`` (every field is also a ``gym.make`` keyword)."""

    data: str | None = None
    """Dataset folder for start contexts; ``None``: fresh episodes of the real sim."""
    split: str = "test"
    """Dataset split the contexts come from."""
    reward: str = "learned"
    """``"learned"`` (object-position head, goal position) or ``"goal-image"``."""
    goal_distance: str = "pixels"
    """For ``goal-image``: ``"pixels"`` or ``"features"``."""
    obs: str = "pixels"
    """``"pixels"`` (uint8 ``(H, W, 3)``, as the real env) or ``"latent"`` (float32 ``features``)."""
    horizon: int | None = None
    """Steps per episode; the last one returns ``truncated=True``. ``None``: ``Dream-v0`` does not
    truncate on its own: under ``gym.make`` its ``TimeLimit`` (``spec.max_episode_steps``,
    registered ``MAX_EPISODE_STEPS`` = 50, changed by ``gym.make(..., max_episode_steps=k)``) ends
    the episode, as ``PushTable-v0``'s does; the batched dreams use ``MAX_EPISODE_STEPS`` (or
    ``gym.make_vec``'s ``max_episode_steps``)."""
    temperature: float = 1.0
    """Scales the model's sampling noise (0: the mean dream)."""
    pool_size: int = 64
    """Start contexts drawn at construction."""
    pool_seed: int = 0
    """Seed of the pool (sim episodes or dataset episodes chosen)."""
    context_frames: int | None = None
    """Context length; ``None``: the model's ``n_past``."""
    task: str = "push"
    """``push``, ``recorded-goal`` (sim pools: the real env's recorded-goal starts) or ``reach``
    (``worldmodel.envs.task``); with ``reward="learned"`` the reward is that task's, as the real
    env computes it, on the state head's predictions."""
    success_tolerance: float = tasks.TaskSpec.success_tolerance
    """``learned``: success within this xy distance (m), as the real env."""
    reach_tolerance: float = tasks.TaskSpec.reach_tolerance
    """``learned``, ``reach``: success within this 3-D distance (m), as the real env."""
    reach_weight: float = tasks.TaskSpec.reach_weight
    """``learned``, object tasks: the reward's end-effector-to-target shaping (needs a head with
    an end-effector branch; 0 turns it off)."""
    push_offset: float = tasks.TaskSpec.push_offset
    """``learned``, object tasks: the shaping draws the end effector this far behind the target
    (``TaskSpec.push_offset``; 0: to its centre)."""
    image_tolerance: float = 0.05
    """``goal-image``: success below this distance."""
    latent_bound: float = 10.0
    """``latent`` observations are clipped to ±this (SVG features are tanh outputs, in [-1, 1])."""
    task_obs: bool = False
    """``obs="latent"``, ``reward="learned"``: append the dreamed end effector (the state head's
    reading) and the episode's goal to the features, ``(F + 6,)``, a goal-conditioned observation
    (the goal is not in the pixels for ``reach``); with a head that integrates the objects also the
    target where the dream carries it, ``(F + 9,)`` (the features do not carry the objects, so
    without it a pushing policy pushes blind). In the real env
    ``worldmodel.envs.latent.LatentObservation`` appends the true end effector (proprioception), the
    goal and the target carried the same way from its position at the reset."""
    goal_conditioned: bool = False
    """``reward="learned"``: observations ``Dict(observation=<pixels or latent>,
    achieved_goal=Box(3), desired_goal=Box(3))`` (Gymnasium-Robotics' ``GoalEnv``, SB3's
    ``HerReplayBuffer``), as ``PushTable-v0(goal_conditioned=True)``; the achieved goal is the state
    head's dreamed target (``reach``: end effector), at reset the context's recorded one."""
    image_size: int = 64
    """Observation size; must equal the model's (64 gives PushTable's spaces)."""
    channels_last: bool = True
    """Store the inference copy's 2-D convolution weights channels-last: batched convolutions then
    run on the faster NHWC kernels (1.5× for the tiny SVG at 256 envs on CPU)."""
    dtype: str = "auto"
    """``"float32"``, ``"bfloat16"`` (the model's convolutions in bf16, see
    ``worldmodel.dynamics.inference``; 1.6x faster batched SVG steps than float32 on an
    AVX-512-BF16 CPU, frames differ from float32 by bf16 rounding) or ``"auto"``: bf16 on a CUDA
    device that supports it for models that have a bf16 path, else float32. Either way a seeded
    dream repeats bit for bit on the CPU; the float32 copy matches the original model to float
    rounding, not bit for bit."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("reward", self.reward, REWARDS),
            ("obs", self.obs, OBS_TYPES),
            ("goal_distance", self.goal_distance, GOAL_DISTANCES),
        ):
            check_choice(name, value, allowed)
        if self.horizon is not None and not self.horizon >= 1:
            raise ValueError(f"horizon must be None or >= 1, got {self.horizon}")
        if not self.pool_size >= 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.context_frames is not None and self.context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {self.context_frames}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.task_spec()  # validates the task's fields
        if self.task != "push" and self.reward != "learned":
            raise ValueError(f"task={self.task!r} needs reward='learned' (goal images score push only)")
        if self.task_obs and (self.obs != "latent" or self.reward != "learned"):
            raise ValueError("task_obs=True needs obs='latent' and reward='learned' (a state head)")
        if self.goal_conditioned and self.reward != "learned":
            raise ValueError(
                "goal_conditioned=True needs reward='learned' (the achieved goal is the state head's)"
            )
        if self.goal_conditioned and self.task_obs:
            raise ValueError(
                "goal_conditioned=True puts the goal in desired_goal, task_obs=True in the observation: "
                "choose one (HER relabels desired_goal only)"
            )

    @property
    def episode_steps(self) -> int:
        """The batched dreams' episode length: ``horizon``, else ``MAX_EPISODE_STEPS``."""
        return int(self.horizon) if self.horizon is not None else MAX_EPISODE_STEPS

    def task_spec(self) -> TaskSpec:
        """The task these options describe."""
        return TaskSpec.of(self)


def reads_ee(cfg: DreamConfig) -> bool:
    """Whether the learned reward reads the gripper (reach, or the object tasks' shaping)."""
    return cfg.task == "reach" or cfg.reach_weight > 0
