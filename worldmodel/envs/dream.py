"""``worldmodel/Dream-v0``: a learned world model behind the spaces of ``worldmodel/PushTable-v0``.

The pieces shared with the batched env (``dream_vec.py``) live in ``DreamCore``: the model, a pool
of start contexts with their tasks, and batched ``start`` / ``step`` / ``observe`` / ``score``.
``DreamEnv`` is that core at batch size one, so a single env and row ``i`` of a batched env run
the same code.

Start contexts. At construction the env draws ``pool_size`` start contexts, once, from
``pool_seed``: fresh episodes of the real sim (``data=None``: a ``RandomPushPolicy`` rollout of
``context_frames`` steps in ``PushTableEnv``, with its goal, target and ``render_goal()`` image)
or the first frames of ``pool_size`` episodes of a dataset (``data=PATH``, ``split``; the goal
image is the episode's last frame). It runs the model's ``initial`` on all of them in one
batch. ``reset(seed=...)`` then draws, from ``self.np_random``: a pool entry, its task (the
stored goal and target; for data that stores none, a goal from PushTable's goal distribution and a
target among the present objects) and the episode's noise key. Resetting is a gather.

Randomness. Everything random after ``reset(seed)`` comes from ``self.np_random``: the model's
noise is passed to ``model.step`` as its ``noise`` argument, hashed (``_noise.py``) from a key
drawn at reset, so the same seed gives the same dream, bit for bit on the CPU, and row ``i`` of
a ``DreamVecEnv`` equals a single env seeded ``seed + i``.

Rewards. ``reward="learned"``: an ``ObjectHead`` (``dynamics/heads.py``; the model's own
``state_head`` when it was trained with one, else the head stored for the checkpoint, refused
when it was fitted to other weights or reads another feature size: ``heads.select_head``) predicts
where the target object and the end effector are now from the model's features (and the
target's position at reset); distance, reward and success are then the task's
(``worldmodel.envs.task``, ``task=push|recorded-goal|reach``), computed as the real env computes
them: for ``push``, minus the target's xy distance (m) to the goal minus ``reach_weight`` times
the end effector's distance to the target, ``is_success`` when the distance is below
``success_tolerance`` (0.05 m). ``reward="goal-image"``: minus the distance between the dreamed
frame and the goal image,
``goal_distance="pixels"`` (RMS over pixels in [0, 1]) or ``"features"`` (L2 between the model's
features of the two frames, each encoded alone with ``initial``); ``is_success`` below
``image_tolerance``. The only kind for real BAIR data, which has no object positions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from worldmodel.data.batch import frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.dynamics.inference import DTYPES, for_inference
from worldmodel.envs import task as tasks
from worldmodel.envs._noise import row_normal
from worldmodel.envs.task import REST_ACTION, TaskSpec

REWARDS = ("learned", "goal-image")
OBS_TYPES = ("pixels", "latent")
GOAL_DISTANCES = ("pixels", "features")
MAX_OBJECTS = 4  # PushTable's object slots (worldmodel.envs.scene.MAX_OBJECTS; no MuJoCo import here)
_POOL_KEYS = ("frames", "actions", "objects", "ee", "goal", "target", "goal_image")


@dataclasses.dataclass
class DreamConfig:
    """Options of ``Dream-v0`` / ``DreamVecEnv`` (every field is also a ``gym.make`` keyword)."""

    data: str | None = None
    """Dataset folder for start contexts; ``None``: fresh episodes of the real sim."""
    split: str = "test"
    """Dataset split the contexts come from."""
    reward: str = "learned"
    """``"learned"`` (object-position head, goal position) or ``"goal-image"``."""
    goal_distance: str = "pixels"
    """For ``goal-image``: ``"pixels"`` or ``"features"``."""
    obs: str = "pixels"
    """``"pixels"`` (uint8 ``(H, W, 3)``, as the real env) or ``"latent"`` (float32 ``features``)."""
    horizon: int = 50
    """Steps per episode; the last one returns ``truncated=True`` (PushTable's TimeLimit is 50)."""
    temperature: float = 1.0
    """Scales the model's sampling noise (0: the mean dream)."""
    pool_size: int = 64
    """Start contexts drawn at construction."""
    pool_seed: int = 0
    """Seed of the pool (sim episodes or dataset episodes chosen)."""
    context_frames: int | None = None
    """Context length; ``None``: the model's ``n_past``."""
    task: str = "push"
    """``push``, ``recorded-goal`` (sim pools: the real env's recorded-goal starts) or ``reach``
    (``worldmodel.envs.task``); with ``reward="learned"`` the reward is that task's, as the real
    env computes it, on the state head's predictions."""
    success_tolerance: float = tasks.TaskSpec.success_tolerance
    """``learned``: success within this xy distance (m), as the real env."""
    reach_tolerance: float = tasks.TaskSpec.reach_tolerance
    """``learned``, ``reach``: success within this 3-D distance (m), as the real env."""
    reach_weight: float = tasks.TaskSpec.reach_weight
    """``learned``, object tasks: the reward's end-effector-to-target shaping (needs a head with
    an end-effector branch; 0 turns it off)."""
    image_tolerance: float = 0.05
    """``goal-image``: success below this distance."""
    latent_bound: float = 10.0
    """``latent`` observations are clipped to ±this (SVG features are tanh outputs, in [-1, 1])."""
    task_obs: bool = False
    """``obs="latent"``, ``reward="learned"``: append the dreamed end effector (the state head's
    reading) and the episode's goal to the features, ``(F + 6,)``, a goal-conditioned observation
    (the goal is not in the pixels for ``reach``); in the real env ``agents.common.LatentObservation``
    appends the true end effector (proprioception) and goal."""
    image_size: int = 64
    """Observation size; must equal the model's (64 gives PushTable's spaces)."""
    channels_last: bool = True
    """Store the inference copy's 2-D convolution weights channels-last: batched convolutions then
    run on the faster NHWC kernels (1.5× for the tiny SVG at 256 envs on CPU)."""
    dtype: str = "auto"
    """``"float32"``, ``"bfloat16"`` (the model's convolutions in bf16, see
    ``worldmodel.dynamics.inference``; 1.6x faster batched SVG steps than float32 on an
    AVX-512-BF16 CPU, frames differ from float32 by bf16 rounding) or ``"auto"``: bf16 on a CUDA
    device that supports it for models that have a bf16 path, else float32. Either way a seeded
    dream repeats bit for bit on the CPU; the float32 copy matches the original model to float
    rounding, not bit for bit."""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("reward", self.reward, REWARDS),
            ("obs", self.obs, OBS_TYPES),
            ("goal_distance", self.goal_distance, GOAL_DISTANCES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.horizon < 1 or self.pool_size < 1:
            raise ValueError(f"horizon and pool_size must be >= 1, got {self.horizon}, {self.pool_size}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.context_frames is not None and self.context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {self.context_frames}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.task_spec()  # validates the task's fields
        if self.task != "push" and self.reward != "learned":
            raise ValueError(f"task={self.task!r} needs reward='learned' (goal images score push only)")
        if self.task_obs and (self.obs != "latent" or self.reward != "learned"):
            raise ValueError("task_obs=True needs obs='latent' and reward='learned' (a state head)")

    def task_spec(self) -> TaskSpec:
        """The task these options describe."""
        return TaskSpec.of(self)


# ------------------------------------------------------------------------------------- the core
def _load_model(checkpoint: Any, device: str | torch.device) -> tuple[LatentDynamics, str]:
    """The model (a passed one unchanged: the core runs a copy on ``device``) and its description."""
    from worldmodel.dynamics import load

    if isinstance(checkpoint, LatentDynamics):
        return checkpoint, "the model passed as checkpoint"
    if isinstance(checkpoint, (str, os.PathLike)):
        return load(checkpoint, device), str(checkpoint)
    raise ValueError(f"checkpoint must be a path or a LatentDynamics, got {type(checkpoint).__name__}")


def resolve_dtype(model: LatentDynamics, dtype: str, device: torch.device) -> str:
    """``DreamConfig.dtype`` made concrete: ``"auto"`` is bfloat16 on a bf16-capable CUDA device
    for a model with a bf16 path, else float32; other values are returned as they are."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda" and model.inference_half_modules() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def _select_head(head: Any, checkpoint: Any, model: LatentDynamics, where: str):
    """``heads.select_head`` (``head``, else the model's own state head, else the one stored for the
    checkpoint; refused when stale or of another feature size) with the dream's error when there
    is none. Returns ``(head, source)``."""
    from worldmodel.dynamics.heads import head_path_for, select_head

    path = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None
    found, source = select_head(path, model, head)
    if found is None:
        looked = f" (looked in the checkpoint and at {head_path_for(path)})" if path is not None else ""
        raise ValueError(
            f"{where}: reward='learned' needs an object-position head and none is trained"
            f"{looked}; "
            f"run `worldmodel train-head CKPT --data DIR`, pass head=PATH, or use "
            "reward='goal-image'"
        )
    return found, source


class DreamCore:
    """Model, start-context pool and the batched operations both dream envs use.

    Pool tensors (leading ``P``, on ``device``): ``frames`` uint8 ``(P, T0, H, W, 3)``, ``actions``
    ``(P, T0-1, A)``, ``objects`` ``(P, K, 3)`` at the last context frame (NaN: absent), ``ee``
    ``(P, 3)`` the end effector there (the state head reads the arm relative to it), ``goal``
    ``(P, 3)`` (NaN: none stored), ``target`` ``(P,)`` (-1: none), ``goal_image`` uint8
    ``(P, H, W, 3)``; ``state`` the ``initial`` state of every entry; ``obs0`` its observation
    (NumPy, for same-step resets without a device round trip).
    """

    def __init__(
        self, checkpoint: Any, config: DreamConfig, *, head: Any = None, device: str | torch.device = "auto"
    ) -> None:
        self.config = cfg = config
        from worldmodel.dynamics import resolve_device

        model, self.where = _load_model(checkpoint, device)
        dev = resolve_device(device) if isinstance(checkpoint, LatentDynamics) else model.device
        try:
            # An inference copy (BatchNorm folded, transposed convs rewritten, SVG's decoder split
            # at its skips; the same function): 1.7x faster batched steps on CPU in float32, 2.75x
            # in bf16. The model passed in is left as it was (not moved, not put in eval mode).
            dtype = resolve_dtype(model, cfg.dtype, dev)
            self.model = for_inference(model, dtype=dtype, channels_last=cfg.channels_last, device=dev)
        except ValueError as e:
            raise ValueError(f"{self.where}: {e}") from None
        self.device = self.model.device
        mc = self.model.config
        if mc.image_size != cfg.image_size:
            raise ValueError(
                f"{self.where}: the model makes {mc.image_size}-px frames but the env's "
                f"image_size is {cfg.image_size}; pass image_size={mc.image_size} (spaces then "
                "differ from PushTable-v0) or use a 64-px model"
            )
        if mc.action_dim != 4:
            raise ValueError(f"{self.where}: action_dim {mc.action_dim}, PushTable actions have 4")
        self.context = cfg.context_frames or mc.n_past
        self.head = None
        if cfg.reward == "learned":
            # Checked against the original model's weights (the copy's are rewritten).
            found, source = _select_head(head, checkpoint, model, self.where)
            own = source == "model"  # trained with the model: the inference copy carries it
            self.head = (self.model.state_head if own else found).to(self.device)
            self.head.eval()
            if (self._reads_ee(cfg) or cfg.task_obs) and not self.head.has_end_effector:
                raise ValueError(
                    f"{self.where}: task={cfg.task!r} with reach_weight={cfg.reach_weight} needs a head "
                    "with an end-effector branch (retrain it on data with states, or pass reach_weight=0)"
                )
        self.spec = cfg.task_spec()
        if cfg.data is not None and cfg.task == "recorded-goal":
            raise ValueError("task='recorded-goal' starts from the real env's recorded starts: use data=None")
        pool = _data_pool(cfg, self.context) if cfg.data is not None else _sim_pool(cfg, self.context)
        self.pool = {k: torch.from_numpy(v).to(self.device) for k, v in pool.items()}
        if cfg.reward == "learned" and not bool(torch.isfinite(self.pool["objects"]).any()):
            raise ValueError(
                f"{cfg.data}: reward='learned' needs object positions, the data has none "
                "(real BAIR data): use reward='goal-image'"
            )
        relative = self.head is not None and getattr(self.head, "ee_relative", False)
        if relative and self._reads_ee(cfg) and not np.isfinite(pool["ee"]).all():
            raise ValueError(
                f"{cfg.data}: the state head reads the arm relative to its recorded position and this "
                "data records none: use reward='goal-image' (or reach_weight=0 for the object tasks)"
            )
        self._num_objects = np.isfinite(pool["objects"]).all(-1).sum(-1)
        self._has_task = (pool["target"] >= 0) & np.isfinite(pool["goal"]).all(-1)
        self._pool_goal, self._pool_target = pool["goal"], pool["target"]
        self._pool_objects = pool["objects"]
        self._build_pool_states()

    # --- set-up -------------------------------------------------------------------------------
    @staticmethod
    def _reads_ee(cfg: DreamConfig) -> bool:
        """Whether the learned reward reads the gripper (reach, or the object tasks' shaping)."""
        return cfg.task == "reach" or cfg.reach_weight > 0

    @torch.no_grad()
    def _build_pool_states(self, chunk: int = 256) -> None:
        p, states, goal_feats = self.pool, [], []
        for i in range(0, len(p["frames"]), chunk):
            states.append(self.model.initial(p["frames"][i : i + chunk], p["actions"][i : i + chunk].float()))
            if self.config.goal_distance == "features":
                goal_feats.append(self.frame_features(p["goal_image"][i : i + chunk]))
        self.pool_state = State.cat(states)
        self.goal_features = torch.cat(goal_feats) if goal_feats else None
        self.obs0 = self.observe(self.pool_state, torch.arange(len(p["frames"]), device=self.device))
        self.obs0 = self.obs0.cpu().numpy()  # without the goal part: a reset appends it (with_goal)
        self.obs_shape = self.obs0.shape[1:]

    def observation_space(self) -> spaces.Box:
        cfg = self.config
        if cfg.obs == "pixels":
            return spaces.Box(0, 255, (cfg.image_size, cfg.image_size, 3), np.uint8)
        b = float(cfg.latent_bound)
        return spaces.Box(-b, b, (self.model.feature_dim + 6 * cfg.task_obs,), np.float32)

    # --- episodes -----------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """One episode's draws from ``rng``: pool index, goal ``(3,)``, query ``(3,)`` (the target's
        position at reset) and the noise key ``(2,)``. Same calls, same order, for every env."""
        idx = int(rng.integers(len(self._has_task)))
        objects = self._pool_objects[idx]
        if self._has_task[idx]:
            goal, target = self._pool_goal[idx].astype(np.float64), int(self._pool_target[idx])
        else:
            n = max(int(self._num_objects[idx]), 1)
            target = int(rng.integers(n))
            goal = _draw_goal(self.spec, rng, objects[target])
        query = objects[target] if np.isfinite(objects[target]).all() else np.zeros(3)
        key = rng.integers(0, 2**32, size=2, dtype=np.int64)
        return idx, np.asarray(goal, np.float32), np.asarray(query, np.float32), key

    def start(self, idx: Tensor) -> State:
        """Initial states of pool entries ``idx`` ``(B,)`` (a gather: ``initial`` ran at set-up)."""
        return self.pool_state[idx]

    @torch.no_grad()
    def step(self, state: State, actions: Tensor, keys: Tensor, counters: Tensor, seed: int = 0) -> State:
        """One batched model step with per-row noise from ``(keys, counters)`` (see ``_noise.py``),
        so row ``i`` matches a batch-of-one step of the same episode. ``seed`` seeds the generator
        for any draws a model makes beyond its ``noise`` argument."""
        cfg = self.config
        sample = cfg.temperature > 0
        noise = None
        if sample and self.model.noise_dim:
            noise = row_normal(keys, counters, self.model.noise_dim, torch.float32)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self.model.step(
            state, actions, sample=sample, temperature=cfg.temperature, generator=gen, noise=noise
        )

    @torch.no_grad()
    def frames(self, state: State) -> Tensor:
        """Dreamed frames, uint8 ``(B, H, W, 3)``."""
        return frames_to_uint8(self.model.decode(state))

    @torch.no_grad()
    def observe(self, state: State, pidx: Tensor | None = None, goal: Tensor | None = None) -> Tensor:
        """Observations on the device: uint8 frames or clipped float32 features; with ``task_obs``
        the head's end effector (rows' pool entries ``pidx``) and ``goal`` (when given) follow."""
        if self.config.obs == "pixels":
            return self.frames(state)
        b = self.config.latent_bound
        feats = self.model.features(state).float()
        if self.config.task_obs:
            ee = self.head.end_effector(feats, self.pool["ee"][pidx])
            feats = torch.cat([feats, ee, *([] if goal is None else [goal.float()])], dim=1)
        return feats.clamp(-b, b)

    def with_goal(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """``obs0`` rows ``(..., D)`` with the episode's goal ``(..., 3)`` appended (``task_obs``)."""
        if not self.config.task_obs:
            return obs
        b = self.config.latent_bound
        return np.concatenate([obs, np.clip(goal, -b, b)], axis=-1).astype(np.float32)

    @torch.no_grad()
    def frame_features(self, frames: Tensor) -> Tensor:
        """Features of single frames uint8 ``(B, H, W, 3)``, each encoded alone by ``initial``."""
        empty = torch.zeros(len(frames), 0, self.model.config.action_dim, device=self.device)
        return self.model.features(self.model.initial(frames[:, None], empty)).float()

    @torch.no_grad()
    def score(self, state: State, goal: Tensor, query: Tensor, pidx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(distance (B,), reward (B,), target_pos (B, 3))`` of each row (see the module
        docstring); ``reward="learned"`` computes the task's distance and reward as the real env
        does (``worldmodel.envs.task``) on the head's predicted target and end effector."""
        cfg = self.config
        if cfg.reward == "learned":
            feats = self.model.features(state).float()
            pos = self.head(feats, query)
            if self.head.has_end_effector:
                ee = self.head.end_effector(feats, self.pool["ee"][pidx])
            else:  # reach_weight == 0 and an object task (checked at set-up): ee is unused
                ee = pos
            dist = tasks.distance(self.spec, pos, ee, goal)
            return dist, tasks.reward(self.spec, pos, ee, goal), pos
        if cfg.goal_distance == "pixels":
            x = self.model.decode(state).float()
            g = self.pool["goal_image"][pidx].movedim(-1, -3).float() / 255.0
            d = (x - g).pow(2).flatten(1).mean(1).sqrt()
        else:
            diff = self.frame_features(self.frames(state)) - self.goal_features[pidx]
            d = torch.linalg.vector_norm(diff, dim=1)
        return d, -d, torch.full_like(goal, float("nan"))

    def tolerance(self) -> float:
        """Success threshold on ``distance`` for the configured reward."""
        return self.spec.tolerance if self.config.reward == "learned" else self.config.image_tolerance

    def goal_images(self, pidx: np.ndarray) -> np.ndarray:
        return self.pool["goal_image"][torch.as_tensor(pidx, device=self.device)].cpu().numpy()


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float32 actions of ``shape``, clipped to [-1, 1]; ``ValueError`` on a wrong shape or NaN/Inf."""
    a = np.asarray(actions, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"action must have shape {shape} (dx, dy, dz, gripper), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action contains NaN or Inf: {actions!r}")
    return np.clip(a, -1.0, 1.0)


def _draw_goal(spec: TaskSpec, rng: np.random.Generator, target: np.ndarray) -> np.ndarray:
    """PushTable's ``push`` goal distribution (``task.sample_push_goal``) for a pool entry that
    stores no goal; z is the target's height."""
    goal = tasks.sample_push_goal(spec, rng, np.asarray(target[:2]), tries=100)
    z = float(target[2]) if np.isfinite(target).all() else 0.0
    return np.array([goal[0], goal[1], z])


# ------------------------------------------------------------------------------------- pools
def _sim_pool(cfg: DreamConfig, context: int) -> dict[str, np.ndarray]:
    """``pool_size`` fresh sim episodes of ``context`` frames, seeded by ``pool_seed``.

    ``push`` and ``reach``: a ``RandomPushPolicy`` rollout of ``context`` steps in a PushTable of
    that task. ``recorded-goal``: the real env's recorded-goal start, its first frame held still
    (``REST_ACTION``) as the context, as the planner pads it."""
    from worldmodel.data.policy import RandomPushPolicy, rollout
    from worldmodel.envs.push_table import PushTableEnv

    env = PushTableEnv(image_size=cfg.image_size, task=cfg.task)
    out: dict[str, list] = {k: [] for k in _POOL_KEYS}
    try:
        for i in range(cfg.pool_size):
            env_seed, policy_seed = np.random.SeedSequence(cfg.pool_seed, spawn_key=(i,)).generate_state(2)
            if cfg.task == "recorded-goal":
                obs, info = env.reset(seed=int(env_seed))
                ep = {"frames": np.stack([obs] * context), "actions": np.stack([REST_ACTION] * context)}
                ep["objects"] = _pad_objects(info["object_pos"][: info["num_objects"]])[None]
                ep["states"] = np.asarray(info["ee_pos"], np.float32)[None]
                ep["goal"], ep["target"] = info["goal_pos"], np.array(info["target"], np.int64)
            else:
                ep = rollout(env, RandomPushPolicy(int(policy_seed)), context, int(env_seed))
            out["frames"].append(ep["frames"])
            out["actions"].append(ep["actions"][: context - 1])
            out["objects"].append(ep["objects"][-1])
            out["ee"].append(ep["states"][-1, :3])
            out["goal"].append(ep["goal"])
            out["target"].append(ep["target"])
            out["goal_image"].append(env.render_goal())
    finally:
        env.close()
    return _stack(out)


def _data_pool(cfg: DreamConfig, context: int) -> dict[str, np.ndarray]:
    """The first ``context`` frames of ``pool_size`` dataset episodes (chosen by ``pool_seed``)."""
    from worldmodel.data import open_dataset

    probe = open_dataset(cfg.data, cfg.split, seq_len=context, random_offset=False, image_size=cfg.image_size)
    length = int(probe.spec["episode_length"])
    ds = open_dataset(cfg.data, cfg.split, seq_len=length, random_offset=False, image_size=cfg.image_size)
    if not getattr(ds, "has_actions", True):
        raise ValueError(f"{cfg.data}: the dream needs actions in the data (PNG folders have none)")
    rng = np.random.default_rng(cfg.pool_seed)
    picks = rng.permutation(len(ds))[: cfg.pool_size] if len(ds) > cfg.pool_size else np.arange(len(ds))
    out: dict[str, list] = {k: [] for k in _POOL_KEYS}
    for i in picks:
        item = ds[int(i)]
        frames = item["frames"].numpy()
        out["frames"].append(frames[:context])
        out["actions"].append(item["actions"].numpy()[: context - 1].astype(np.float32))
        objects = np.full((MAX_OBJECTS, 3), np.nan)
        if "objects" in item:
            objects = item["objects"].numpy()[context - 1]
        out["objects"].append(_pad_objects(objects))
        states = item["states"].numpy()[context - 1, :3] if "states" in item else np.full(3, np.nan)
        out["ee"].append(states)
        goal, target = _episode_task(item)
        out["goal"].append(goal)
        out["target"].append(target)
        out["goal_image"].append(frames[-1])
    return _stack(out)


def _episode_task(item: dict) -> tuple[np.ndarray, int]:
    """The stored goal and target of a dataset item, or (NaN, -1) when the data keeps none."""
    if "goal" in item and "target" in item:
        return np.asarray(item["goal"], np.float32).reshape(3), int(np.asarray(item["target"]).reshape(-1)[0])
    return np.full(3, np.nan, np.float32), -1


def _pad_objects(objects: np.ndarray) -> np.ndarray:
    out = np.full((MAX_OBJECTS, 3), np.nan, np.float32)
    n = min(len(objects), MAX_OBJECTS)
    out[:n] = objects[:n]
    return out


def _stack(out: dict[str, list]) -> dict[str, np.ndarray]:
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["actions"] = arrays["actions"].astype(np.float32)
    arrays["objects"] = arrays["objects"].astype(np.float32)
    arrays["ee"] = arrays["ee"].astype(np.float32)
    arrays["goal"] = arrays["goal"].astype(np.float32)
    arrays["target"] = arrays["target"].astype(np.int64)
    return arrays


# ------------------------------------------------------------------------------------- the env
class DreamEnv(gym.Env):
    """A world model's dream of PushTable, one episode at a time.

    **Spaces** as ``worldmodel/PushTable-v0``: action ``Box(-1, 1, (4,), float32)``;
    observation ``Box(0, 255, (64, 64, 3), uint8)`` (``obs="pixels"``) or, with ``obs="latent"``,
    ``Box(-latent_bound, latent_bound, (F,), float32)``, the model's ``features``.

    **Actions**: a NaN/Inf or wrong-shaped action raises ``ValueError``; values outside [-1, 1]
    are clipped (as the real env does).

    **Episode**: never terminated (as the real env); truncated after ``horizon`` steps.

    **info**: ``distance`` (float), ``is_success`` (bool), ``pool_index`` (int); with
    ``reward="learned"`` also ``goal_pos`` and ``target_pos`` (the head's prediction), float32 (3,).

    **render** (``render_mode="rgb_array"``): the dreamed frame next to the goal image,
    uint8 ``(H, 2W, 3)``.

    Args:
        checkpoint: a checkpoint path or a ``LatentDynamics``.
        head: the object-position head (``ObjectHead`` or path) for ``reward="learned"``; by
            default the model's own state head, else the one stored for the checkpoint
            (``heads.select_head``: a stale head file or one of another feature size is refused).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ...
        **options: ``DreamConfig`` fields.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        checkpoint: Any = None,
        *,
        render_mode: str | None = None,
        head: Any = None,
        device: str | torch.device = "auto",
        core: DreamCore | None = None,
        **options: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if core is None:
            if checkpoint is None:
                raise ValueError("Dream-v0 needs checkpoint=PATH or a LatentDynamics")
            core = DreamCore(checkpoint, DreamConfig(**options), head=head, device=device)
        self.core = core
        self.config = core.config
        self.render_mode = render_mode
        self.observation_space = core.observation_space()
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._state: State | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        core, dev = self.core, self.core.device
        idx, goal, query, key = core.draw(self.np_random)
        self._pidx = torch.tensor([idx], device=dev)
        self._goal = torch.as_tensor(goal, device=dev)[None]
        self._query = torch.as_tensor(query, device=dev)[None]
        self._key = torch.as_tensor(key, device=dev)[None]
        self._seed = int(key[0])
        self._t = 0
        self._state = core.start(self._pidx)
        return core.with_goal(core.obs0[idx].copy(), goal), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("DreamEnv.step() called before reset()")
        a = torch.from_numpy(check_actions(action, (4,))).to(self.core.device)[None]
        counter = torch.tensor([self._t], device=self.core.device)
        self._state = self.core.step(self._state, a, self._key, counter, self._seed + self._t)
        self._t += 1
        obs = self.core.observe(self._state, self._pidx, self._goal)[0].cpu().numpy()
        info = self._info()
        truncated = self._t >= self.config.horizon
        return obs, self._reward, False, bool(truncated), info

    def _info(self) -> dict[str, Any]:
        dist, reward, pos = self.core.score(self._state, self._goal, self._query, self._pidx)
        d = float(dist[0])
        self._reward = float(reward[0])
        info = {
            "distance": d,
            "is_success": bool(d < self.core.tolerance()),
            "pool_index": int(self._pidx[0]),
        }
        if self.config.reward == "learned":
            info["goal_pos"] = self._goal[0].cpu().numpy().copy()
            info["target_pos"] = pos[0].float().cpu().numpy()
        return info

    def render(self) -> np.ndarray | None:
        """Dreamed frame | goal image, uint8 ``(H, 2W, 3)``."""
        if self._state is None:
            raise RuntimeError("DreamEnv.render() called before reset()")
        frame = self.core.frames(self._state)[0].cpu().numpy()
        goal = self.core.goal_images(self._pidx.cpu().numpy())[0]
        return np.concatenate([frame, goal], axis=1)
