"""``worldmodel/Dream-v0``: a learned world model behind the spaces of ``worldmodel/PushTable-v0``.

The pieces shared with the batched env (``dream_vec.py``) live in ``DreamCore``: the model, a pool
of start contexts with their tasks, and batched ``draw`` / ``begin`` / ``step`` / ``observe`` /
``readout``. ``DreamEnv`` is that core at batch size one, so a single env and row ``i`` of a
batched env run the same code.

Start contexts. At construction the env draws ``pool_size`` start contexts, once, from
``pool_seed``: fresh episodes of the real sim (``data=None``: a ``RandomPushPolicy`` rollout of
``context_frames`` steps in ``PushTableEnv``, with its goal, target and ``render_goal()`` image)
or the first frames of ``pool_size`` episodes of a dataset (``data=PATH``, ``split``; the goal
image is the episode's last frame). It runs the model's ``initial`` on all of them in one
batch. ``reset(seed=...)`` then draws, from ``self.np_random``: a pool entry, its task (the
stored goal and target; for data that stores none, a goal from PushTable's goal distribution and a
target among the present objects) and the episode's noise key. Resetting is a gather.

The caller's own start contexts. As mbrl-lib's ``ModelEnv`` and torchrl's world-model env start
imagination from the caller's states, ``reset(options=...)`` takes a start context (``frames``,
``actions``, ``states``, ``objects``, ``num_objects``, ``goal``, ``target``, ``goal_image``:
``CONTEXT_KEYS``, a dataset item's names, so a replay buffer's or a dataset's window passes as
it is) for Dyna/MBPO-style branched rollouts; ``initial`` runs on it at the reset. The reset
draws from ``self.np_random`` exactly what a pool reset draws (the unused pool entry included),
so a pool entry passed back as options with the same seed dreams the same episode. The batched
envs take the same options batched (``DreamVecEnv.reset_from``, ``DreamVectorEnv.reset(options=)``).

Info and observations: the task's info keys (``worldmodel.envs.task.INFO_KEYS``, the same as
PushTable-v0's; a dream reports its state head's readings, at reset the context's recorded
positions, and omits what it cannot know) and, with ``goal_conditioned=True``, the
goal-conditioned ``Dict`` observation with ``compute_reward`` (``task.goal_space``).

Episode length: ``horizon`` (None by default: ``Dream-v0`` leaves it to ``gym.make``'s
``TimeLimit``, registered at ``MAX_EPISODE_STEPS`` = 50; the batched envs use 50).

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
from typing import Any, NamedTuple

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
from worldmodel.envs.task import MAX_EPISODE_STEPS, MAX_OBJECTS, REST_ACTION, TaskSpec

REWARDS = ("learned", "goal-image")
OBS_TYPES = ("pixels", "latent")
GOAL_DISTANCES = ("pixels", "features")
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
    horizon: int | None = None
    """Steps per episode; the last one returns ``truncated=True``. ``None``: ``Dream-v0`` does not
    truncate on its own: under ``gym.make`` its ``TimeLimit`` (``spec.max_episode_steps``,
    registered ``MAX_EPISODE_STEPS`` = 50, changed by ``gym.make(..., max_episode_steps=k)``) ends
    the episode, as ``PushTable-v0``'s does; the batched dreams use ``MAX_EPISODE_STEPS`` (or
    ``gym.make_vec``'s ``max_episode_steps``)."""
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
    (the goal is not in the pixels for ``reach``); in the real env
    ``worldmodel.envs.latent.LatentObservation`` appends the true end effector (proprioception) and
    goal."""
    goal_conditioned: bool = False
    """``reward="learned"``: observations ``Dict(observation=<pixels or latent>,
    achieved_goal=Box(3), desired_goal=Box(3))`` (Gymnasium-Robotics' ``GoalEnv``, SB3's
    ``HerReplayBuffer``), as ``PushTable-v0(goal_conditioned=True)``; the achieved goal is the state
    head's dreamed target (``reach``: end effector), at reset the context's recorded one."""
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
        if self.horizon is not None and not self.horizon >= 1:
            raise ValueError(f"horizon must be None or >= 1, got {self.horizon}")
        if not self.pool_size >= 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")
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
        if self.goal_conditioned and self.reward != "learned":
            raise ValueError(
                "goal_conditioned=True needs reward='learned' (the achieved goal is the state head's)"
            )
        if self.goal_conditioned and self.task_obs:
            raise ValueError(
                "goal_conditioned=True puts the goal in desired_goal, task_obs=True in the observation: "
                "choose one (HER relabels desired_goal only)"
            )

    @property
    def episode_steps(self) -> int:
        """The batched dreams' episode length: ``horizon``, else ``MAX_EPISODE_STEPS``."""
        return int(self.horizon) if self.horizon is not None else MAX_EPISODE_STEPS

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

    Episodes: ``draw`` (one env's random draws), ``check_context`` (a caller's start context),
    ``begin`` (the rows' ``Episodes``, initial states, first observations and reset readout),
    ``step``, ``observe``, ``readout`` (distance, reward and the head's positions, one host copy),
    ``info_arrays`` (the info keys, batched) and ``observation`` (the goal-conditioned dict).
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
        self._pool_objects, self._pool_ee = pool["objects"], pool["ee"]
        self._build_pool_states()

    # --- set-up -------------------------------------------------------------------------------
    @staticmethod
    def _reads_ee(cfg: DreamConfig) -> bool:
        """Whether the learned reward reads the gripper (reach, or the object tasks' shaping)."""
        return cfg.task == "reach" or cfg.reach_weight > 0

    @property
    def has_ee(self) -> bool:
        """Whether the dream knows the end effector (a state head with an end-effector branch)."""
        return self.head is not None and self.head.has_end_effector

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
        # What a reset reports without a device call: the arm (recorded, else the head's reading of
        # the initial state) and, for goal images, the initial distance.
        self._pool_ee_start = self._pool_ee.copy()
        if self.has_ee and not np.isfinite(self._pool_ee).all():
            read = self.head.end_effector(self.model.features(self.pool_state).float(), p["ee"]).cpu().numpy()
            self._pool_ee_start = np.where(np.isfinite(self._pool_ee), self._pool_ee, read).astype(np.float32)
        self._pool_dist0 = None
        if self.config.reward == "goal-image":
            self._pool_dist0 = self._image_distance(self.pool_state, p["goal_image"], self.goal_features)
            self._pool_dist0 = self._pool_dist0.float().cpu().numpy()

    def observation_space(self) -> spaces.Space:
        cfg = self.config
        if cfg.obs == "pixels":
            space = spaces.Box(0, 255, (cfg.image_size, cfg.image_size, 3), np.uint8)
        else:
            b = float(cfg.latent_bound)
            space = spaces.Box(-b, b, (self.model.feature_dim + 6 * cfg.task_obs,), np.float32)
        return tasks.goal_space(space) if cfg.goal_conditioned else space

    # --- episodes -----------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator, context: dict[str, Any] | None = None) -> Draw:
        """One episode's draws from ``rng``: pool entry, task and noise key (same calls, same order,
        for every env). With a caller's ``context`` (``check_context``) the pool entry is drawn
        too and not used, so a seed gives the same noise key wherever the context comes from; the
        target and goal are drawn only where the context gives none, as for a pool entry that
        stores none."""
        idx = int(rng.integers(len(self._has_task)))
        if context is None:
            objects, n, ee = self._pool_objects[idx], int(self._num_objects[idx]), self._pool_ee[idx]
            stored = bool(self._has_task[idx])
            goal = self._pool_goal[idx].astype(np.float64) if stored else None
            target = int(self._pool_target[idx]) if stored else None
        else:
            objects, n, ee = context["objects"], int(context["num_objects"]), context["states"]
            goal, target, idx = context["goal"], context["target"], -1
        if target is None:
            target = int(rng.integers(max(n, 1)))
        if goal is None:
            goal = _draw_goal(self.spec, rng, objects[target], ee)
        query = objects[target] if np.isfinite(objects[target]).all() else np.zeros(3)
        key = rng.integers(0, 2**32, size=2, dtype=np.int64)
        return Draw(idx, np.asarray(goal, np.float32), np.asarray(query, np.float32), key, int(target))

    def check_context(self, options: Any) -> dict[str, Any]:
        """A caller's start context (``reset(options=...)``, see ``CONTEXT_KEYS``) checked and
        normalised: ``frames`` uint8 ``(T0, H, W, 3)``, ``actions`` float32 ``(T0 - 1, 4)``,
        ``objects`` float32 ``(MAX_OBJECTS, 3)`` (NaN rows: absent), ``num_objects`` int,
        ``states`` float32 ``(3,)`` (NaN: unknown), ``goal`` ``(3,)`` or None, ``target`` int or
        None, ``goal_image`` uint8 ``(H, W, 3)`` or None. Bad input: ``ValueError`` naming the key."""
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict of context arrays, got {type(options).__name__}")
        unknown = sorted(set(options) - set(CONTEXT_KEYS))
        if unknown:
            raise ValueError(
                f"options: unknown key {unknown[0]!r} (a start context has {', '.join(CONTEXT_KEYS)})"
            )
        cfg, c, size = self.config, self.context, self.config.image_size
        if "frames" not in options:
            raise ValueError("options['frames'] is missing: a start context needs its frames")
        frames = _uint8(options, "frames", (c, size, size, 3), f"the dream's {c} context frames")
        actions = _real(options, "actions", [(c - 1, 4), (c, 4)], required=c > 1, what="actions")
        actions = np.zeros((0, 4), np.float32) if actions is None else actions[: c - 1]
        states = _real(options, "states", [(3,), (c, 3)], required=False, what="end-effector position")
        states = np.full(3, np.nan, np.float32) if states is None else states.reshape(-1, 3)[-1]
        objects, n = _context_objects(options, c)
        target = None
        if "target" in options:
            target = _integer(options, "target", 0, max(n, 1) - 1)
            if self.spec.uses_objects and n == 0:
                raise ValueError("options['target'] names an object but options['objects'] gives none")
        goal = _real(options, "goal", [(3,)], required=False, what="goal")
        goal_image = None
        if "goal_image" in options:
            goal_image = _uint8(options, "goal_image", (size, size, 3), "the goal image")
        elif cfg.reward == "goal-image":
            raise ValueError("options['goal_image'] is missing: reward='goal-image' scores against it")
        if cfg.reward == "learned" and self.spec.uses_objects and n == 0:
            raise ValueError("options['objects'] is missing: the state head finds the target by its start")
        relative = getattr(self.head, "ee_relative", False) and self._reads_ee(cfg)
        if cfg.reward == "learned" and relative and not np.isfinite(states).all():
            raise ValueError("options['states'] is missing: this state head reads the arm relative to it")
        if goal is None and self.spec.name == "recorded-goal":
            raise ValueError("options['goal'] is missing: a recorded-goal context needs its recorded goal")
        return {
            "frames": frames,
            "actions": actions,
            "objects": objects,
            "num_objects": n,
            "states": states,
            "goal": goal,
            "target": target,
            "goal_image": goal_image,
        }

    @torch.no_grad()
    def begin(
        self, draws: list[Draw], contexts: list[dict[str, Any] | None]
    ) -> tuple[Episodes, State, np.ndarray, dict[str, np.ndarray]]:
        """Start episodes: ``draws`` (``draw``) with their ``contexts`` (``check_context``; None:
        the drawn pool entry). Returns the episodes' data, their initial states (pool entries are
        a gather, callers' contexts go through ``initial`` in one batch), their first observations
        on the host (``with_goal`` applied) and the readout at reset (``readout``'s keys: the
        recorded positions, the head's reading of the initial state where none is recorded)."""
        dev, b = self.device, len(draws)
        own = np.array([c is not None for c in contexts], bool)
        pidx = np.array([d.idx for d in draws], np.int64)
        pool_rows, ctx_rows = np.flatnonzero(~own), np.flatnonzero(own)
        ctxs = [contexts[i] for i in ctx_rows]
        objects = np.full((b, MAX_OBJECTS, 3), np.nan, np.float32)
        ee = np.full((b, 3), np.nan, np.float32)
        num = np.zeros(b, np.int64)
        objects[pool_rows] = self._pool_objects[pidx[pool_rows]]
        ee[pool_rows] = self._pool_ee[pidx[pool_rows]]
        num[pool_rows] = self._num_objects[pidx[pool_rows]]
        for j, i in enumerate(ctx_rows):
            objects[i], ee[i], num[i] = ctxs[j]["objects"], ctxs[j]["states"], ctxs[j]["num_objects"]
        goal = np.stack([d.goal for d in draws]).astype(np.float32)
        ep = Episodes(
            dev={
                "goal": torch.as_tensor(goal, device=dev),
                "query": torch.as_tensor(np.stack([d.query for d in draws]), device=dev),
                "objects": torch.as_tensor(objects, device=dev),
                "ee": torch.as_tensor(ee, device=dev),
                "keys": torch.as_tensor(np.stack([d.key for d in draws]), device=dev),
                "goal_image": torch.zeros(
                    b, *self.pool["goal_image"].shape[1:], dtype=torch.uint8, device=dev
                ),
                "goal_features": None
                if self.goal_features is None
                else self.goal_features.new_zeros(b, self.goal_features.shape[1]),
            },
            host={
                "pidx": pidx,
                "target": np.array([d.target for d in draws], np.int64),
                "num_objects": num,
                "goal": goal,
                "objects": objects,
                "ee": ee,
            },
        )
        ee_start = np.where(np.isfinite(ee), ee, np.nan).astype(np.float32)
        ee_start[pool_rows] = self._pool_ee_start[pidx[pool_rows]]
        dist0 = np.zeros(b, np.float32)
        obs0 = np.empty((b, *self.obs_shape), self.obs0.dtype)
        obs0[pool_rows] = self.obs0[pidx[pool_rows]]
        parts, order = [], []
        if len(pool_rows):
            p = torch.as_tensor(pidx[pool_rows], device=dev)
            parts.append(self.pool_state[p])
            order.append(pool_rows)
            ep.dev["goal_image"][torch.as_tensor(pool_rows, device=dev)] = self.pool["goal_image"][p]
            if self.goal_features is not None:
                ep.dev["goal_features"][torch.as_tensor(pool_rows, device=dev)] = self.goal_features[p]
            if self._pool_dist0 is not None:
                dist0[pool_rows] = self._pool_dist0[pidx[pool_rows]]
        if len(ctx_rows):
            rows = torch.as_tensor(ctx_rows, device=dev)
            frames = torch.as_tensor(np.stack([c["frames"] for c in ctxs]), device=dev)
            acts = torch.as_tensor(np.stack([c["actions"] for c in ctxs]), device=dev)
            state = self.model.initial(frames, acts)
            parts.append(state)
            order.append(ctx_rows)
            zeros = np.zeros(self.pool["goal_image"].shape[1:], np.uint8)
            images = torch.as_tensor(
                np.stack([zeros if c["goal_image"] is None else c["goal_image"] for c in ctxs]), device=dev
            )
            ep.dev["goal_image"][rows] = images
            feats = None
            if self.goal_features is not None:
                feats = self.frame_features(images)
                ep.dev["goal_features"][rows] = feats
            obs0[ctx_rows] = self.observe(state, ee=ep.dev["ee"][rows]).cpu().numpy()
            if self.has_ee:
                read = self.head.end_effector(self.model.features(state).float(), ep.dev["ee"][rows])
                read = read.cpu().numpy()
                ee_start[ctx_rows] = np.where(np.isfinite(ee[ctx_rows]), ee[ctx_rows], read)
            if self.config.reward == "goal-image":
                dist0[ctx_rows] = self._image_distance(state, images, feats).float().cpu().numpy()
        state = (
            parts[0]
            if len(parts) == 1
            else State.cat(parts)[torch.as_tensor(np.argsort(np.concatenate(order)), device=dev)]
        )
        obs0 = self.with_goal(obs0, goal)
        start = self._start_readout(ep, ee_start, dist0)
        return ep, state, obs0, start

    def _start_readout(self, ep: Episodes, ee: np.ndarray, dist0: np.ndarray) -> dict[str, np.ndarray]:
        """``readout`` at reset, on the host: recorded positions (``ee`` where none is recorded:
        the head's reading), the task's distance and reward from them (``dist0``: goal images)."""
        h = ep.host
        if self.config.reward != "learned":
            return {"distance": dist0.astype(np.float32), "reward": -dist0.astype(np.float32)}
        b = len(h["pidx"])
        target = h["objects"][np.arange(b), h["target"]]
        target = np.where(np.isfinite(target), target, 0.0).astype(np.float32)
        arm = ee if self.has_ee else target
        g = h["goal"].astype(np.float64)
        out = {
            "distance": np.asarray(
                tasks.distance(self.spec, target.astype(np.float64), arm.astype(np.float64), g), np.float32
            ),
            "reward": np.asarray(
                tasks.reward(self.spec, target.astype(np.float64), arm.astype(np.float64), g), np.float32
            ),
            "target_pos": target,
            "object_pos": h["objects"].copy(),
        }
        if self.has_ee:
            out["ee_pos"] = ee.astype(np.float32)
        return self._goal_reward(out, ep)

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
    def observe(
        self,
        state: State,
        pidx: Tensor | None = None,
        goal: Tensor | None = None,
        *,
        ee: Tensor | None = None,
    ) -> Tensor:
        """Observations on the device: uint8 frames or clipped float32 features; with ``task_obs``
        the head's end effector (read relative to ``ee`` ``(B, 3)``, the arm at reset, or to the
        rows' pool entries ``pidx``) and ``goal`` (when given) follow."""
        if self.config.obs == "pixels":
            return self.frames(state)
        b = self.config.latent_bound
        feats = self.model.features(state).float()
        if self.config.task_obs:
            start = self.pool["ee"][pidx] if ee is None else ee
            arm = self.head.end_effector(feats, start)
            feats = torch.cat([feats, arm, *([] if goal is None else [goal.float()])], dim=1)
        return feats.clamp(-b, b)

    def with_goal(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """``obs0`` rows ``(..., D)`` with the episode's goal ``(..., 3)`` appended (``task_obs``)."""
        if not self.config.task_obs:
            return obs
        b = self.config.latent_bound
        return np.concatenate([obs, np.clip(goal, -b, b)], axis=-1).astype(np.float32)

    def observation(self, obs: np.ndarray, readout: dict[str, np.ndarray], ep: Episodes) -> Any:
        """Host observations ``(B, ...)``, or with ``goal_conditioned`` the dict of ``(B, ...)``
        arrays ``observation``, ``achieved_goal`` (from ``readout``) and ``desired_goal``."""
        if not self.config.goal_conditioned:
            return obs
        achieved = tasks.achieved_goal(self.spec, readout["target_pos"], readout.get("ee_pos"))
        return {
            "observation": obs,
            "achieved_goal": np.nan_to_num(np.asarray(achieved, np.float32)),
            "desired_goal": ep.host["goal"].copy(),
        }

    @torch.no_grad()
    def frame_features(self, frames: Tensor) -> Tensor:
        """Features of single frames uint8 ``(B, H, W, 3)``, each encoded alone by ``initial``."""
        empty = torch.zeros(len(frames), 0, self.model.config.action_dim, device=self.device)
        return self.model.features(self.model.initial(frames[:, None], empty)).float()

    @torch.no_grad()
    def score(self, state: State, goal: Tensor, query: Tensor, pidx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(distance (B,), reward (B,), target_pos (B, 3))`` of rows started from pool entries
        ``pidx`` (see the module docstring); ``reward="learned"`` computes the task's distance and
        reward as the real env does (``worldmodel.envs.task``) on the head's predicted target and
        end effector."""
        if self.config.reward == "learned":
            dist, reward, pos, _ = self._task_score(
                self.model.features(state).float(), goal, query, self.pool["ee"][pidx]
            )
            return dist, reward, pos
        images = self.pool["goal_image"][pidx]
        feats = None if self.goal_features is None else self.goal_features[pidx]
        d = self._image_distance(state, images, feats)
        return d, -d, torch.full_like(goal, float("nan"))

    def _task_score(self, feats: Tensor, goal: Tensor, query: Tensor, ee_start: Tensor):
        """The task's ``(distance, reward, target, ee or None)`` on the head's readings."""
        pos = self.head(feats, query)
        ee = self.head.end_effector(feats, ee_start) if self.head.has_end_effector else None
        arm = pos if ee is None else ee  # no branch: reach_weight == 0 and an object task (checked)
        return tasks.distance(self.spec, pos, arm, goal), tasks.reward(self.spec, pos, arm, goal), pos, ee

    def _image_distance(self, state: State, images: Tensor, goal_features: Tensor | None) -> Tensor:
        """``goal-image`` distance ``(B,)`` of dreamed frames to ``images`` uint8 ``(B, H, W, 3)``."""
        if self.config.goal_distance == "pixels":
            x = self.model.decode(state).float()
            g = images.movedim(-1, -3).float() / 255.0
            return (x - g).pow(2).flatten(1).mean(1).sqrt()
        diff = self.frame_features(self.frames(state)) - goal_features
        return torch.linalg.vector_norm(diff, dim=1)

    @torch.no_grad()
    def readout(self, state: State, ep: Episodes) -> dict[str, np.ndarray]:
        """What a step reports, on the host in one device-to-host copy: ``distance`` and ``reward``
        ``(B,)``; with ``reward="learned"`` also the head's ``target_pos`` ``(B, 3)``,
        ``object_pos`` ``(B, MAX_OBJECTS, 3)`` (every present object read with its position at
        reset as the query; NaN rows absent) and ``ee_pos`` ``(B, 3)`` (heads with an arm)."""
        d = ep.dev
        if self.config.reward != "learned":
            dist = self._image_distance(state, d["goal_image"], d["goal_features"]).float()
            dist = dist.cpu().numpy()
            return {"distance": dist, "reward": -dist}
        feats = self.model.features(state).float()
        dist, reward, pos, ee = self._task_score(feats, d["goal"], d["query"], d["ee"])
        b = len(pos)
        objects = torch.full((b, MAX_OBJECTS, 3), float("nan"), device=self.device)
        present = torch.isfinite(d["objects"]).all(-1)
        rows, slots = present.nonzero(as_tuple=True)
        if len(rows):
            objects[rows, slots] = self.head(feats[rows], d["objects"][rows, slots]).float()
        parts = [dist.float()[:, None], reward.float()[:, None], pos.float(), objects.flatten(1)]
        if ee is not None:
            parts.append(ee.float())
        flat = torch.cat(parts, 1).cpu().numpy()
        out = {
            "distance": flat[:, 0],
            "reward": flat[:, 1],
            "target_pos": flat[:, 2:5],
            "object_pos": flat[:, 5 : 5 + 3 * MAX_OBJECTS].reshape(b, MAX_OBJECTS, 3),
        }
        out["object_pos"][np.arange(b), ep.host["target"]] = np.where(
            np.isfinite(ep.host["objects"][np.arange(b), ep.host["target"]]).all(-1, keepdims=True),
            out["target_pos"],
            np.nan,
        )  # the target's row is the reading the reward used
        if ee is not None:
            out["ee_pos"] = flat[:, 5 + 3 * MAX_OBJECTS :]
        return self._goal_reward(out, ep)

    def _goal_reward(self, readout: dict[str, np.ndarray], ep: Episodes) -> dict[str, np.ndarray]:
        """``goal_conditioned``: the reward recomputed on the host by ``compute_reward`` from the
        float32 goals and ``ee_pos`` the step reports, so HER's relabelled rewards equal the
        dream's bit for bit (float32 rounding off the device's)."""
        if self.config.goal_conditioned:
            achieved = self.observation(readout["distance"], readout, ep)["achieved_goal"]
            info = {"ee_pos": np.nan_to_num(readout["ee_pos"])} if "ee_pos" in readout else {}
            readout["reward"] = np.asarray(self.compute_reward(achieved, ep.host["goal"], info), np.float64)
        return readout

    def info_arrays(self, readout: dict[str, np.ndarray], ep: Episodes) -> dict[str, np.ndarray]:
        """The task's info keys (``worldmodel.envs.task.INFO_KEYS``, those this dream knows) and
        ``pool_index`` as ``(B, ...)`` arrays, in the dtypes a Gymnasium vector env stacks the
        real env's infos into (float64, bool, int64, float32 positions)."""
        dist = readout["distance"]
        out: dict[str, np.ndarray] = {
            "distance": dist.astype(np.float64),
            "is_success": dist < self.tolerance(),
        }
        if self.config.reward == "learned":
            h = ep.host
            n = h["num_objects"]
            present = np.arange(MAX_OBJECTS)[None, :] < n[:, None]
            objects = np.where(present[..., None], np.nan_to_num(readout["object_pos"]), 0.0).astype(
                np.float32
            )
            target = objects[np.arange(len(n)), h["target"]]
            out.update(
                goal_pos=h["goal"].copy(), target=h["target"].copy(), num_objects=n.copy(), object_pos=objects
            )
            out["target_pos"] = np.where(
                (h["target"] < n)[:, None], target, np.nan_to_num(readout["target_pos"])
            ).astype(np.float32)
            if "ee_pos" in readout:
                out["ee_pos"] = np.nan_to_num(readout["ee_pos"]).astype(np.float32)
        out["pool_index"] = ep.host["pidx"].copy()
        return out

    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """``worldmodel.envs.task.compute_reward`` with this dream's task (``goal_conditioned``)."""
        return tasks.compute_reward(self.spec, achieved_goal, desired_goal, info)

    def tolerance(self) -> float:
        """Success threshold on ``distance`` for the configured reward."""
        return self.spec.tolerance if self.config.reward == "learned" else self.config.image_tolerance

    def goal_images(self, pidx: np.ndarray) -> np.ndarray:
        return self.pool["goal_image"][torch.as_tensor(pidx, device=self.device)].cpu().numpy()


class Draw(NamedTuple):
    """One episode's draws (``DreamCore.draw``)."""

    idx: int
    """Pool entry (-1: a caller's context)."""
    goal: np.ndarray
    """float32 ``(3,)``."""
    query: np.ndarray
    """float32 ``(3,)``: the target's position at reset (zeros when unknown)."""
    key: np.ndarray
    """int64 ``(2,)``: the noise key."""
    target: int


class Episodes:
    """Per-row data of running episodes: ``dev`` tensors (``goal``, ``query`` ``(B, 3)``,
    ``objects`` ``(B, MAX_OBJECTS, 3)`` at reset (NaN: absent), ``ee`` ``(B, 3)`` at reset (NaN:
    unknown), ``keys`` ``(B, 2)``, ``goal_image`` uint8 ``(B, H, W, 3)``, ``goal_features``
    ``(B, F)`` or None) and their ``host`` copies (``pidx``, ``target``, ``num_objects``,
    ``goal``, ``objects``, ``ee``), so a step reads them without a device round trip."""

    def __init__(self, dev: dict[str, Tensor | None], host: dict[str, np.ndarray]) -> None:
        self.dev, self.host = dev, host

    def assign(self, rows: np.ndarray, other: Episodes) -> None:
        """Rows ``rows`` (host indices) become ``other``'s (one row each, in order)."""
        r = None
        for k, v in self.dev.items():
            if v is not None:
                r = torch.as_tensor(rows, device=v.device) if r is None else r
                v[r] = other.dev[k]
        for k, v in self.host.items():
            v[rows] = other.host[k]


CONTEXT_KEYS = ("frames", "actions", "states", "objects", "num_objects", "goal", "target", "goal_image")
"""A caller's start context (``reset(options=...)``), named as a dataset item's keys
(``worldmodel.data.open_dataset``): ``frames`` uint8 ``(T0, H, W, 3)`` (``T0`` the dream's
context length, ``DreamCore.context``: ``context_frames`` or the model's ``n_past``; required);
``actions`` ``(T0 - 1, 4)`` (or ``(T0, 4)``, a dataset window's: the last, applied after the last
frame, is dropped; required when ``T0 > 1``); ``states`` ``(3,)`` or ``(T0, 3)``: the end
effector at the last frame; ``objects`` ``(n, 3)`` or ``(T0, n, 3)``, ``n <= MAX_OBJECTS``: the
object centres at the last frame (NaN rows: absent; required by ``reward="learned"`` on an object
task); ``num_objects`` int (rows after it are absent; else the finite rows); ``goal`` ``(3,)``,
``target`` int (drawn as for a pool entry without a task when missing); ``goal_image`` uint8
``(H, W, 3)`` (required by ``reward="goal-image"``; black otherwise)."""


def _real(
    options: dict, key: str, shapes: list[tuple[int, ...]], *, required: bool, what: str
) -> np.ndarray | None:
    """``options[key]`` as finite float32 of one of ``shapes`` (None when absent and not required)."""
    if key not in options:
        if required:
            raise ValueError(f"options[{key!r}] is missing: a start context of this length needs its {what}")
        return None
    a = np.asarray(options[key])
    if a.dtype.kind not in "iuf" or a.shape not in shapes or not np.isfinite(a).all():
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(
            f"options[{key!r}] must be finite real numbers of shape {want} ({what}), got {a.dtype} {a.shape}"
        )
    return a.astype(np.float32)


def _uint8(options: dict, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``options[key]`` as a uint8 array of ``shape`` (images)."""
    a = np.asarray(options[key])
    if a.dtype != np.uint8 or a.shape != shape:
        raise ValueError(f"options[{key!r}] must be uint8 {shape} ({what}), got {a.dtype} {a.shape}")
    return a


def _context_objects(options: dict, c: int) -> tuple[np.ndarray, int]:
    """``options["objects"]`` (and ``num_objects``) as float32 ``(MAX_OBJECTS, 3)`` with NaN rows
    for absent objects, and the number present."""
    objects = np.full((MAX_OBJECTS, 3), np.nan, np.float32)
    if "objects" in options:
        raw = np.asarray(options["objects"])
        if raw.ndim == 3 and len(raw) == c:  # a dataset window: the last context frame's
            raw = raw[-1]
        if raw.ndim != 2 or raw.shape[1] != 3 or len(raw) > MAX_OBJECTS or raw.dtype.kind not in "iuf":
            raise ValueError(
                f"options['objects'] must be real ({MAX_OBJECTS}, 3) (or ({c}, {MAX_OBJECTS}, 3)) object "
                f"centres, NaN rows absent, got {raw.dtype} {raw.shape}"
            )
        objects[: len(raw)] = raw
    present = np.isfinite(objects).all(-1)
    if "num_objects" in options:
        n = _integer(options, "num_objects", 0, MAX_OBJECTS)
        if not present[:n].all():
            raise ValueError(f"options['num_objects'] is {n} but options['objects'] has fewer finite rows")
        objects[n:] = np.nan
        return objects, n
    n = int(present.sum())
    if not present[:n].all():
        raise ValueError("options['objects']: the present objects (finite rows) must come first")
    return objects, n


def _integer(options: dict, key: str, low: int, high: int) -> int:
    v = options[key]
    arr = np.asarray(v)
    if arr.shape != () or arr.dtype.kind not in "iu" or isinstance(v, bool) or not low <= int(arr) <= high:
        raise ValueError(f"options[{key!r}] must be an integer in {low}..{high}, got {v!r}")
    return int(arr)


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float32 actions of ``shape``, clipped to [-1, 1]; ``ValueError`` on a wrong shape or NaN/Inf."""
    a = np.asarray(actions, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"action must have shape {shape} (dx, dy, dz, gripper), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action contains NaN or Inf: {actions!r}")
    return np.clip(a, -1.0, 1.0)


def _draw_goal(spec: TaskSpec, rng: np.random.Generator, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
    """A goal for an episode whose context stores none, from PushTable's goal distribution:
    ``reach`` a point ``sample_reach_goal`` away from the arm ``ee``; else a ``push`` goal
    (``task.sample_push_goal``) at the target's height."""
    if spec.name == "reach":
        return tasks.sample_reach_goal(spec, rng, np.asarray(ee, np.float64))
    goal = tasks.sample_push_goal(spec, rng, np.asarray(target[:2]), tries=100)
    z = float(target[2]) if np.isfinite(target).all() else 0.0
    return np.array([goal[0], goal[1], z])


# ------------------------------------------------------------------------------------- pools
def _sim_pool(cfg: DreamConfig, context: int) -> dict[str, np.ndarray]:
    """``pool_size`` fresh sim episodes of ``context`` frames, seeded by ``pool_seed``.

    ``push`` and ``reach``: a ``RandomPushPolicy`` rollout of ``context`` steps in a PushTable of
    that task. ``recorded-goal``: the real env's recorded-goal start, its first frame held still
    (``REST_ACTION``) as the context, as the planner pads it."""
    from worldmodel.envs.policy import RandomPushPolicy, rollout
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
class DreamEnv(tasks.GoalConditionedReward, gym.Env):
    """A world model's dream of PushTable, one episode at a time.

    **Spaces** as ``worldmodel/PushTable-v0``: action ``Box(-1, 1, (4,), float32)``;
    observation ``Box(0, 255, (64, 64, 3), uint8)`` (``obs="pixels"``) or, with ``obs="latent"``,
    ``Box(-latent_bound, latent_bound, (F,), float32)``, the model's ``features``. With
    ``goal_conditioned=True``: ``Dict(observation=<that>, achieved_goal=Box(3),
    desired_goal=Box(3))`` and ``compute_reward(achieved_goal, desired_goal, info)``, as
    PushTable's (``worldmodel.envs.task``).

    **Actions**: a NaN/Inf or wrong-shaped action raises ``ValueError``; values outside [-1, 1]
    are clipped (as the real env does).

    **Episode**: never terminated (as the real env); truncated after ``horizon`` steps when it is
    set; by default ``gym.make``'s ``TimeLimit`` (``spec.max_episode_steps``, 50) ends it.

    **reset** ``options``: a start context of the caller's own (``CONTEXT_KEYS``: ``frames``,
    ``actions``, ``states``, ``objects``, ``num_objects``, ``goal``, ``target``, ``goal_image``, a
    dataset item's names; e.g. a replay buffer's for Dyna/MBPO-style branched rollouts) instead of
    a pool entry. The same seed then gives the same noise as a pool reset: the pool's context
    reset with the same seed dreams the same episode. Bad options: ``ValueError`` naming the key.

    **info**: the task's keys (``worldmodel.envs.task.INFO_KEYS``): ``distance`` and
    ``is_success``; with ``reward="learned"`` also ``goal_pos``, ``target``, ``num_objects``,
    ``object_pos``, ``target_pos`` and ``ee_pos``, the state head's readings of the dreamed state
    (at reset the context's recorded positions); plus ``pool_index`` (int, -1 for a caller's
    context).

    **render** (``render_mode="rgb_array"``): the dreamed frame next to the goal image,
    uint8 ``(H, 2W, 3)``; ``None`` with a warning when ``render_mode`` is ``None``.

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

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        core = self.core
        context = core.check_context(options) if options else None
        draw = core.draw(self.np_random, context)
        self._ep, self._state, obs0, start = core.begin([draw], [context])
        self._seed = int(draw.key[0])
        self._t = 0
        self._readout = start
        return _row(core.observation(obs0, start, self._ep)), row_info(core.info_arrays(start, self._ep), 0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("DreamEnv.step() called before reset()")
        core, ep = self.core, self._ep
        a = torch.from_numpy(check_actions(action, (4,))).to(core.device)[None]
        counter = torch.tensor([self._t], device=core.device)
        self._state = core.step(self._state, a, ep.dev["keys"], counter, self._seed + self._t)
        self._t += 1
        obs = core.observe(self._state, goal=ep.dev["goal"], ee=ep.dev["ee"]).cpu().numpy()
        self._readout = r = core.readout(self._state, ep)
        truncated = self.config.horizon is not None and self._t >= self.config.horizon
        info = row_info(core.info_arrays(r, ep), 0)
        return _row(core.observation(obs, r, ep)), float(r["reward"][0]), False, bool(truncated), info

    def _compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """The reward for achieved and desired goals ``(..., 3)`` (``goal_conditioned``; a float
        for one pair, ``(B,)`` for a batch): ``worldmodel.envs.task.compute_reward``."""
        return self.core.compute_reward(achieved_goal, desired_goal, info)

    def proprioception(self) -> np.ndarray:
        """The dreamed end effector now, float32 ``(3,)`` (``info["ee_pos"]``; what planners read
        from ``PushTableEnv.proprioception`` in the real env)."""
        if self._state is None:
            raise RuntimeError("DreamEnv.proprioception() called before reset()")
        if "ee_pos" not in self._readout:
            raise ValueError("this dream has no end effector to report (no state head with an arm branch)")
        return np.nan_to_num(self._readout["ee_pos"][0]).astype(np.float32)

    def render_goal(self) -> np.ndarray:
        """The episode's goal image, uint8 ``(H, W, 3)``."""
        if self._state is None:
            raise RuntimeError("DreamEnv.render_goal() called before reset()")
        return self._ep.dev["goal_image"][0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        """Dreamed frame | goal image, uint8 ``(H, 2W, 3)``; ``None`` (and a warning) when the env
        was made without a render mode."""
        if self.render_mode is None:
            _warn_no_render_mode(self)
            return None
        if self._state is None:
            raise RuntimeError("DreamEnv.render() called before reset()")
        frame = self.core.frames(self._state)[0].cpu().numpy()
        return np.concatenate([frame, self.render_goal()], axis=1)


def row_info(arrays: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """Row ``i`` of ``DreamCore.info_arrays`` as one env's info: Python scalars (``float``,
    ``bool``, ``int``, as PushTable's) and float32 arrays."""
    out: dict[str, Any] = {}
    for k, v in arrays.items():
        x = v[i]
        if v.ndim > 1:
            out[k] = x.copy()
        elif v.dtype == np.bool_:
            out[k] = bool(x)
        elif v.dtype.kind in "iu":
            out[k] = int(x)
        else:
            out[k] = float(x)
    return out


def _row(x: Any, i: int = 0) -> Any:
    """Row ``i`` of batched observations (an array, or the goal-conditioned dict of arrays)."""
    if isinstance(x, dict):
        return {k: v[i].copy() for k, v in x.items()}
    return x[i].copy()


def _warn_no_render_mode(env: Any) -> None:
    """Gymnasium's warning for ``render()`` on an env made without ``render_mode``."""
    spec = getattr(env, "spec", None)
    name = spec.id if spec is not None else type(env).__name__
    gym.logger.warn(
        "You are calling render method without specifying any render mode. You can specify the "
        f'render_mode at initialization, e.g. gym.make("{name}", render_mode="rgb_array")'
    )
