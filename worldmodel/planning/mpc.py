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

``deterministic`` is accepted for SB3 compatibility: planning is always sampled, from the
agent's own generator seeded by ``seed``, so a run is reproducible either way.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from worldmodel.data.batch import frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.dynamics.inference import for_inference
from worldmodel.envs.task import wilson_interval
from worldmodel.planning.box import BoxPlanner, CEMResult, WarmStart
from worldmodel.planning.objectives import Objective, Task


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
        try:
            value = self._call(i, "proprioception")
        except AttributeError:
            raise ValueError(
                f"env {i}: the objective's head reads the arm relative to its position at the plan, "
                "and this env has no proprioception() (PushTableEnv has it)"
            ) from None
        return np.asarray(value, np.float32).reshape(3)

    def sim_state(self, i: int) -> dict:
        """Env ``i``'s simulator state (``PushTableEnv.get_state``)."""
        return self._call(i, "get_state")

    def sim_config(self) -> Any:
        """The ``PushTableConfig`` of env 0."""
        if self.vec:
            return self.env.get_attr("config", indices=[0])[0]
        return self.env.get_wrapper_attr("config")


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
        """Work for the recording after a plan, outside the timed planning (none by default)."""

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
        for i in range(n):
            slot = self._slots[i]
            if starts[i] or slot is None:
                self._slots[i] = self._begin(i, obs[i])
            else:
                slot.frames.append(obs[i])
                slot.actions.append(slot.pending)
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
        if self.record:
            self._after_plan()
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

    def _wants_goal_image(self) -> bool:
        return self.record or self.objective.needs_goal_image

    def _prepare(self, task: Task) -> Task:
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
        model, objective, gen = self.model, self.objective, self.generator
        result = self.planner.optimize(
            lambda cand: objective(model, state, task, cand, gen),
            init=self._warm(envs, model.device),
            generator=gen,
        )
        self._keep_warm(envs, result, gen)
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
        # with a video plans exactly as one without.
        if self._to_imagine is not None:
            state, actions = self._to_imagine
            self._slots[0].plan_frames = self.imagine(state, actions)[0]
            self._to_imagine = None


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


def run_episodes(agent: Any, env: Any, episodes: int, *, seed: int | None = None) -> dict[str, Any]:
    """Run ``agent`` for ``episodes`` episodes with SB3's ``evaluate_policy``.

    Args:
        agent: anything with ``predict`` (``MPCAgent``, ``OracleAgent``, ``RandomAgent``); it is
            attached to ``env`` first.
        env: an SB3 VecEnv over PushTable, or a ``DreamVecEnv`` (its ``info`` has ``distance``
            and ``is_success``).
        seed: seeds the VecEnv before its first reset (same seed, same episodes for every agent).

    Returns:
        ``success_rate``, ``successes``, ``ci95`` (the 95 % Wilson interval of the success rate,
        ``[low, high]``), ``final_distance`` (mean task distance in metres at the end of the
        episodes), ``ms_per_action`` (the agent's planning time per action), ``episodes``.
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    finals: list[tuple[bool, float]] = []

    def on_step(local: dict, _: dict) -> None:
        if local["done"]:
            info = local["info"]
            finals.append((bool(info["is_success"]), float(info["distance"])))

    agent.attach(env)
    agent.reset_stats()
    if hasattr(agent, "reset"):
        agent.reset()
    if seed is not None:
        env.seed(seed)
    evaluate_policy(agent, env, n_eval_episodes=episodes, deterministic=True, callback=on_step, warn=False)
    successes = sum(s for s, _ in finals)
    return {
        "success_rate": float(np.mean([s for s, _ in finals])) if finals else float("nan"),
        "successes": int(successes),
        "ci95": list(wilson_interval(int(successes), len(finals))),
        "final_distance": float(np.mean([d for _, d in finals])) if finals else float("nan"),
        "ms_per_action": float(agent.ms_per_action),
        "episodes": len(finals),
    }


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deprecated name of ``run_episodes`` ("evaluate" named five different things)."""
    warnings.warn("worldmodel.planning.evaluate is now run_episodes", DeprecationWarning, 2)
    return run_episodes(*args, **kwargs)
