"""The re-planning loop behind Stable-Baselines3's ``predict``, shared by the planning agents
(``PlanningAgent``; the learned-model ``MPCAgent`` and the ``OracleAgent`` are in ``mpc.py``).

``predict(obs, state=None, episode_start=None, deterministic=True)`` takes a batch of
observations (one per env of a VecEnv, or a single one) and returns ``(actions, None)``, so SB3's
``evaluate_policy`` runs an agent unchanged. Per env the agent keeps the episode's bookkeeping: the
last ``context`` real observations and the actions executed between them (at the start of an
episode the window is padded by repeating the first frame with ``rest_action``), the task, the
actions of the current plan still to execute and the planner's warm start. An env plans again
when its plan's first ``replan_every`` actions are used up; envs that need a new plan at the same
call are planned together, as one batch of problems. Episode starts come from ``episode_start``
(SB3's convention) or, without it, from an attached VecEnv's new reset info. Tasks come from the
attached env (``task_source.py``) or ``set_task``.

``deterministic`` is accepted for SB3 compatibility: planning is always sampled, from the
agent's own generator seeded by ``seed``, so a run is reproducible either way.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldmodel.planning.box import BoxPlanner, CEMResult, WarmStart
from worldmodel.planning.objectives import Task
from worldmodel.planning.task_source import TaskSource


@dataclasses.dataclass
class _Slot:
    """Per-env bookkeeping of a planning agent."""

    frames: deque
    actions: deque
    task: Task | None = None
    pending: np.ndarray | None = None
    cache: list = dataclasses.field(default_factory=list)
    warm: WarmStart | None = None
    t: int = 0
    plan_t0: int = 0
    plan_frames: np.ndarray | None = None  # (H + 1, h, w, 3): imagined frames from plan_t0 on
    goal_image: np.ndarray | None = None
    info: dict | None = None  # the reset-info dict the episode began with (VecEnvs), by identity
    track: Any = None  # MPCAgent's carried target (``mpc._Track``), for heads that integrate objects


class PlanningAgent:
    """Re-planning loop shared by the learned-model and the oracle agents (SB3-style ``predict``).

    Subclasses implement ``_plan(envs, obs) -> (P, H, A)`` actions for the listed envs.
    """

    def __init__(
        self,
        planner: BoxPlanner,
        replan_every: int = 1,
        *,
        seed: int = 0,
        context: int = 1,
        rest_action: Any = None,
    ) -> None:
        if not 1 <= replan_every <= planner.horizon:
            raise ValueError(f"replan_every must be in 1..horizon={planner.horizon}, got {replan_every}")
        self.planner, self.replan_every, self.seed = planner, int(replan_every), int(seed)
        self.context = max(int(context), 1)
        # Pads the context at an episode's first frame (the scene held still); zeros by default,
        # PushTable's is worldmodel.envs.push_table.REST_ACTION (fingers open).
        rest = np.zeros(planner.action_dim, np.float32) if rest_action is None else rest_action
        self.rest_action = np.asarray(rest, np.float32).reshape(planner.action_dim)
        self.source: TaskSource | None = None
        self._manual: dict[int, Task] = {}
        self._slots: list[_Slot | None] = []
        self.planning_seconds, self.actions_taken, self.plans = 0.0, 0, 0
        self.record = False
        self.trace: list[dict[str, Any]] = []  # env 0, when ``record``: real | imagined | goal per step
        self._episode = -1

    # --- wiring ---------------------------------------------------------------------------------
    def attach(self, env: Any) -> PlanningAgent:
        """Read tasks from ``env`` (an SB3 VecEnv, or a gymnasium.Env wrapped in ``TaskInfo``)."""
        space = getattr(env, "observation_space", None)
        if isinstance(space, gym.spaces.Box) and (space.dtype != np.uint8 or len(space.shape) != 3):
            raise ValueError(
                f"env: the agent plans from uint8 (H, W, 3) frames, this env observes {space.dtype} "
                f"{space.shape} (make a dream with obs='pixels')"
            )
        if isinstance(space, gym.spaces.Dict):
            raise ValueError("env: the agent plans from uint8 (H, W, 3) frames, not Dict observations")
        self.source = TaskSource(env)
        return self

    def set_task(self, i: int, task: Task) -> None:
        """Use ``task`` (batch one) for env ``i`` from its next episode start on."""
        self._manual[int(i)] = task

    def reset(self) -> None:
        """Forget every env's episode (the next ``predict`` starts afresh)."""
        self._slots = []

    def reset_stats(self) -> None:
        self.planning_seconds, self.actions_taken, self.plans = 0.0, 0, 0
        self.trace = []
        self._episode = -1

    def window(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        """Env ``i``'s context window: the real observations its next plan starts from (oldest
        first), the actions executed between them, and its step count in the episode."""
        if i >= len(self._slots) or self._slots[i] is None:
            raise ValueError(f"env {i} has no episode yet: call predict first")
        slot = self._slots[i]
        return list(slot.frames), list(slot.actions), slot.t

    @property
    def ms_per_action(self) -> float:
        """Planning wall time per action returned (ms), over all envs and calls so far."""
        return 1000.0 * self.planning_seconds / max(self.actions_taken, 1)

    def _task(self, i: int) -> Task:
        if i in self._manual:
            return self._manual[i]
        if self.source is None:
            raise RuntimeError("no task: call agent.attach(env) or agent.set_task(i, task) first")
        return self.source.task(i, goal_image=self._wants_goal_image())

    def _wants_goal_image(self) -> bool:
        return self.record

    # --- SB3 interface ----------------------------------------------------------------------------
    def _after_plan(self) -> None:
        """Work after a plan (for the recording, or checks), outside the timed planning (none by
        default); called at every ``predict``, before the envs' step counts advance."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for a batch of observations ``(n_envs, H, W, 3)`` (or one ``(H, W, 3)``).

        ``episode_start`` ``(n_envs,)`` marks envs whose observation is the first of an episode
        (SB3's convention); the first call, or a change of ``n_envs``, starts every env afresh.
        Without ``episode_start``, an attached VecEnv's auto-resets are noticed by its new reset info.
        Returns ``(actions (n_envs, A) float32, None)`` (``(A,)`` for a single observation).
        """
        obs = np.asarray(observation)
        single = obs.ndim == 3
        if single:
            obs = obs[None]
        if obs.ndim != 4:
            raise ValueError(f"observation: expected (n_envs, H, W, 3) or (H, W, 3), got {obs.shape}")
        n = len(obs)
        if len(self._slots) != n:
            self._slots = [None] * n
        if episode_start is None:  # notice auto-resets by the env's new reset info
            starts = np.array([self._reset_seen(i) for i in range(n)], bool)
        else:
            starts = np.asarray(episode_start, bool).reshape(n)
        tic = time.perf_counter()
        stepped = []
        for i in range(n):
            slot = self._slots[i]
            if starts[i] or slot is None:
                self._slots[i] = self._begin(i, obs[i])
            else:
                slot.frames.append(obs[i])
                slot.actions.append(slot.pending)
                stepped.append(i)
        if stepped:
            self._stepped(stepped)
        need = [i for i in range(n) if not self._slots[i].cache]
        if need:
            plans = self._plan(need, obs).detach().float().cpu().numpy()
            self.plans += 1
            for j, i in enumerate(need):
                slot = self._slots[i]
                slot.cache = list(plans[j, : self.replan_every])
                slot.plan_t0 = slot.t
        actions = np.stack([self._slots[i].cache.pop(0) for i in range(n)]).astype(np.float32)
        self.planning_seconds += time.perf_counter() - tic
        self._after_plan()
        if self.record:
            self._record(obs[0])
        for i in range(n):
            self._slots[i].pending = actions[i]
            self._slots[i].t += 1
        self.actions_taken += n
        return (actions[0] if single else actions), None

    def _reset_seen(self, i: int) -> bool:
        """Whether env ``i`` started a new episode since its slot began: SB3 VecEnvs store a new
        reset-info dict at every (auto-)reset, so another dict object means a new episode."""
        slot = self._slots[i]
        if slot is None or self.source is None or not self.source.vec or i in self._manual:
            return False
        return self.source.info(i) is not slot.info

    def _begin(self, i: int, obs: np.ndarray) -> _Slot:
        slot = _Slot(frames=deque([obs], maxlen=self.context), actions=deque(maxlen=self.context - 1))
        if self.source is not None and self.source.vec and i not in self._manual:
            slot.info = self.source.info(i)
        slot.task = self._prepare(self._task(i))
        if self.record and slot.task.goal_image is not None:
            slot.goal_image = slot.task.goal_image[0].cpu().numpy()
        if i == 0:
            self._episode += 1
        return slot

    def _prepare(self, task: Task) -> Task:
        return task

    def _stepped(self, envs: list[int]) -> None:
        """Envs ``envs`` executed their ``pending`` action and showed its observation (appended)."""

    def _plan(self, envs: list[int], obs: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _record(self, real: np.ndarray) -> None:
        slot = self._slots[0]
        imagined = None
        if slot.plan_frames is not None:
            k = slot.t - slot.plan_t0
            imagined = slot.plan_frames[min(k, len(slot.plan_frames) - 1)]
        goal = slot.goal_image
        self.trace.append({"episode": self._episode, "real": real, "imagined": imagined, "goal": goal})

    # --- helpers for subclasses -------------------------------------------------------------------
    def _warm(self, envs: list[int], device: torch.device) -> WarmStart:
        parts = []
        for i in envs:
            warm = self._slots[i].warm
            parts.append(warm if warm is not None else WarmStart(self.planner.initial_mean(1, device)))
        ws = WarmStart.cat(parts)
        return WarmStart(ws.mean.to(device), None if ws.elites is None else ws.elites.to(device))

    def _keep_warm(self, envs: list[int], result: CEMResult, generator: torch.Generator) -> None:
        ws = self.planner.warm_start(result, self.replan_every, generator)
        for j, i in enumerate(envs):
            self._slots[i].warm = ws[j : j + 1]
