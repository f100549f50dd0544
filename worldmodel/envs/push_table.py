"""PushTable: a MuJoCo table-top pushing world in the spirit of the BAIR robot pushing data.

``PushTableEnv`` is the Gymnasium env (``worldmodel/PushTable-v0``). Beside it:
``push_table_config.py`` (``PushTableConfig``, its settings), ``scene.py`` (the MJCF, compiled
once), ``push_table_scene.py`` (the random scene a reset draws), ``push_table_sim.py`` (the
headless ``mujoco`` import and what writes into the model: objects, the arm's pose, the renderer)
and ``task.py`` (the task's goals, success, reward and info keys).

Rendering is headless. ``MUJOCO_GL`` is set to ``"egl"`` before ``import mujoco``
(``push_table_sim.py``), unless it is already set (``osmesa`` and ``glfw`` also work); if no
OpenGL backend can be created the first render raises ``RuntimeError`` saying what to set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldmodel.envs import push_table_sim as sim
from worldmodel.envs import scene
from worldmodel.envs import task as tasks
from worldmodel.envs.push_table_config import PushTableConfig
from worldmodel.envs.push_table_scene import Objects, draw_scene
from worldmodel.envs.push_table_sim import STATE_SPEC, mujoco
from worldmodel.envs.render import warn_no_render_mode
from worldmodel.envs.scene import MAX_OBJECTS, SHAPES
from worldmodel.envs.task import REST_ACTION

__all__ = ["MAX_OBJECTS", "REST_ACTION", "SHAPES", "PushTableConfig", "PushTableEnv"]

_RECORDED_SLACK = 10  # recorded-goal: episodes of recorded_k + this many steps; windows start in 0..this


class PushTableEnv(tasks.GoalConditionedReward, gym.Env):
    """Goal-conditioned pushing with a SCARA-like arm, seen by a fixed oblique camera.

    **Action** ``Box(-1, 1, (4,), float32)``: ``dx, dy, dz`` move the end-effector target by
    ``action_scale`` (3 cm) per unit per step, clipped to the end-effector box; ``gripper`` sets the
    finger opening continuously: ``-1`` fully open, ``+1`` fully closed.

    **Observation** ``Box(0, 255, (H, W, 3), uint8)``: the ``front`` camera image. With
    ``goal_conditioned=True`` the Gymnasium-Robotics ``GoalEnv`` form, for SB3's ``HerReplayBuffer``:
    ``Dict(observation=<the image>, achieved_goal=Box(3), desired_goal=Box(3))``, the achieved
    goal the target object's centre (``reach``: the end effector), the desired goal ``goal_pos``;
    ``compute_reward(achieved_goal, desired_goal, info)`` is the env's reward from them, batched
    (``worldmodel.envs.task.compute_reward``; the push shaping reads ``info["ee_pos"]``); the
    step reward is then computed by it from the float32 values reported, so the two agree bit for
    bit (SB3's ``check_env`` asks for that).

    **Task** (``task=``, rules in ``worldmodel.envs.task``): ``push`` (default) the target object to
    a goal spot; ``recorded-goal`` the target to where a recorded push took it ``recorded_k`` steps
    later (the episode starts from that recording's state); ``reach`` the end effector to a point
    above the table.

    **Reward** ``worldmodel.envs.task.reward``: ``-distance`` (object tasks: the xy distance (m) from
    the target object's centre to the goal; ``reach``: the 3-D distance from the end effector to
    the goal) minus, for the object tasks, ``reach_weight`` (0.5) times the end-effector-to-target
    distance (shaping). ``is_success`` is ``distance < success_tolerance`` (0.05 m by default;
    objects are 4–9 cm wide), ``reach_tolerance`` (0.03 m) for ``reach``.

    **Episode end**: never terminated (a pushing task has no terminal state, and a success need not be
    final); truncated by ``TimeLimit`` (``max_episode_steps=50`` in the registration).

    **Control rate**: ``frame_skip * timestep`` = 0.1 s per step (10 Hz). The palm is a free body welded
    to a mocap target that moves linearly to the new target over the substeps.

    **info**: the task's keys (``worldmodel.envs.task.INFO_KEYS``, the same in the dreams):
    ``ee_pos`` float32 (3,), ``object_pos`` float32 (MAX_OBJECTS, 3), the objects present in its
    first ``num_objects`` rows and zeros after them (a fixed shape, so ``gym.make_vec`` can stack
    it; zeros rather than NaN, so Gymnasium's checker can compare infos), ``num_objects`` int,
    ``target`` int, ``target_pos`` float32 (3,) (``object_pos[target]``), ``goal_pos`` float32 (3,)
    (z: the target's resting centre height), ``distance`` float, ``is_success`` bool.

    **render** (``render_mode="rgb_array"``): the camera image, uint8 ``(H, W, 3)``; with
    ``render_mode=None`` it warns (``gymnasium.logger.warn``) and returns ``None``, as
    Gymnasium's own envs do.

    The model is compiled once; each reset draws 1–4 objects (shape among box / cylinder / ellipsoid,
    size, colour, mass, friction, position, yaw) and writes them into the model's per-geom fields.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        render_mode: str | None = None,
        *,
        image_size: int = 64,
        num_objects: int | None = None,
        config: PushTableConfig | None = None,
        **overrides: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if config is None:
            config = PushTableConfig(image_size=image_size, num_objects=num_objects, **overrides)
        else:  # explicit arguments win over the given config; defaults do not
            if image_size != 64:
                overrides["image_size"] = image_size
            if num_objects is not None:
                overrides["num_objects"] = num_objects
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.render_mode = render_mode
        size = config.image_size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        if config.goal_conditioned:
            self.observation_space = tasks.goal_space(self.observation_space)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

        xml = scene.build_mjcf(
            image_size=size,
            timestep=config.timestep,
            success_tolerance=config.success_tolerance,
            show_goal_marker=config.show_goal_marker,
            camera_pos=config.camera_pos,
            camera_lookat=config.camera_lookat,
            camera_fovy=config.camera_fovy,
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._index_model()
        self._renderer: mujoco.Renderer | None = None
        self._scene_option = mujoco.MjvOption()  # groups 0-2 visible; HIDDEN_GROUP is not
        self._objects = Objects()
        self._num_objects = 0
        self._target = 0
        self._goal = np.zeros(3)
        self._goal_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._spec = config.task_spec()
        self._goal_state: np.ndarray | None = None  # recorded-goal: the physics at the goal step
        self._recorded: np.ndarray | None = None  # recorded-goal: the actions from start to goal
        self._has_reset = False

    # ------------------------------------------------------------------ model bookkeeping
    def _index_model(self) -> None:
        m = self.model

        def body(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)

        def mocap(name: str) -> int:
            return int(m.body_mocapid[body(name)])

        self._mocap_target = mocap("ee_target")
        self._mocap_goal = mocap("goal")
        self._mocap_links = (mocap("column"), mocap("link1"), mocap("link2"))
        self._palm_qpos = int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "palm_free")])
        self._finger_qpos = [
            int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)])
            for n in ("finger_l", "finger_r")
        ]
        self._ee_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._obj_body = [body(f"obj{i}") for i in range(MAX_OBJECTS)]
        self._obj_qpos = [
            int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"obj{i}_free")])
            for i in range(MAX_OBJECTS)
        ]
        self._obj_qvel = [
            int(m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"obj{i}_free")])
            for i in range(MAX_OBJECTS)
        ]
        self._obj_geom = [
            [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"obj{i}_{s}") for s in SHAPES]
            for i in range(MAX_OBJECTS)
        ]
        self._cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "front")

    def _apply_objects(self) -> None:
        """Write the per-episode object parameters into the model (size, inertia, colour, contacts)."""
        sim.apply_objects(self.model, self.data, self._objects, self._obj_body, self._obj_geom)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        cfg, rng = self.config, self.np_random
        n = cfg.num_objects if cfg.num_objects is not None else int(rng.integers(1, MAX_OBJECTS + 1))
        if options and "num_objects" in options:
            n = int(options["num_objects"])
            if not 1 <= n <= MAX_OBJECTS:
                raise ValueError(f"options['num_objects'] must be in 1..{MAX_OBJECTS}, got {n}")
        self._goal_state = None
        self._recorded = None
        if self._spec.name == "recorded-goal":
            self._reset_recorded(rng, n)
        else:
            self._reset_scene(rng, n)
            if self._spec.name == "reach":
                self._goal = tasks.sample_reach_goal(self._spec, rng, self._ee_pos())
                self.data.mocap_pos[self._mocap_goal] = (self._goal[0], self._goal[1], 0.0)
                mujoco.mj_forward(self.model, self.data)
        self._has_reset = True
        info = self._info()
        return self._observe(info), info

    def _reset_scene(self, rng: np.random.Generator, n: int) -> None:
        """Draw ``n`` objects, the push task (target and goal spot) and the arm (``draw_scene``) and
        write them into the simulation; the ``push`` reset."""
        m, d = self.model, self.data
        drawn = draw_scene(self.config, self._spec, rng, n)
        self._objects, self._num_objects = drawn.objects, n
        mujoco.mj_resetData(m, d)
        self._apply_objects()
        mujoco.mj_resetData(m, d)
        for i, xy in enumerate(drawn.xy):
            q = self._obj_qpos[i]
            d.qpos[q : q + 3] = (xy[0], xy[1], drawn.objects.rest_height(i))
            d.qpos[q + 3 : q + 7] = (np.cos(drawn.yaw[i] / 2), 0.0, 0.0, np.sin(drawn.yaw[i] / 2))
        self._target, self._goal = drawn.target, drawn.goal
        q = self._obj_qpos[self._target]
        self._goal_quat = d.qpos[q + 3 : q + 7].copy()
        d.mocap_pos[self._mocap_goal] = (drawn.goal[0], drawn.goal[1], 0.0)
        # Arm: end effector above the table, fingers open.
        p = self._palm_qpos
        d.qpos[p : p + 3] = drawn.ee
        d.qpos[p + 3 : p + 7] = (1.0, 0.0, 0.0, 0.0)
        d.mocap_pos[self._mocap_target] = drawn.ee
        self._update_arm_links()
        mujoco.mj_forward(m, d)

    def _reset_recorded(self, rng: np.random.Generator, n: int, attempts: int = 100) -> None:
        """The ``recorded-goal`` reset: record episodes of the collection's scripted pushing policy
        (``RandomPushPolicy``, every episode a push) until one has a window of ``recorded_k`` steps
        in which some object moved at least ``min_move``; start at the window's first state, with
        that object as the target and its position at the window's end as the goal."""
        from worldmodel.envs.policy import RandomPushPolicy  # the policy imports this module

        spec, k = self._spec, int(self._spec.recorded_k)
        length = k + _RECORDED_SLACK
        for _ in range(attempts):
            self._reset_scene(rng, n)
            policy = RandomPushPolicy(int(rng.integers(2**31)), push_probability=1.0, config=self.config)
            info = self._info()
            policy.reset(info)
            states, poses, actions = [self.get_state()], [self._object_poses()], []
            for _ in range(length):
                actions.append(policy(info))
                self._simulate(actions[-1])
                info = self._info()
                states.append(self.get_state())
                poses.append(self._object_poses())
            pos = np.stack([p for p, _ in poses])  # (length + 1, n, 3)
            moved = np.linalg.norm(pos[k:, :, :2] - pos[: len(pos) - k, :, :2], axis=-1)  # (windows, n)
            t0, target = np.unravel_index(int(np.argmax(moved)), moved.shape)
            if moved[t0, target] >= spec.min_move:
                break
        else:
            raise ValueError(
                f"recorded-goal: no window of {k} steps moved an object by {spec.min_move} m in "
                f"{attempts} recorded episodes (lower recorded_k or success_tolerance)"
            )
        start = dict(states[t0])
        start.update(target=np.array(target, np.int64), goal_pos=pos[t0 + k, target].astype(np.float64))
        start["goal_quat"] = poses[t0 + k][1][target].astype(np.float64)
        self._goal_state = states[t0 + k]["physics"]
        self.set_state(start)
        self.data.mocap_pos[self._mocap_goal] = (self._goal[0], self._goal[1], 0.0)
        mujoco.mj_forward(self.model, self.data)
        self._recorded = np.stack(actions[t0 : t0 + k]).astype(np.float32)

    def recorded_actions(self) -> np.ndarray:
        """``recorded-goal``: the recorded actions ``(recorded_k, 4)`` that lead from this episode's
        start to its goal (replaying them in the sim reaches it exactly: the oracle check)."""
        if self._recorded is None:
            raise RuntimeError("recorded_actions() needs a recorded-goal episode (task='recorded-goal')")
        return self._recorded.copy()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if not self._has_reset:
            raise RuntimeError("PushTableEnv.step() called before reset()")
        raw = np.asarray(action)
        if raw.shape != (4,) or raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)):
            raise ValueError(
                f"action must be 4 finite real numbers of shape (4,) (dx, dy, dz, gripper), got {action!r}"
            )
        a = raw.astype(np.float64)
        self._simulate(a)
        info = self._info()
        obs = self._observe(info)
        if self.config.goal_conditioned:
            # From the float32 goals and ee_pos it reports, so HER's relabelled rewards
            # (compute_reward) equal the env's bit for bit (float32 rounding off _reward()'s).
            reward = self._compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
            return obs, reward, False, False, info
        return obs, self._reward(), False, False, info

    def _compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """The reward for achieved goals ``(..., 3)`` and desired goals ``(..., 3)`` (the
        goal-conditioned observation's; a float for one pair, ``(B,)`` for a batch):
        ``worldmodel.envs.task.compute_reward``. ``info``: the step's info (or one per pair),
        read for ``ee_pos`` by the object tasks' shaping."""
        return tasks.compute_reward(self._spec, achieved_goal, desired_goal, info)

    def _observe(self, info: dict[str, Any]) -> Any:
        """The observation: the camera image, or the goal-conditioned dict (``info``'s goals)."""
        frame = self._render_frame()
        if not self.config.goal_conditioned:
            return frame
        return {
            "observation": frame,
            "achieved_goal": tasks.achieved_goal(self._spec, info["target_pos"], info["ee_pos"]).copy(),
            "desired_goal": info["goal_pos"].copy(),
        }

    def _simulate(self, action: np.ndarray) -> None:
        """One control step of physics (no rendering); ``action`` finite ``(4,)``."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        cfg, m, d = self.config, self.model, self.data
        ee = self._ee_pos()
        start = d.mocap_pos[self._mocap_target].copy()
        target = np.clip(start + a[:3] * cfg.action_scale, cfg.ee_low, cfg.ee_high)
        target = np.clip(target, ee - cfg.max_lead, ee + cfg.max_lead)
        d.ctrl[:] = scene.FINGER_TRAVEL * (a[3] + 1.0) / 2.0
        for k in range(1, cfg.frame_skip + 1):
            d.mocap_pos[self._mocap_target] = start + (target - start) * (k / cfg.frame_skip)
            mujoco.mj_step(m, d)
        self._update_arm_links()
        mujoco.mj_kinematics(m, d)  # positions for rendering and info: the state after the step

    def _object_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(n, 3)`` and orientations ``(n, 4)`` of the present objects."""
        bodies = self._obj_body[: self._num_objects]
        return self.data.xpos[bodies].copy(), self.data.xquat[bodies].copy()

    def render(self) -> np.ndarray | None:
        """The current camera image, uint8 (H, W, 3) (``render_mode="rgb_array"``); ``None`` with
        a warning when the env was made without a render mode (Gymnasium's convention)."""
        if self.render_mode is None:
            warn_no_render_mode(self)
            return None
        return self._render_frame()

    def render_goal(self) -> np.ndarray:
        """The goal as an image. ``push``: the scene as it is now but with the target object resting
        at the goal, keeping its orientation from the start of the episode (the arm and the other
        objects stay where they are). ``recorded-goal``: the recorded scene at the goal step.
        ``reach``: the scene as it is now (the goal is a point in the air; its disc marks its xy).
        The simulation state is left untouched."""
        m, d = self.model, self.data
        saved = self._physics_state()
        saved_marker = d.mocap_pos[self._mocap_goal].copy()
        if self._goal_state is not None:
            mujoco.mj_setState(m, d, self._goal_state, STATE_SPEC)
            d.mocap_pos[self._mocap_goal] = saved_marker  # the recording had the push goal's disc
            self._update_arm_links()
            mujoco.mj_forward(m, d)
        elif self._spec.name != "reach":
            q = self._obj_qpos[self._target]
            d.qpos[q : q + 3] = self._goal
            d.qpos[q + 3 : q + 7] = self._goal_quat
            mujoco.mj_kinematics(m, d)
        frame = self._render_frame()
        mujoco.mj_setState(m, d, saved, STATE_SPEC)
        mujoco.mj_forward(m, d)
        return frame

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ state for planners
    def proprioception(self) -> np.ndarray:
        """The end effector's position now, float32 ``(3,)`` (what a robot knows of its own arm;
        planners read it at every plan, as BAIR records ``endeffector_pos``)."""
        return self._ee_pos().astype(np.float32)

    def target_position(self) -> np.ndarray:
        """The target object's position now, float32 ``(3,)`` (what a planner's model should have
        predicted; ``worldmodel.planning.prediction_check`` scores it)."""
        return self.data.xpos[self._obj_body[self._target]].astype(np.float32)

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the episode exactly (physics and per-episode parameters)."""
        obj = self._objects
        return {
            "physics": self._physics_state(),
            "obj_shape": obj.shape.copy(),
            "obj_size": obj.size.copy(),
            "obj_rgba": obj.rgba.copy(),
            "obj_mass": obj.mass.copy(),
            "obj_friction": obj.friction.copy(),
            "num_objects": np.array(self._num_objects, np.int64),
            "target": np.array(self._target, np.int64),
            "goal_pos": self._goal.copy(),
            "goal_quat": self._goal_quat.copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> Any:
        """Restore a state from :meth:`get_state`; returns the observation there.

        Stepping after ``set_state(s)`` is bit-identical to stepping from where ``s`` was taken.
        """
        expected = mujoco.mj_stateSize(self.model, STATE_SPEC)
        missing = {"physics", "obj_shape", "obj_size", "obj_rgba", "obj_mass", "obj_friction",
                   "num_objects", "target", "goal_pos", "goal_quat"} - set(state)  # fmt: skip
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        physics = np.asarray(state["physics"], dtype=np.float64)
        if physics.shape != (expected,):
            raise ValueError(f"state['physics'] must have shape ({expected},), got {physics.shape}")
        obj = Objects(
            shape=np.array(state["obj_shape"], np.int64).reshape(MAX_OBJECTS),
            size=np.array(state["obj_size"], np.float64).reshape(MAX_OBJECTS, 3),
            rgba=np.array(state["obj_rgba"], np.float64).reshape(MAX_OBJECTS, 4),
            mass=np.array(state["obj_mass"], np.float64).reshape(MAX_OBJECTS),
            friction=np.array(state["obj_friction"], np.float64).reshape(MAX_OBJECTS),
        )
        self._objects = obj
        self._num_objects = int(state["num_objects"])
        self._target = int(state["target"])
        self._goal = np.array(state["goal_pos"], np.float64).reshape(3)
        self._goal_quat = np.array(state["goal_quat"], np.float64).reshape(4)
        self._apply_objects()
        mujoco.mj_setState(self.model, self.data, physics, STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        self._has_reset = True
        return self._observe(self._info())

    # ------------------------------------------------------------------ helpers
    def _physics_state(self) -> np.ndarray:
        return sim.physics_state(self.model, self.data)

    def _ee_pos(self) -> np.ndarray:
        p = self._palm_qpos
        return self.data.qpos[p : p + 3].copy()

    def _update_arm_links(self) -> None:
        """Pose the (mocap, contact-free) column and links by planar two-link IK to the palm."""
        sim.pose_arm_links(self.data, self._palm_qpos, self._mocap_links)

    def _info(self) -> dict[str, Any]:
        d = self.data
        # Fixed shape (MAX_OBJECTS, 3), absent rows zero: vector envs stack infos per key, and
        # NaN padding would make Gymnasium's checker see two equal infos as different.
        objects = np.zeros((MAX_OBJECTS, 3), np.float32)
        objects[: self._num_objects] = d.xpos[self._obj_body[: self._num_objects]]
        target = d.xpos[self._obj_body[self._target]]  # float64, as the reward reads it
        ee = self._ee_pos()
        distance = float(tasks.distance(self._spec, target, ee, self._goal))
        return {
            "distance": distance,
            "is_success": bool(distance < self._spec.tolerance),
            "goal_pos": self._goal.astype(np.float32),
            "target": int(self._target),
            "num_objects": int(self._num_objects),
            "object_pos": objects,
            "target_pos": target.astype(np.float32),
            "ee_pos": ee.astype(np.float32),
        }

    def _reward(self) -> float:
        """The task's reward (``worldmodel.envs.task.reward``) now, from the same float64 state as
        ``info["distance"]``."""
        target = self.data.xpos[self._obj_body[self._target]]
        return float(tasks.reward(self._spec, target, self._ee_pos(), self._goal))

    def _render_frame(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = sim.make_renderer(self.model, self.config.image_size)
        self._renderer.update_scene(self.data, camera=self._cam, scene_option=self._scene_option)
        return self._renderer.render()
