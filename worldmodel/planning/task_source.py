"""Where a planning agent reads its episodes' tasks: ``TaskInfo`` and ``TaskSource``.

The goal. PushTable's observation is pixels only, so the agent reads each episode's task from the
environment it is attached to (``agent.attach(env)``), at every episode start:

- an SB3 ``VecEnv`` (e.g. ``DummyVecEnv`` over ``worldmodel/PushTable-v0``): its ``reset_infos[i]``
  (``goal_pos``, ``target``, ``object_pos``; SB3 fills it on automatic resets too) and
  ``env_method("render_goal")`` for the goal image;
- a ``DreamVecEnv`` (planning in a dream) the same way: its reset infos carry the task's keys
  (``worldmodel.envs.task.INFO_KEYS``), ``env_method("proprioception")`` is the dreamed arm and
  ``render_goal`` the episode's goal image. It must be made with ``obs="pixels"``: the agent
  anchors its model on frames. A goal-image dream (no state head) gives no ``goal_pos``; a
  ``GoalImage`` objective then plans on its goal images alone;
- a single ``gymnasium.Env`` wrapped in ``TaskInfo`` (which keeps the last reset info); SB3's
  ``evaluate_policy`` may then wrap it in a ``DummyVecEnv`` as usual.

``set_task(i, task)`` gives a task by hand instead. The oracle agent reads the simulator state
(``get_state``) the same way at every plan.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldmodel.planning.objectives import Task


class TaskInfo(gym.Wrapper):
    """Keeps the last reset's ``info`` as ``task_info`` so that a planning agent can read the goal."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.task_info: dict = {}

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.task_info = dict(info)
        return obs, info


class TaskSource:
    """Reads episode tasks (and simulator states) from an env; see the module docstring."""

    def __init__(self, env: Any) -> None:
        from stable_baselines3.common.vec_env import VecEnv

        self.env = env
        self.vec = isinstance(env, VecEnv)
        if not self.vec:
            if not isinstance(env, gym.Env):
                raise ValueError(f"env: expected an SB3 VecEnv or a gymnasium.Env, got {type(env).__name__}")
            try:
                env.get_wrapper_attr("task_info")
            except AttributeError:
                raise ValueError(
                    "env: a single gymnasium.Env must be wrapped in worldmodel.planning.TaskInfo so "
                    "the agent can read the goal (or attach the agent to a VecEnv)"
                ) from None

    def _call(self, i: int, name: str) -> Any:
        if self.vec:
            return self.env.env_method(name, indices=[i])[0]
        return self.env.get_wrapper_attr(name)()

    def info(self, i: int) -> dict:
        """The reset info of env ``i``'s current episode."""
        if not self.vec:
            return self.env.get_wrapper_attr("task_info")
        from stable_baselines3.common.vec_env import VecEnvWrapper

        inner = self.env
        while isinstance(inner, VecEnvWrapper):  # VecMonitor & co. keep a reset_infos that never updates
            inner = inner.venv
        return inner.reset_infos[i]

    def task(self, i: int, goal_image: bool) -> Task:
        """Env ``i``'s task, batch one (``goal_image`` also renders the goal image)."""
        info = self.info(i)
        if goal_image and not {"goal_pos", "target", "object_pos"} & set(info):  # a goal-image task
            return Task(goal_image=torch.as_tensor(np.asarray(self._call(i, "render_goal")))[None])
        if "goal_pos" not in info or "target" not in info or "object_pos" not in info:
            raise ValueError(
                f"env {i}: its reset info has no goal_pos/target/object_pos (keys: {sorted(info)}); "
                "planning needs PushTable's task info"
            )
        query = np.asarray(info["object_pos"], np.float32)[int(info["target"])]
        task = Task(
            goal_pos=torch.as_tensor(np.asarray(info["goal_pos"], np.float32))[None],
            query=torch.as_tensor(query)[None],
        )
        if "ee_pos" in info:  # the arm at the episode's start; every plan then reads it anew (_ee_now)
            task.ee_start = torch.as_tensor(np.asarray(info["ee_pos"], np.float32))[None]
        if goal_image:
            task.goal_image = torch.as_tensor(np.asarray(self._call(i, "render_goal")))[None]
        return task

    def proprioception(self, i: int) -> np.ndarray:
        """Env ``i``'s end-effector position now, float32 ``(3,)`` (``PushTableEnv.proprioception``)."""
        why = "the objective's head reads the arm relative to its position at the plan"
        return self._position(i, "proprioception", why)

    def target_position(self, i: int) -> np.ndarray:
        """Env ``i``'s target object's position now, float32 ``(3,)`` (``PushTableEnv.target_position``)."""
        return self._position(i, "target_position", "checking the model's predictions needs the real target")

    def _position(self, i: int, method: str, why: str) -> np.ndarray:
        try:
            value = self._call(i, method)
        except AttributeError:
            message = f"env {i}: {why}, and this env has no {method}() (PushTableEnv has it)"
            raise ValueError(message) from None
        return np.asarray(value, np.float32).reshape(3)

    def sim_state(self, i: int) -> dict:
        """Env ``i``'s simulator state (``PushTableEnv.get_state``)."""
        return self._call(i, "get_state")

    def sim_config(self) -> Any:
        """The ``PushTableConfig`` of env 0."""
        if self.vec:
            return self.env.get_attr("config", indices=[0])[0]
        return self.env.get_wrapper_attr("config")
