"""Planning objectives: score candidate action sequences by rolling a ``LatentDynamics`` forward.

Layout. ``P`` planning problems (one model state each, batch ``P``) and candidates
``(P, N, H, A)``. The state is tiled with ``state.repeat_interleave(N * K)`` and the candidates
flattened problem-major, so row ``(p * N + n) * K + k`` is particle ``k`` of candidate ``n`` of
problem ``p`` (``K = particles``, several noise draws per candidate whose returns are averaged).
Long batches are cut into chunks of ``max_batch`` rows.

Randomness. With ``common_noise`` (default) every candidate of a problem sees the same model
noise sequences (common random numbers, passed through ``step``'s ``noise``), so candidates are
compared on the same imagined futures rather than on luck; ``sample=False`` plans on the model's
mean prediction instead.

Objectives (rewards per predicted step; the score is their sum, discounted, over ``frames="all"``
steps or the last step's alone with ``frames="last"``):

- ``LearnedReward(head, task=...)``: the task's reward (``worldmodel.envs.task``: the real env's
  and ``Dream-v0``'s, one implementation) on the target object and end effector an ``ObjectHead``
  predicts from the model's features. Stays in latent space (``rollout(decode=False)``).
- ``GoalImage("pixels")``: minus the RMS pixel distance (in [0, 1]) between predicted frames and
  the goal image (Visual Foresight's goal-image cost, on every frame or the last).
- ``GoalImage("features")``: minus the L2 distance between the rollout's ``features`` and the
  goal's, where the goal's features are the model's ``features`` after watching the goal image
  held still as its context (``n_past`` copies, zero actions). This compares like with like (the
  state after a predictor step) and stays in latent space; ``Dream-v0``'s feature distance instead
  decodes and re-encodes each frame.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from worldmodel.choices import check_choice
from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.dynamics.heads import arm_along
from worldmodel.envs import task as tasks
from worldmodel.envs.task import TaskSpec

FRAMES = ("all", "last")


@dataclasses.dataclass
class Task:
    """What a planning problem aims at, batched over ``P`` problems (fields may be None).

    ``goal_pos`` ``(P, 3)`` goal of the target object (m); ``query`` ``(P, 3)`` the target's position
    at the start of the episode (the ``ObjectHead``'s query); ``ee_start`` ``(P, 3)`` the gripper's
    position at the state planned from (proprioception, for heads that read the arm relative to
    it); ``last_action`` ``(P, A)`` the action taken just before that state (for heads that
    integrate the arm from the actions); ``object_start`` ``(P, 3)`` the target's position at that
    state (for heads that integrate the objects from the actions: ``MPCAgent`` fills it with the
    target carried along the executed actions; ``None``: the query, exact where a task starts);
    ``goal_image`` uint8 ``(P, H, W, 3)``; ``goal_features`` ``(P, F)`` filled in by
    ``GoalImage.prepare``.
    """

    goal_pos: Tensor | None = None
    query: Tensor | None = None
    goal_image: Tensor | None = None
    goal_features: Tensor | None = None
    ee_start: Tensor | None = None
    last_action: Tensor | None = None
    object_start: Tensor | None = None

    def _map(self, fn) -> Task:
        values = {f.name: getattr(self, f.name) for f in _fields(self)}
        return Task(**{k: None if v is None else fn(v) for k, v in values.items()})

    def __getitem__(self, idx: Any) -> Task:
        return self._map(lambda t: t[idx])

    def to(self, device: torch.device | str) -> Task:
        return self._map(lambda t: t.to(device))

    def __len__(self) -> int:
        sizes = {len(v) for f in _fields(self) if (v := getattr(self, f.name)) is not None}
        return sizes.pop() if sizes else 0

    @staticmethod
    def cat(tasks: list[Task]) -> Task:
        """Problems of several tasks, in order (a field is kept only if every task has it)."""
        out = {}
        for f in _fields(Task):
            values = [getattr(t, f.name) for t in tasks]
            out[f.name] = torch.cat(values) if all(v is not None for v in values) else None
        return Task(**out)


def _fields(obj: Any) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(obj)


class Objective(ABC):
    """Scores candidates ``(P, N, H, A)`` from model states ``(P,)``; higher is better.

    Args:
        frames: ``"all"`` (discounted sum of per-step rewards) or ``"last"`` (final step only).
        discount: per-step discount of the sum.
        sample: sample the model's noise (``False``: its mean prediction).
        temperature: scales the model's noise.
        common_noise: every candidate of a problem shares the noise sequences (CRN).
        particles: noise draws per candidate; their returns are averaged.
        max_batch: most rollouts per model call (chunks); None: all at once.
    """

    def __init__(
        self,
        *,
        frames: str = "all",
        discount: float = 1.0,
        sample: bool = True,
        temperature: float = 1.0,
        common_noise: bool = True,
        particles: int = 1,
        max_batch: int | None = None,
    ) -> None:
        check_choice("frames", frames, FRAMES)
        if particles < 1 or (max_batch is not None and max_batch < 1):
            raise ValueError(f"particles and max_batch must be >= 1, got {particles}, {max_batch}")
        self.frames, self.discount = frames, float(discount)
        self.sample, self.temperature = bool(sample), float(temperature)
        self.common_noise, self.particles, self.max_batch = bool(common_noise), int(particles), max_batch

    @property
    def needs_pixels(self) -> bool:
        """Whether ``rewards`` reads decoded frames (else rollouts stay in feature space)."""
        return False

    @property
    def needs_goal_image(self) -> bool:
        """Whether ``prepare`` needs ``task.goal_image``."""
        return False

    @property
    def needs_rollout(self) -> bool:
        """Whether ``rewards`` reads the model's rollout (else it gets ``(B, H, 0)`` outputs and
        the model is not run: a head that integrates all it reads from the actions)."""
        return True

    def prepare(self, model: LatentDynamics, task: Task) -> Task:
        """Per-episode pre-computation on the task (e.g. goal features); default: unchanged."""
        return task

    @abstractmethod
    def rewards(self, outputs: Tensor, task: Task, problem: Tensor, actions: Tensor | None = None) -> Tensor:
        """Per-step rewards ``(B, H)`` of rollout outputs ``(B, H, ...)`` (frames ``(B, H, 3, h, w)``
        if ``needs_pixels`` else features ``(B, H, F)``) of ``actions`` ``(B, H, A)`` (read by
        heads that integrate the arm from them); ``problem`` ``(B,)`` indexes ``task``."""

    def __call__(
        self,
        model: LatentDynamics,
        state: State,
        task: Task,
        actions: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Scores ``(P, N)`` of candidates ``actions`` ``(P, N, H, A)`` from ``state`` (batch ``P``).

        Runs without autograd unless asked: with grad mode on and ``actions`` requiring grad (the
        gradient planner), the scores are differentiable in the actions."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and actions.requires_grad):
            return self._scores(model, state, task, actions, generator)

    def _scores(
        self,
        model: LatentDynamics,
        state: State,
        task: Task,
        actions: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        p, n, h, a = actions.shape
        if len(state) != p:
            raise ValueError(f"actions: {p} problems but the state has batch {len(state)}")
        k = self.particles
        dev = model.device
        flat = actions.to(dev, torch.float32).repeat_interleave(k, dim=1).reshape(p * n * k, h, a)
        noise = self._noise(model, p, n, h, generator)
        weights = self._weights(h, dev)
        total = p * n * k
        chunk = self.max_batch or total
        scores = []
        for start in range(0, total, chunk):
            rows = torch.arange(start, min(start + chunk, total), device=dev)
            problem = rows // (n * k)
            if not self.needs_rollout:  # every reading integrated from the actions
                out = flat.new_zeros(len(rows), h, 0)
                scores.append((self.rewards(out, task, problem, flat[rows]) * weights).sum(1))
                continue
            sub = state.repeat_interleave(n * k) if chunk == total else state[problem]
            _, out = model.rollout(
                sub,
                flat[rows],
                sample=self.sample,
                temperature=self.temperature,
                generator=generator,
                noise=None if noise is None else noise[rows],
                decode=self.needs_pixels,
            )
            scores.append((self.rewards(out, task, problem, flat[rows]) * weights).sum(1))
        return torch.cat(scores).view(p, n, k).mean(2)

    def _noise(
        self, model: LatentDynamics, p: int, n: int, h: int, generator: torch.Generator | None
    ) -> Tensor | None:
        """Standard normals ``(P * N * K, H, D)``: shared across a problem's candidates with CRN."""
        d = model.noise_dim
        if not self.sample or d == 0:
            return None
        k, dev = self.particles, model.device
        if self.common_noise:
            eps = torch.randn(p, 1, k, h, d, generator=generator, device=dev).expand(p, n, k, h, d)
        else:
            eps = torch.randn(p, n, k, h, d, generator=generator, device=dev)
        return eps.reshape(p * n * k, h, d)

    def _weights(self, h: int, device: torch.device) -> Tensor:
        if self.frames == "last":
            w = torch.zeros(h, device=device)
            w[-1] = 1.0
            return w
        return self.discount ** torch.arange(h, device=device, dtype=torch.float32)


class LearnedReward(Objective):
    """The task's reward (``worldmodel.envs.task.reward``, as the real env computes it) on the
    target object and end effector that an ``ObjectHead`` reads off the model's features.

    ``push`` and ``recorded-goal``: minus the predicted target-goal xy distance (m), minus
    ``reach_weight`` times the predicted end-effector-to-target distance (3-D; the shaping the
    real env and the simulator oracle use: the push distance alone is flat until the gripper
    touches the object, so short plans would never find a push). ``reach``: minus the predicted
    end-effector-goal distance. ``task`` needs ``goal_pos`` (and ``query`` for the object tasks).

    A head that integrates the objects (``objects_from_actions``, ``state_objects="actions"``)
    rolls the arm and the target along each candidate's actions from ``task.ee_start`` and
    ``task.object_start`` (``state_rollout``); it reads no features, so the model is not run
    (``needs_rollout``) and a plan costs a few small MLP calls.

    Args:
        head: an ``ObjectHead`` (the model's ``state_head`` or a file's).
        task: a ``TaskSpec`` or a task name (default ``push``).
        reach_weight: overrides the task's shaping weight (``None``: the task's, 0.5, when the
            head has an end-effector branch, else 0).
        **options: see ``Objective``.
    """

    def __init__(
        self,
        head: torch.nn.Module,
        *,
        task: TaskSpec | str = "push",
        reach_weight: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.spec = task if isinstance(task, TaskSpec) else TaskSpec(name=task)
        has_ee = getattr(head, "has_end_effector", False)
        w = (self.spec.reach_weight if has_ee else 0.0) if reach_weight is None else float(reach_weight)
        if not w >= 0:
            raise ValueError(f"reach_weight must be >= 0, got {reach_weight}")
        self.reach_weight = w if self.spec.uses_objects else 0.0
        self.uses_ee = self.reach_weight > 0 or not self.spec.uses_objects  # reads the gripper
        if self.uses_ee and not has_ee:
            raise ValueError(
                f"task {self.spec.name!r} with reach_weight {self.reach_weight} needs a head with an "
                "end-effector branch (train the model with state_head=true, or retrain the head)"
            )
        self.head = head.eval()
        # a head that integrates the objects rolls them with the integrated arm, shaping or not
        integrates = bool(getattr(head, "objects_from_actions", False))
        self.integrates_objects = self.spec.uses_objects and integrates
        arm = self.uses_ee or self.integrates_objects
        self.needs_ee_start = arm and bool(getattr(head, "ee_relative", False))
        self.needs_last_action = arm and bool(getattr(head, "arm_from_actions", False))

    @property
    def needs_rollout(self) -> bool:
        if self.spec.uses_objects:
            return not self.integrates_objects
        return not (self.uses_ee and self.needs_last_action)  # reach on an integrated arm

    def prepare(self, model: LatentDynamics, task: Task) -> Task:
        if task.goal_pos is None or (self.spec.uses_objects and task.query is None):
            raise ValueError("task: LearnedReward needs goal_pos and query (the target's start position)")
        if self.needs_ee_start and task.ee_start is None:
            raise ValueError(
                "task: this head reads the arm relative to its start; LearnedReward needs ee_start"
            )
        if self.needs_last_action and task.last_action is None:
            raise ValueError(
                "task: this head integrates the arm from the actions; LearnedReward needs last_action"
            )
        self.head.to(model.device)
        if self.integrates_objects and task.object_start is None:
            task = dataclasses.replace(task, object_start=task.query)
        return task.to(model.device)

    def rewards(self, outputs: Tensor, task: Task, problem: Tensor, actions: Tensor | None = None) -> Tensor:
        b, h, f = outputs.shape
        goal = task.goal_pos[problem].float()[:, None, :]
        if self.integrates_objects:  # arm and target rolled along the actions (``state_rollout``)
            last, start = task.last_action[problem].float(), task.ee_start[problem].float()
            obj = task.query if task.object_start is None else task.object_start  # see Task
            arm, pos = self.head.state_rollout(start, obj[problem].float(), last, actions)
            return tasks.reward(self.spec, pos, arm, goal, self.reach_weight)
        feats = outputs.reshape(b * h, f).float()
        ee = None
        if self.uses_ee and not self.needs_ee_start:  # an absolute reading off the features
            ee = self.head.end_effector(feats).view(b, h, -1)
        elif self.uses_ee:
            last = None if task.last_action is None else task.last_action[problem].float()
            ee = arm_along(self.head, outputs.float(), task.ee_start[problem].float(), actions, last)
        pos = ee
        if self.spec.uses_objects:
            query = task.query[problem].float().repeat_interleave(h, dim=0)
            pos = self.head(feats, query).view(b, h, -1)
        return tasks.reward(self.spec, pos, pos if ee is None else ee, goal, self.reach_weight)


class GoalImage(Objective):
    """Minus the distance of predicted frames to the goal image, in ``"pixels"`` or ``"features"``.

    ``task`` needs ``goal_image``. See the module docstring and ``Objective`` for the options.
    """

    def __init__(self, distance: str = "pixels", **options: Any) -> None:
        if distance not in ("pixels", "features"):
            raise ValueError(f"distance must be 'pixels' or 'features', got {distance!r}")
        super().__init__(**options)
        self.distance = distance

    @property
    def needs_pixels(self) -> bool:
        return self.distance == "pixels"

    @property
    def needs_goal_image(self) -> bool:
        return True

    @torch.no_grad()
    def prepare(self, model: LatentDynamics, task: Task) -> Task:
        if task.goal_image is None:
            raise ValueError("task: GoalImage needs goal_image")
        task = task.to(model.device)
        if self.distance == "features":
            task = dataclasses.replace(task, goal_features=goal_features(model, task.goal_image))
        return task

    def rewards(self, outputs: Tensor, task: Task, problem: Tensor, actions: Tensor | None = None) -> Tensor:
        if self.distance == "pixels":
            goal = task.goal_image[problem].movedim(-1, -3).float()[:, None] / 255.0  # (B, 1, 3, h, w)
            return -(outputs.float() - goal).pow(2).flatten(2).mean(2).sqrt()
        return -torch.linalg.vector_norm(outputs.float() - task.goal_features[problem][:, None], dim=-1)


@torch.no_grad()
def goal_features(model: LatentDynamics, goal_image: Tensor) -> Tensor:
    """``features`` ``(P, F)`` after the model watched ``goal_image`` uint8 ``(P, H, W, 3)`` held still
    for ``n_past`` frames (zero actions)."""
    c = max(int(model.config.n_past), 1)
    frames = goal_image.to(model.device)[:, None].expand(-1, c, -1, -1, -1).contiguous()
    actions = torch.zeros(len(goal_image), c - 1, model.config.action_dim, device=model.device)
    return model.features(model.initial(frames, actions)).float()
