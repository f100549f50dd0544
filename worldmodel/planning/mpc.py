"""Model-predictive control with a planner, behind Stable-Baselines3's ``predict``.

``MPCAgent(model, planner, objective, replan_every=k)`` plans ``H`` actions with ``planner`` (a
``CEM``) on the learned model, executes the first ``k``, then plans again. ``predict(obs,
state=None, episode_start=None, deterministic=True)`` takes a batch of observations (one per env
of a VecEnv, or a single one) and returns ``(actions, None)``, so SB3's ``evaluate_policy`` runs it
unchanged; envs that need a new plan at the same call are planned together, as one batch of
problems.

Model state across steps: re-anchored on real frames. The agent keeps, per env, the last
``n_past`` real observations and the actions executed between them; every time it plans it runs
``model.initial`` on that window, so the model never drifts on its own predictions. At the start
of an episode the window is padded by repeating the first frame with ``rest_action`` (zeros by
default; ``worldmodel plan`` passes PushTable's ``REST_ACTION``, no motion and fingers open), i.e.
the scene held still. Between plans the model is not called at all.

Heads that integrate the objects (``state_objects="actions"``): the agent carries each env's
target from the task's query (its position at the episode's start) along every executed action
with the head's contact model and the arm's real move (proprioception), and each plan starts
from there (``Task.object_start``), as the dream carries its target from its reset.

The re-planning loop and ``predict`` are ``PlanningAgent``'s (``agent.py``), where each episode's
task comes from is ``task_source.py`` (``TaskInfo``, ``TaskSource``), and ``run_episodes``
(``episodes.py``) runs any of these agents for a number of episodes; all are importable from
here too.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.batch import frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.dynamics.inference import for_inference
from worldmodel.planning.agent import PlanningAgent
from worldmodel.planning.box import BoxPlanner
from worldmodel.planning.episodes import evaluate, run_episodes
from worldmodel.planning.objectives import Objective, Task
from worldmodel.planning.prediction_check import PlanReading, PredictionCheck, checkable
from worldmodel.planning.task_source import TaskInfo, TaskSource

__all__ = [
    "MPCAgent",
    "OracleAgent",
    "PlanningAgent",
    "RandomAgent",
    "TaskInfo",
    "TaskSource",
    "evaluate",
    "run_episodes",
]


class _Track(NamedTuple):
    """Where ``MPCAgent`` carries an env's target (heads that integrate the objects)."""

    target: Tensor
    """``(3,)`` the target now."""
    arm: Tensor | None
    """``(3,)`` the arm now (proprioception; None without an env until the first step)."""
    before: Tensor
    """``(A,)`` the action executed before the last one."""


class MPCAgent(PlanningAgent):
    """MPC with a learned ``LatentDynamics``: plan with ``planner`` on ``objective``, execute
    ``replan_every`` actions, re-plan (see the module docstring).

    Args:
        model: the world model (any device). The agent plans on ``for_inference(model)``, a
            frozen copy computing the same function faster (``dynamics/inference.py``); ``model``
            is left as it is.
        planner: a ``CEM``; its horizon is the planning horizon.
        objective: an ``Objective`` (``LearnedReward`` or ``GoalImage``).
        replan_every: actions executed per plan (1: re-plan at every step).
        context: real frames fed to ``initial`` (default the model's ``n_past``).
        seed: seeds the planner's and the model's sampling.
        check_predictions: score, at every plan, the model's reading of the target object against
            the attached sim's (``prediction_check.py``; ``prediction_check.summary()``). Needs a
            ``LearnedReward`` on an object task and an env with ``target_position()``; the check
            runs outside the timed planning and does not change the plans.
    """

    def __init__(
        self,
        model: LatentDynamics,
        planner: BoxPlanner,
        objective: Objective,
        replan_every: int = 1,
        *,
        context: int | None = None,
        seed: int = 0,
        rest_action: Any = None,
        check_predictions: bool = False,
    ) -> None:
        if planner.action_dim != model.config.action_dim:
            raise ValueError(
                f"planner: action_dim {planner.action_dim}, the model takes {model.config.action_dim}"
            )
        super().__init__(
            planner, replan_every, seed=seed, context=context or model.config.n_past, rest_action=rest_action
        )
        self.model, self.objective = for_inference(model), objective
        self.generator = torch.Generator(device=model.device).manual_seed(self.seed)
        self._imagine_generator = torch.Generator(device=model.device).manual_seed(self.seed + 1)
        self._to_imagine: tuple[State, Tensor] | None = None
        self.prediction_check: PredictionCheck | None = None
        if check_predictions:
            if not checkable(objective):
                raise ValueError(
                    "check_predictions: the check reads the target object through a LearnedReward's "
                    "head, on the push or recorded-goal task"
                )
            self.prediction_check = PredictionCheck(self.replan_every)
        self._to_check: tuple[list[int], State, Task, Tensor] | None = None

    def reset_stats(self) -> None:
        super().reset_stats()
        if self.prediction_check is not None:
            self.prediction_check.reset()

    def _wants_goal_image(self) -> bool:
        return self.record or self.objective.needs_goal_image

    def _prepare(self, task: Task) -> Task:
        if getattr(self.objective, "needs_last_action", False) and task.last_action is None:
            task.last_action = torch.from_numpy(self.rest_action)[None]  # an episode's start (see _plan)
        return self.objective.prepare(self.model, task)

    @torch.no_grad()
    def anchor(self, envs: list[int]) -> State:
        """``model.initial`` on each listed env's window of real frames and executed actions."""
        c, a_dim, dev = self.context, self.model.config.action_dim, self.model.device
        size = self.model.config.image_size
        frames, actions = [], []
        for i in envs:
            slot = self._slots[i]
            f, a = list(slot.frames), list(slot.actions)
            pad = c - len(f)  # episode start: the first frame held still (rest action)
            f = [f[0]] * pad + f
            a = [self.rest_action] * pad + [np.asarray(x, np.float32) for x in a]
            frames.append(np.stack(f))
            actions.append(np.stack(a) if a else np.zeros((0, a_dim), np.float32))
        frames_t = torch.from_numpy(np.stack(frames)).to(dev)
        if tuple(frames_t.shape[2:]) != (size, size, 3):
            raise ValueError(
                f"observation: the model takes ({size}, {size}, 3) frames, got {tuple(frames_t.shape[2:])}; "
                f"make the env with image_size={size}"
            )
        return self.model.initial(frames_t, torch.from_numpy(np.stack(actions)).to(dev))

    @torch.no_grad()
    def _plan(self, envs: list[int], obs: np.ndarray) -> Tensor:
        state = self.anchor(envs)
        task = Task.cat([self._slots[i].task for i in envs])
        if getattr(self.objective, "needs_ee_start", False):
            task.ee_start = self._ee_now(envs).to(self.model.device)
        if getattr(self.objective, "needs_last_action", False):
            task.last_action = self._last_actions(envs).to(self.model.device)
        if self._integrates_objects:
            task.object_start = torch.stack([self._slots[i].track.target for i in envs])
        model, objective, gen = self.model, self.objective, self.generator
        result = self.planner.optimize(
            lambda cand: objective(model, state, task, cand, gen),
            init=self._warm(envs, model.device),
            generator=gen,
        )
        self._keep_warm(envs, result, gen)
        if self.prediction_check is not None:  # scored after the timer stops (see ``predict``)
            self._to_check = (list(envs), state, task, result.actions)
        if self.record and 0 in envs:  # imagined after the timer stops (see ``predict``)
            j = envs.index(0)
            self._to_imagine = (state[j : j + 1], result.actions[j : j + 1])
        return result.actions

    def _ee_now(self, envs: list[int]) -> Tensor:
        """The gripper's position at the anchor, ``(P, 3)``: proprioception read from the attached
        env at every plan (the arm's state, not the objects': those the model reads from pixels);
        a task given by hand keeps its ``ee_start``."""
        rows = []
        for i in envs:
            manual = self._manual.get(i)
            if self.source is not None:
                rows.append(torch.from_numpy(self.source.proprioception(i)))
            elif manual is not None and manual.ee_start is not None:
                rows.append(manual.ee_start.reshape(3).float().cpu())
            else:
                raise RuntimeError("the objective reads the arm's position: attach the agent to an env")
        return torch.stack(rows)

    @property
    def _integrates_objects(self) -> bool:
        return bool(getattr(self.objective, "integrates_objects", False))

    def _begin(self, i: int, obs: np.ndarray):
        slot = super()._begin(i, obs)
        if self._integrates_objects:  # the target starts where the task says it is
            dev = self.model.device
            arm = self._ee_now([i])[0].to(dev) if self.source is not None else None
            rest = torch.from_numpy(np.asarray(self.rest_action, np.float32)).to(dev)
            slot.track = _Track(slot.task.query[0].float().to(dev), arm, rest)
        return slot

    @torch.no_grad()
    def _stepped(self, envs: list[int]) -> None:
        """Heads that integrate the objects: each env's target is carried along the action it just
        executed (``ObjectHead.object_step``), with the arm's real move (proprioception; the
        head's integrated arm without an env), so every plan starts from where the head expects
        the target to be now, as the dream does from its reset."""
        if not self._integrates_objects:
            return
        head, dev = self.objective.head, self.model.device
        rows = [self._slots[i] for i in envs]
        target = torch.stack([r.track.target for r in rows])
        before = torch.stack([r.track.before for r in rows])
        action = torch.from_numpy(np.stack([np.asarray(r.pending, np.float32) for r in rows])).to(dev)
        if self.source is not None:
            arm = torch.stack([r.track.arm for r in rows])
            now = self._ee_now(envs).to(dev).float()
        else:  # no env to read the arm from: the head's own arm, from where the task put it
            arm = torch.stack(
                [r.task.ee_start[0].to(dev) if r.track.arm is None else r.track.arm for r in rows]
            )
            now = head.arm_step(arm, action, before)
        moved = head.object_step(target, arm, now, action, before)
        for j, r in enumerate(rows):
            r.track = _Track(moved[j], now[j], action[j])

    def _last_actions(self, envs: list[int]) -> Tensor:
        """The action each env executed last, ``(P, A)`` (the rest action before the first: the
        anchor's context holds the first frame still)."""
        rows = [self.rest_action if (a := self._slots[i].pending) is None else a for i in envs]
        return torch.from_numpy(np.stack([np.asarray(a, np.float32) for a in rows]))

    @torch.no_grad()
    def imagine(self, state: State, actions: Tensor) -> np.ndarray:
        """Frames the model predicts for a plan: uint8 ``(B, H + 1, h, w, 3)`` from the anchor on."""
        o = self.objective
        _, frames = self.model.rollout(
            state,
            actions,
            sample=o.sample,
            temperature=o.temperature,
            generator=self._imagine_generator,
            decode=True,
        )
        frames = torch.cat([self.model.decode(state)[:, None], frames], dim=1)
        return frames_to_uint8(frames).cpu().numpy()

    def _after_plan(self) -> None:
        # Recording decodes the plan with its own generator, outside the timed planning, so a run
        # with a video plans exactly as one without; the check rolls the mean prediction, which
        # draws no random numbers at all.
        if self._to_imagine is not None:
            state, actions = self._to_imagine
            self._slots[0].plan_frames = self.imagine(state, actions)[0]
            self._to_imagine = None
        if self._to_check is not None:
            self._check(*self._to_check)
            self._to_check = None

    @torch.no_grad()
    def _check(self, envs: list[int], state: State, task: Task, actions: Tensor) -> None:
        """One ``PlanReading`` per planned env: the head on the anchor and after the executed
        actions of the mean rollout, the sim's target now (see ``prediction_check.py``)."""
        if self.source is None:
            raise RuntimeError("check_predictions: attach the agent to an env (the sim knows the target)")
        head, query = self.objective.head, task.query.float()
        executed = actions[:, : self.replan_every].to(self.model.device)
        if task.object_start is not None:  # a head that integrates the target: the carried one
            _, moved = head.state_rollout(task.ee_start, task.object_start, task.last_action, executed)
            estimate, predicted = task.object_start[:, :2].cpu().numpy(), moved[:, -1, :2].cpu().numpy()
        else:
            _, out = self.model.rollout(state, executed, sample=False, decode=False)
            estimate = head(self.model.features(state).float(), query)[:, :2].cpu().numpy()
            predicted = head(out[:, -1].float(), query)[:, :2].cpu().numpy()
        for j, i in enumerate(envs):
            slot, real = self._slots[i], self.source.target_position(i)[:2]
            self.prediction_check.add(i, slot, PlanReading(slot.t, real, estimate[j], predicted[j]))


class OracleAgent(PlanningAgent):
    """The same planning loop on the real simulator (``SimOracle``); reads ``get_state`` from the
    attached env at every plan. ``oracle`` defaults to a ``SimOracle`` with the env's config."""

    def __init__(
        self, planner: BoxPlanner, oracle: Any = None, replan_every: int = 1, *, seed: int = 0
    ) -> None:
        super().__init__(planner, replan_every, seed=seed)
        self.oracle = oracle
        self.generator = torch.Generator().manual_seed(self.seed)

    def attach(self, env: Any) -> OracleAgent:
        super().attach(env)
        if self.oracle is None:
            from worldmodel.planning.oracle import SimOracle

            self.oracle = SimOracle(self.source.sim_config())
        return self

    def _plan(self, envs: list[int], obs: np.ndarray) -> Tensor:
        if self.source is None:
            raise RuntimeError("the oracle reads the simulator: call agent.attach(env) first")
        states = [self.source.sim_state(i) for i in envs]
        result = self.planner.optimize(
            lambda cand: self.oracle(states, cand),
            init=self._warm(envs, torch.device("cpu")),
            generator=self.generator,
        )
        self._keep_warm(envs, result, self.generator)
        return result.actions


class RandomAgent:
    """Uniform random actions in ``[low, high]^A`` with the same ``predict`` (a baseline)."""

    def __init__(self, action_dim: int = 4, low: float = -1.0, high: float = 1.0, *, seed: int = 0) -> None:
        self.action_dim, self.low, self.high = int(action_dim), float(low), float(high)
        self.rng = np.random.default_rng(seed)
        self.planning_seconds, self.actions_taken = 0.0, 0

    def attach(self, env: Any) -> RandomAgent:
        return self

    def reset_stats(self) -> None:
        self.planning_seconds, self.actions_taken = 0.0, 0

    @property
    def ms_per_action(self) -> float:
        return 1000.0 * self.planning_seconds / max(self.actions_taken, 1)

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        tic = time.perf_counter()
        obs = np.asarray(observation)
        n = 1 if obs.ndim == 3 else len(obs)
        actions = self.rng.uniform(self.low, self.high, (n, self.action_dim)).astype(np.float32)
        self.planning_seconds += time.perf_counter() - tic
        self.actions_taken += n
        return (actions[0] if obs.ndim == 3 else actions), None
