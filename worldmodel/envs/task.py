"""The PushTable tasks, defined once: goals, success, reward and its shaping, the rest action.

The real env (``push_table.py``), the dreams (``dream.py``, ``dream_vec.py``), the planner's
objectives (``planning/objectives.py``) and the simulator oracle (``planning/oracle.py``) all
read the task from here, so an agent trained on the dream's reward optimises what the real sim
scores. Nothing here imports MuJoCo.

Three tasks:

- ``push``: push the target object's centre to within ``success_tolerance`` (xy) of a goal spot
  on the table, drawn uniformly in ``[-goal_area, goal_area]²`` at least ``goal_min_distance``
  from the target's start (the object must move).
- ``recorded-goal``: the protocol of DINO-WM and stable-worldmodel. An episode of the collection's
  scripted pushing policy is recorded in the sim; the task starts from its state at some step
  and aims at the target object's position ``recorded_k`` steps later, so every goal is known to
  be reachable (replaying the recorded actions reaches it). Only windows in which the target
  moved at least ``2 · success_tolerance`` are used, so that doing nothing fails. Success as in
  ``push``; the budget is ``2 · recorded_k`` steps.
- ``reach``: bring the end effector (fingertip centre) to within ``reach_tolerance`` (3-D) of a
  goal point above the table, drawn in the box ``reach_low``–``reach_high`` at least
  ``reach_min_distance`` from its start. The arm is what the models predict best: the first rung.

Reward per step (``reward``): minus the task's distance, and for the object tasks minus
``reach_weight`` times the 3-D distance from the end effector to the target object (with
``push_offset`` d > 0: to the point d behind the target, away from the goal, where a push towards
the goal starts; with the simulator as the model this raised the oracle planner from 0.60 to 0.75
on push and from 0.80 to 0.95 on recorded goal at d = 5 cm). The shaping term matters: the push
distance stays flat until the gripper touches the object, so neither a short-horizon planner
nor PPO would have anything to climb. ``is_success`` reads the distance alone. The functions
take NumPy arrays or torch tensors alike (same operations), so the env, the dream and the
planner compute the same numbers.

**info** — one set of keys for every face of the task: ``PushTable-v0``, ``Dream-v0``,
``DreamVecEnv`` (SB3) and ``DreamVectorEnv`` (``gymnasium.make_vec``). ``INFO_KEYS`` lists them,
``INFO_SPEC`` gives each one's type and shape (a vector face stacks them with a leading
``num_envs`` axis):

- ``distance`` float: the task's distance (``distance`` below; m). ``is_success`` bool: below the
  task's tolerance.
- ``goal_pos`` float32 ``(3,)``: the goal (object tasks: the target's goal centre, z its resting
  height; ``reach``: the point).
- ``target`` int: the target object's slot; ``num_objects`` int: objects present.
- ``object_pos`` float32 ``(MAX_OBJECTS, 3)``: the objects' centres, present ones in the first
  ``num_objects`` rows, zeros after them (a fixed shape, so vector envs stack it; zeros rather than
  NaN, so Gymnasium's checker can compare infos).
- ``target_pos`` float32 ``(3,)``: ``object_pos[target]``. ``ee_pos`` float32 ``(3,)``: the end
  effector (fingertip centre).

The real env reports the simulator's values. A dream reports what its state head reads off the
dreamed state (``ObjectHead``: every present object queried with its position at reset, and the
end effector), and at reset the start context's recorded positions (which the head's queries
are). What a dream cannot know it omits, always, never fills with NaN: with
``reward="goal-image"`` (no state head) only ``distance`` (the image distance) and
``is_success``; with a head that has no end-effector branch, no ``ee_pos``. Extras outside this
set: the dreams' ``pool_index`` (int, the start context's pool entry; -1 for a caller's context,
``reset(options=...)``) and SB3's / Gymnasium's own (``terminal_observation``,
``TimeLimit.truncated``, ``final_obs``, ``final_info``, ``episode``).

**Goal-conditioned observation** (``goal_conditioned=True`` in ``PushTable-v0`` and the dreams),
the Gymnasium-Robotics ``GoalEnv`` form that SB3's ``HerReplayBuffer`` needs:
``Dict(observation=<the usual observation>, achieved_goal=Box(3), desired_goal=Box(3))``
(``goal_space``). The achieved goal is ``target_pos`` for the object tasks and ``ee_pos`` for
``reach`` (``achieved_goal``); the desired goal is ``goal_pos``. ``compute_reward(spec,
achieved_goal, desired_goal, info)`` is the per-step ``reward`` from them, vectorised over a
batch; the object tasks' shaping term reads the end effector from ``info["ee_pos"]`` (give SB3's
``HerReplayBuffer`` ``copy_info_dict=True``, or set ``reach_weight=0``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from worldmodel.choices import check_choice

__all__ = [
    "INFO_KEYS",
    "INFO_SPEC",
    "MAX_EPISODE_STEPS",
    "REST_ACTION",
    "TASKS",
    "TaskSpec",
    "achieved_goal",
    "compute_reward",
    "distance",
    "goal_space",
    "reward",
    "sample_push_goal",
    "sample_reach_goal",
    "wilson_interval",
]

TASKS = ("push", "recorded-goal", "reach")

MAX_EPISODE_STEPS = 50
"""Steps of a ``push`` episode: ``PushTable-v0``'s and ``Dream-v0``'s registered
``max_episode_steps`` (``spec.max_episode_steps``) and the batched dreams' default horizon."""

MAX_OBJECTS = 4  # PushTable's object slots (worldmodel.envs.scene.MAX_OBJECTS; no MuJoCo import here)

INFO_SPEC: dict[str, tuple[type, tuple[int, ...]]] = {
    "distance": (float, ()),
    "is_success": (bool, ()),
    "goal_pos": (np.float32, (3,)),
    "target": (int, ()),
    "num_objects": (int, ()),
    "object_pos": (np.float32, (MAX_OBJECTS, 3)),
    "target_pos": (np.float32, (3,)),
    "ee_pos": (np.float32, (3,)),
}
"""Every info key of the task: ``(type, shape)`` of one env's value (see the module docstring)."""

INFO_KEYS = tuple(INFO_SPEC)

REST_ACTION = np.array([0.0, 0.0, 0.0, -1.0], np.float32)
"""The action that leaves the scene as ``reset`` left it: no motion, fingers open (the gripper
command is absolute, so a zero action would half-close them). Planners and encoders pad a context
that starts at the first frame with it: the scene held still."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Every number of a task. ``dataclasses.asdict`` of it is JSON-serialisable."""

    name: str = "push"
    """``push``, ``recorded-goal`` or ``reach``."""
    success_tolerance: float = 0.05
    """Object tasks: success when the target's centre is this close (xy, m) to the goal."""
    goal_area: float = 0.15
    """``push``: goals are drawn in ``[-goal_area, goal_area]²``."""
    goal_min_distance: float = 0.08
    """``push``: a goal is at least this far (xy) from the target's start."""
    reach_tolerance: float = 0.03
    """``reach``: success when the end effector is this close (3-D, m) to the goal."""
    reach_low: tuple[float, float, float] = (-0.18, -0.18, 0.03)
    reach_high: tuple[float, float, float] = (0.18, 0.18, 0.12)
    """``reach``: the box goals are drawn in (inside the end-effector box)."""
    reach_min_distance: float = 0.10
    """``reach``: a goal is at least this far (3-D) from the end effector's start."""
    reach_weight: float = 0.5
    """Object tasks: weight of the end-effector-to-target distance in the reward (shaping)."""
    push_offset: float = 0.0
    """Object tasks: where the shaping draws the end effector. 0: to the target's centre; d > 0:
    to the point ``d`` (m) behind the target, on the far side from the goal (xy) at the target's
    height, where moving towards the goal pushes the target there."""
    recorded_k: int = 20
    """``recorded-goal``: the goal is the target's position this many steps later."""
    recorded_min_move: float | None = None
    """``recorded-goal``: least xy displacement of the target over the window (None: twice
    ``success_tolerance``)."""

    def __post_init__(self) -> None:
        check_choice("task", self.name, TASKS)
        for field in ("success_tolerance", "reach_tolerance", "goal_area"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)}")
        if not self.reach_weight >= 0:
            raise ValueError(f"reach_weight must be >= 0, got {self.reach_weight}")
        if not 0 <= self.push_offset <= 0.2:
            raise ValueError(f"push_offset must be in [0, 0.2] m, got {self.push_offset}")
        if not 1 <= int(self.recorded_k) <= 100:
            raise ValueError(f"recorded_k must be in 1..100, got {self.recorded_k}")

    @classmethod
    def of(cls, config: Any) -> TaskSpec:
        """The task an env's or a dream's config describes: its ``task`` (the name) and every
        field of ``TaskSpec`` that the config also has (the others keep their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"name"}
        return cls(name=config.task, **{n: getattr(config, n) for n in names if hasattr(config, n)})

    @property
    def tolerance(self) -> float:
        """The success threshold on ``distance``."""
        return self.reach_tolerance if self.name == "reach" else self.success_tolerance

    @property
    def min_move(self) -> float:
        """``recorded-goal``: the least displacement of the target over the window."""
        return 2 * self.success_tolerance if self.recorded_min_move is None else self.recorded_min_move

    @property
    def budget(self) -> int:
        """Steps per episode: ``2 · recorded_k`` for ``recorded-goal``, 30 for ``reach``, 50 for
        ``push`` (PushTable-v0's time limit)."""
        return {"push": MAX_EPISODE_STEPS, "recorded-goal": 2 * int(self.recorded_k), "reach": 30}[self.name]

    @property
    def uses_objects(self) -> bool:
        """Whether the task is about an object (``push``, ``recorded-goal``) or the arm (``reach``)."""
        return self.name != "reach"


def distance(spec: TaskSpec, target_pos: Any, ee_pos: Any, goal: Any) -> Any:
    """The task's distance ``(...)``: target-goal in xy for the object tasks, end effector-goal in
    3-D for ``reach``. Arguments ``(..., 3)``, NumPy or torch (``target_pos`` unused by reach)."""
    if spec.name == "reach":
        return _norm(ee_pos - goal)
    return _norm(target_pos[..., :2] - goal[..., :2])


def reward(spec: TaskSpec, target_pos: Any, ee_pos: Any, goal: Any, reach_weight: float | None = None) -> Any:
    """Per-step reward: ``-distance``, minus ``reach_weight`` (default the spec's) times the
    end-effector-to-target distance for the object tasks (see the module docstring)."""
    r = -distance(spec, target_pos, ee_pos, goal)
    w = spec.reach_weight if reach_weight is None else float(reach_weight)
    if spec.uses_objects and w > 0:
        r = r - w * _reach_distance(spec, target_pos, ee_pos, goal)
    return r


def _reach_distance(spec: TaskSpec, target_pos: Any, ee_pos: Any, goal: Any) -> Any:
    """The shaping's 3-D distance from the end effector to where ``push_offset`` draws it."""
    if spec.push_offset == 0:
        return _norm(ee_pos - target_pos)
    # Elementwise on the coordinates, so NumPy arrays and torch tensors take the same path.
    gx, gy = goal[..., 0] - target_pos[..., 0], goal[..., 1] - target_pos[..., 1]
    scale = spec.push_offset / ((gx * gx + gy * gy) ** 0.5 + 1e-6)  # along the unit goal direction
    dx = ee_pos[..., 0] - (target_pos[..., 0] - scale * gx)
    dy = ee_pos[..., 1] - (target_pos[..., 1] - scale * gy)
    dz = ee_pos[..., 2] - target_pos[..., 2]
    return (dx * dx + dy * dy + dz * dz) ** 0.5


def achieved_goal(spec: TaskSpec, target_pos: Any, ee_pos: Any) -> Any:
    """The goal-conditioned observation's achieved goal ``(..., 3)``: the target object's position
    for the object tasks, the end effector's for ``reach``."""
    return ee_pos if spec.name == "reach" else target_pos


def compute_reward(spec: TaskSpec, achieved: Any, desired: Any, info: Any) -> Any:
    """``reward`` from an achieved goal ``(..., 3)`` and a desired goal ``(..., 3)``: a float for
    one pair, float64 ``(B,)`` for a batch (``GoalEnv.compute_reward``, what SB3's
    ``HerReplayBuffer`` calls on relabelled goals).

    ``info``: the step's info dict, or a sequence (or object array) of ``B`` of them. Only the
    object tasks' shaping reads it (``info["ee_pos"]``, the end effector after the step); with
    ``reach`` or ``reach_weight == 0`` it may be empty."""
    achieved = np.asarray(achieved, np.float64)
    desired = np.asarray(desired, np.float64)
    if achieved.shape[-1:] != (3,) or desired.shape[-1:] != (3,):
        raise ValueError(
            f"compute_reward: achieved_goal and desired_goal must be (..., 3), got {achieved.shape}, "
            f"{desired.shape}"
        )
    if spec.name == "reach":
        r = reward(spec, achieved, achieved, desired)
    elif spec.reach_weight > 0:
        r = reward(spec, achieved, _info_ee(info, achieved.shape), desired)
    else:
        r = -distance(spec, achieved, achieved, desired)
    return float(r) if np.ndim(r) == 0 else np.asarray(r, np.float64)


def _info_ee(info: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``info["ee_pos"]`` of one info dict or of a batch of them, broadcast to ``shape``."""
    try:
        if isinstance(info, dict):
            ee = np.asarray(info["ee_pos"], np.float64)
        else:
            ee = np.stack([np.asarray(i["ee_pos"], np.float64) for i in np.asarray(info, object).reshape(-1)])
        return np.broadcast_to(ee.reshape(shape) if ee.size == int(np.prod(shape)) else ee, shape)
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            "compute_reward: the object tasks' shaping reads info['ee_pos'] (one info dict or one per "
            "goal); pass SB3's HerReplayBuffer copy_info_dict=True, or make the env with reach_weight=0"
        ) from None


class GoalConditionedReward:
    """``compute_reward`` for an env whose ``config.goal_conditioned`` may be set (PushTable-v0 and
    Dream-v0): present only then, since SB3's and Gymnasium-Robotics' checkers take an env that has
    it for a GoalEnv; the env implements ``_compute_reward(achieved_goal, desired_goal, info)``."""

    @property
    def compute_reward(self) -> Any:
        """``compute_reward(achieved_goal, desired_goal, info)``: the task's reward for goals
        ``(..., 3)`` (a float for one pair, ``(B,)`` for a batch)."""
        if not self.config.goal_conditioned:
            raise AttributeError("compute_reward: only with goal_conditioned=True")
        return self._compute_reward


def goal_space(observation: Any) -> Any:
    """``Dict(observation=observation, achieved_goal=Box(3), desired_goal=Box(3))``: the
    goal-conditioned observation space (unbounded float32 goals, as Gymnasium-Robotics')."""
    from gymnasium import spaces

    goal = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    return spaces.Dict({"observation": observation, "achieved_goal": goal, "desired_goal": goal})


def _norm(x: Any) -> Any:
    """Euclidean norm over the last axis, for NumPy arrays and torch tensors alike."""
    return (x * x).sum(-1) ** 0.5


def sample_push_goal(
    spec: TaskSpec,
    rng: np.random.Generator,
    target_xy: np.ndarray,
    clearance: list[tuple[float, float, float]] = (),
    target_radius: float = 0.0,
    margin: float = 0.005,
    tries: int = 200,
) -> np.ndarray:
    """A ``push`` goal ``(2,)``: uniform in the goal area, ``goal_min_distance`` from ``target_xy``
    and clear of the other objects' footprints ``clearance`` (``(x, y, radius)`` each) by
    ``target_radius + margin``. After ``tries`` rejections the last draw is kept."""
    a = spec.goal_area
    goal = rng.uniform(-a, a, size=2)
    finite = np.isfinite(target_xy).all()
    for _ in range(tries):
        far = not finite or np.hypot(goal[0] - target_xy[0], goal[1] - target_xy[1]) >= spec.goal_min_distance
        free = all(np.hypot(goal[0] - x, goal[1] - y) > target_radius + r + margin for x, y, r in clearance)
        if far and free:
            break
        goal = rng.uniform(-a, a, size=2)
    return goal


def sample_reach_goal(
    spec: TaskSpec, rng: np.random.Generator, ee: np.ndarray, tries: int = 200
) -> np.ndarray:
    """A ``reach`` goal ``(3,)`` in the reach box, ``reach_min_distance`` from ``ee``."""
    low, high = np.asarray(spec.reach_low), np.asarray(spec.reach_high)
    goal = rng.uniform(low, high)
    for _ in range(tries):
        if not np.isfinite(ee).all() or np.linalg.norm(goal - ee) >= spec.reach_min_distance:
            break
        goal = rng.uniform(low, high)
    return goal


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (``(nan, nan)`` for ``n == 0``).

    Wilson rather than the normal approximation: it stays inside [0, 1] and is not empty at 0/n,
    which is where a planner that fails sits."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
