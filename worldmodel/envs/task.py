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
``reach_weight`` times the 3-D distance from the end effector to the target object. The shaping
term matters: the push distance stays flat until the gripper touches the object, so neither a
short-horizon planner nor PPO would have anything to climb. ``is_success`` reads the distance
alone. The functions take NumPy arrays or torch tensors alike (same operations), so the env,
the dream and the planner compute the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "REST_ACTION",
    "TASKS",
    "TaskSpec",
    "distance",
    "reward",
    "sample_push_goal",
    "sample_reach_goal",
    "wilson_interval",
]

TASKS = ("push", "recorded-goal", "reach")

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
    recorded_k: int = 20
    """``recorded-goal``: the goal is the target's position this many steps later."""
    recorded_min_move: float | None = None
    """``recorded-goal``: least xy displacement of the target over the window (None: twice
    ``success_tolerance``)."""

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.name!r}")
        for field in ("success_tolerance", "reach_tolerance", "goal_area"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)}")
        if not self.reach_weight >= 0:
            raise ValueError(f"reach_weight must be >= 0, got {self.reach_weight}")
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
        return {"push": 50, "recorded-goal": 2 * int(self.recorded_k), "reach": 30}[self.name]

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
        r = r - w * _norm(ee_pos - target_pos)
    return r


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
