"""The MuJoCo side of PushTable: the headless ``mujoco`` import and what writes into the model.

Rendering is headless. ``MUJOCO_GL`` is set to ``"egl"`` here, before ``import mujoco``, unless it is
already set (``osmesa`` and ``glfw`` also work); if no OpenGL backend can be created the first render
raises ``RuntimeError`` saying what to set (``make_renderer``). ``push_table.py`` takes ``mujoco``
from here, so this module is what imports it first.

The model is compiled once (``scene.build_mjcf``); per episode ``apply_objects`` writes the drawn
objects into its per-geom fields, and ``pose_arm_links`` poses the arm's column and links (mocap
bodies without contacts, there to be seen) from the palm position.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from worldmodel.envs import scene
from worldmodel.envs.push_table_scene import Objects
from worldmodel.envs.scene import MAX_OBJECTS, SHAPES

NO_GL = (
    "No OpenGL backend found: set MUJOCO_GL=egl (headless, needs libEGL, e.g. Debian libegl1 libgl1), "
    "MUJOCO_GL=osmesa (software, needs libosmesa6 and PyOpenGL) or MUJOCO_GL=glfw (needs a display) "
    "before importing mujoco."
)
try:
    import mujoco
except ModuleNotFoundError:
    raise
except Exception as _err:  # PyOpenGL raises AttributeError/ImportError/OSError when the backend is missing
    raise RuntimeError(
        f"importing mujoco failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {_err!r}. {NO_GL}"
    ) from _err

STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
"""The part of the MuJoCo state ``get_state`` / ``set_state`` save and restore."""


def apply_objects(
    model: mujoco.MjModel, data: mujoco.MjData, obj: Objects, obj_body: list[int], obj_geom: list[list[int]]
) -> None:
    """Write the per-episode object parameters ``obj`` into the model (size, inertia, colour,
    contacts); ``obj_body`` and ``obj_geom`` are the slots' body ids and their geom ids, one per
    shape."""
    m = model
    for i in range(MAX_OBJECTS):
        k = int(obj.shape[i])
        for j, g in enumerate(obj_geom[i]):
            shown = j == k
            m.geom_group[g] = 0 if shown else scene.HIDDEN_GROUP
            m.geom_contype[g] = 1 if shown else 0
            m.geom_conaffinity[g] = 3 if shown else 0
        b = obj_body[i]
        m.body_gravcomp[b] = 0.0 if k >= 0 else 1.0
        if k < 0:
            continue
        g = obj_geom[i][k]
        a, bb, c = obj.size[i]
        mass = float(obj.mass[i])
        shape = SHAPES[k]
        if shape == "box":
            m.geom_size[g] = (a, bb, c)
            inertia = mass / 3.0 * np.array([bb * bb + c * c, a * a + c * c, a * a + bb * bb])
            half = (a, bb, c)
            rbound = float(np.sqrt(a * a + bb * bb + c * c))
        elif shape == "cylinder":
            m.geom_size[g] = (a, c, 0.0)
            inertia = np.array([mass * (3 * a * a + 4 * c * c) / 12.0] * 2 + [mass * a * a / 2.0])
            half = (a, a, c)
            rbound = float(np.sqrt(a * a + c * c))
        else:  # ellipsoid
            m.geom_size[g] = (a, bb, c)
            inertia = mass / 5.0 * np.array([bb * bb + c * c, a * a + c * c, a * a + bb * bb])
            half = (a, bb, c)
            rbound = float(max(a, bb, c))
        m.geom_aabb[g] = (0.0, 0.0, 0.0, *half)
        m.geom_rbound[g] = rbound
        m.geom_rgba[g] = obj.rgba[i]
        m.geom_friction[g, 0] = obj.friction[i]
        m.body_mass[b] = mass
        m.body_inertia[b] = inertia
    mujoco.mj_setConst(m, data)  # derived constants (invweight, ...) depend on the masses


def pose_arm_links(data: mujoco.MjData, palm_qpos: int, mocap_links: tuple[int, int, int]) -> None:
    """Pose the (mocap, contact-free) column and links by planar two-link IK to the palm, whose
    free joint starts at ``qpos[palm_qpos]``; ``mocap_links`` are the column's and the links'
    mocap ids."""
    d = data
    bx, by = scene.ARM_BASE
    x, y = d.qpos[palm_qpos : palm_qpos + 2]
    dx, dy = x - bx, y - by
    dist = min(float(np.hypot(dx, dy)), scene.LINK1 + scene.LINK2 - 1e-6)
    l1, l2 = scene.LINK1, scene.LINK2
    cos_elbow = (dist * dist - l1 * l1 - l2 * l2) / (2 * l1 * l2)
    elbow = float(np.arccos(np.clip(cos_elbow, -1.0, 1.0)))  # elbow to the robot's right
    shoulder = float(np.arctan2(dy, dx)) - float(np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow)))
    ex, ey = bx + l1 * np.cos(shoulder), by + l1 * np.sin(shoulder)
    col, link1, link2 = mocap_links
    d.mocap_quat[col] = yaw_quat(shoulder)
    d.mocap_pos[link1] = (bx, by, scene.SHOULDER_Z)
    d.mocap_quat[link1] = yaw_quat(shoulder)
    d.mocap_pos[link2] = (ex, ey, scene.ELBOW_Z)
    d.mocap_quat[link2] = yaw_quat(shoulder + elbow)


def physics_state(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """The physics state (``STATE_SPEC``), float64 ``(mj_stateSize,)``."""
    out = np.empty(mujoco.mj_stateSize(model, STATE_SPEC))
    mujoco.mj_getState(model, data, out, STATE_SPEC)
    return out


def make_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A ``size`` x ``size`` renderer; ``RuntimeError`` saying what to set when no OpenGL context
    can be created."""
    try:
        return mujoco.Renderer(model, size, size)
    except Exception as err:  # the backends raise ImportError, RuntimeError, mujoco.FatalError, ...
        backend = os.environ.get("MUJOCO_GL", "")
        raise RuntimeError(
            f"PushTableEnv could not create an OpenGL context with MUJOCO_GL={backend!r}: {err!r}. {NO_GL}"
        ) from err


def yaw_quat(angle: float) -> tuple[float, float, float, float]:
    """The quaternion ``(w, x, y, z)`` of a rotation by ``angle`` about the vertical axis."""
    return (float(np.cos(angle / 2)), 0.0, 0.0, float(np.sin(angle / 2)))
