"""The settings of the PushTable world: ``PushTableConfig`` (no MuJoCo import).

Physics and control rate, the end-effector box, the objects' ranges, the task's numbers (its
rules live in ``worldmodel.envs.task``) and the camera. ``PushTableEnv`` (``push_table.py``)
builds its world from one.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldmodel.envs.scene import MAX_OBJECTS, SHAPES
from worldmodel.envs.task import TaskSpec

_TASK = TaskSpec()


@dataclass
class PushTableConfig:
    """Settings of the PushTable world. ``dataclasses.asdict`` of it is JSON-serialisable."""

    image_size: int = 64  # observations are (image_size, image_size, 3) uint8
    num_objects: int | None = None  # None: 1..MAX_OBJECTS drawn per episode
    shapes: tuple[str, ...] = SHAPES  # drawn per object, uniformly
    # Control: one env step = frame_skip physics steps of `timestep` seconds (default 10 Hz).
    timestep: float = 0.02
    frame_skip: int = 5
    action_scale: float = 0.03  # metres of end-effector target motion per step at |a| = 1
    max_lead: float = 0.05  # the target never runs further than this ahead of the real end effector
    # End-effector box (fingertip centre), metres; the table top is z = 0.
    ee_low: tuple[float, float, float] = (-0.22, -0.22, 0.01)
    ee_high: tuple[float, float, float] = (0.22, 0.22, 0.15)
    ee_start_z: tuple[float, float] = (0.09, 0.15)  # start height: above the tallest object
    # Objects (uniform ranges). Half-extents: box (hx, hy, hz); cylinder (r, h); ellipsoid (a, b, c).
    object_area: float = 0.17  # object centres start in [-area, area]^2
    half_xy: tuple[float, float] = (0.02, 0.045)
    half_z: tuple[float, float] = (0.015, 0.04)
    mass: tuple[float, float] = (0.05, 0.4)  # kg
    friction: tuple[float, float] = (0.2, 0.9)  # sliding friction (MuJoCo takes the max of the pair)
    # The task (worldmodel.envs.task holds its rules; these fields are its numbers).
    task: str = "push"  # push | recorded-goal | reach
    goal_area: float = _TASK.goal_area
    goal_min_distance: float = _TASK.goal_min_distance
    success_tolerance: float = _TASK.success_tolerance
    reach_tolerance: float = _TASK.reach_tolerance
    reach_weight: float = _TASK.reach_weight  # reward shaping: end effector to target (object tasks)
    push_offset: float = _TASK.push_offset  # shaping to the point this far behind the target (m)
    recorded_k: int = _TASK.recorded_k  # recorded-goal: the goal is the target this many steps later
    show_goal_marker: bool = True  # a flat dark-grey disc of radius success_tolerance on the table
    # Dict(observation, achieved_goal, desired_goal) observations (GoalEnv, for SB3's HER)
    goal_conditioned: bool = False
    # Camera (BAIR image_aux1-like: over the front edge, looking down at the table and the arm).
    camera_pos: tuple[float, float, float] = (0.0, -0.52, 0.62)
    camera_lookat: tuple[float, float, float] = (0.0, 0.1, 0.0)
    camera_fovy: float = 45.0

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.num_objects is not None and not 1 <= self.num_objects <= MAX_OBJECTS:
            raise ValueError(f"num_objects must be None or in 1..{MAX_OBJECTS}, got {self.num_objects}")
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        if self.frame_skip < 1 or self.timestep <= 0:
            raise ValueError("frame_skip must be >= 1 and timestep > 0")
        self.shapes = tuple(self.shapes)
        self.task_spec()  # validates the task's fields

    def task_spec(self) -> TaskSpec:
        """The task these settings describe (``worldmodel.envs.task``)."""
        return TaskSpec.of(self)
