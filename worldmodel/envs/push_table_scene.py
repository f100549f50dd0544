"""A PushTable episode's random scene, drawn without MuJoCo (``draw_scene``).

``scene.py`` builds the fixed MJCF, compiled once per env; this module draws what changes per
episode, from the env's ``np_random`` in a fixed order: 1–``MAX_OBJECTS`` objects (shape among
box / cylinder / ellipsoid, size, colour, mass, friction: ``Objects``), their non-overlapping
positions and yaws, the push task's target and goal spot, and the arm's start. ``PushTableEnv``
writes the draws into the simulation (``push_table_sim.apply_objects``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from worldmodel.envs import task as tasks
from worldmodel.envs.push_table_config import PushTableConfig
from worldmodel.envs.scene import MAX_OBJECTS, SHAPES
from worldmodel.envs.task import TaskSpec

OBJECT_MARGIN = 0.005  # gap kept between objects (and between the goal and other objects) when placing


@dataclass
class Objects:
    """Per-episode object parameters (part of the env state)."""

    shape: np.ndarray = field(default_factory=lambda: np.zeros(MAX_OBJECTS, np.int64))  # -1: absent
    size: np.ndarray = field(default_factory=lambda: np.zeros((MAX_OBJECTS, 3)))
    rgba: np.ndarray = field(default_factory=lambda: np.ones((MAX_OBJECTS, 4)))
    mass: np.ndarray = field(default_factory=lambda: np.full(MAX_OBJECTS, 0.1))
    friction: np.ndarray = field(default_factory=lambda: np.full(MAX_OBJECTS, 0.5))

    def rest_height(self, i: int) -> float:
        """Height of object ``i``'s centre when it rests on the table."""
        return float(self.size[i, 2])

    def footprint(self, i: int) -> float:
        """Radius of object ``i``'s xy footprint (circumscribed)."""
        a, b, _ = self.size[i]
        return float(np.hypot(a, b)) if SHAPES[int(self.shape[i])] == "box" else float(max(a, b))


@dataclass
class Scene:
    """One ``push`` reset's draws (``draw_scene``)."""

    objects: Objects
    xy: list[np.ndarray]
    """The present objects' centres, ``(2,)`` each."""
    yaw: np.ndarray
    """``(MAX_OBJECTS,)`` the objects' rotations about the vertical (rad)."""
    target: int
    goal: np.ndarray
    """``(3,)`` the goal spot at the target's resting centre height."""
    ee: np.ndarray
    """``(3,)`` the end effector's start, above the table."""


def draw_scene(cfg: PushTableConfig, spec: TaskSpec, rng: np.random.Generator, n: int) -> Scene:
    """Draw ``n`` objects, their poses (rejection sampling for non-overlapping footprints), the
    push task (a target among them and a free goal spot) and the arm's start."""
    obj = draw_objects(cfg, rng, n)

    # Object poses: rejection sampling for non-overlapping footprints.
    placed: list[tuple[float, float, float]] = []
    centres: list[np.ndarray] = []
    yaws = rng.uniform(-np.pi, np.pi, size=MAX_OBJECTS)
    for i in range(n):
        r = obj.footprint(i)
        lim = cfg.object_area
        xy = rng.uniform(-lim, lim, size=2)
        for _ in range(200):
            if all(np.hypot(xy[0] - px, xy[1] - py) > r + pr + OBJECT_MARGIN for px, py, pr in placed):
                break
            xy = rng.uniform(-lim, lim, size=2)
        placed.append((float(xy[0]), float(xy[1]), r))
        centres.append(xy)

    # Task: a target among the present objects and a free goal spot.
    target = int(rng.integers(n))
    tx, ty, tr = placed[target]
    others = [p for j, p in enumerate(placed) if j != target]
    goal = tasks.sample_push_goal(spec, rng, np.array([tx, ty]), others, tr, OBJECT_MARGIN)

    # Arm: end effector above the table (the env opens the fingers).
    low, high = np.array(cfg.ee_low), np.array(cfg.ee_high)
    ee = np.array([*rng.uniform(low[:2], high[:2]), rng.uniform(*cfg.ee_start_z)])
    goal3 = np.array([goal[0], goal[1], obj.rest_height(target)])
    return Scene(objects=obj, xy=centres, yaw=yaws, target=target, goal=goal3, ee=ee)


def draw_objects(cfg: PushTableConfig, rng: np.random.Generator, n: int) -> Objects:
    """``n`` objects' shapes, sizes, colours, masses and frictions (the rest absent)."""
    obj = Objects()
    obj.shape[:] = -1
    for i in range(n):
        k = SHAPES.index(cfg.shapes[int(rng.integers(len(cfg.shapes)))])
        obj.shape[i] = k
        hx, hy = rng.uniform(*cfg.half_xy, size=2)
        hz = rng.uniform(*cfg.half_z)
        if SHAPES[k] == "cylinder":
            hy = hx
        elif SHAPES[k] == "ellipsoid":
            hz = min(hz, 0.8 * min(hx, hy))  # flattened: rests stably on its bottom
        obj.size[i] = (hx, hy, hz)
        hue = rng.uniform(0.0, 1.0)
        obj.rgba[i, :3] = hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 0.95))
        obj.mass[i] = rng.uniform(*cfg.mass)
        obj.friction[i] = rng.uniform(*cfg.friction)
    return obj


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV in [0, 1] to RGB in [0, 1]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
