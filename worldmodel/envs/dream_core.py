"""The dream's engine: model, start-context pool and batched episodes (``DreamCore``).

``DreamCore`` holds what the single env (``dream.py``) and the batched envs (``dream_vec.py``)
share: the model (an inference copy), the state head, a pool of start contexts with their tasks
(``dream_pool.py``), and batched ``draw`` / ``begin`` / ``step``; what a step reports is its
``DreamReadout`` half (``dream_readout.py``). ``DreamEnv`` is that core at batch size one, so a
single env and row ``i`` of a batched env run the same code.

Resets. ``reset(seed=...)`` draws, from ``self.np_random``: a pool entry, its task (the stored
goal and target; for data that stores none, a goal from PushTable's goal distribution and a
target among the present objects) and the episode's noise key. Resetting is a gather.

Randomness. Everything random after ``reset(seed)`` comes from ``self.np_random``: the model's
noise is passed to ``model.step`` as its ``noise`` argument, hashed (``_noise.py``) from a key
drawn at reset, so the same seed gives the same dream, bit for bit on the CPU, and row ``i`` of
a ``DreamVecEnv`` equals a single env seeded ``seed + i``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.dynamics.inference import for_inference
from worldmodel.envs import dream_inputs
from worldmodel.envs import task as tasks
from worldmodel.envs._noise import row_normal
from worldmodel.envs.dream_config import DreamConfig, reads_ee
from worldmodel.envs.dream_episodes import Draw, Episodes, draw_goal
from worldmodel.envs.dream_pool import data_pool, sim_pool
from worldmodel.envs.dream_readout import DreamReadout
from worldmodel.envs.task import MAX_OBJECTS


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


class DreamCore(DreamReadout):
    """Model, start-context pool and the batched operations both dream envs use.

    Pool tensors (leading ``P``, on ``device``): ``frames`` uint8 ``(P, T0, H, W, 3)``, ``actions``
    ``(P, T0-1, A)``, ``objects`` ``(P, K, 3)`` at the last context frame (NaN: absent), ``ee``
    ``(P, 3)`` the end effector there (the state head reads the arm relative to it), ``goal``
    ``(P, 3)`` (NaN: none stored), ``target`` ``(P,)`` (-1: none), ``goal_image`` uint8
    ``(P, H, W, 3)``; ``state`` the ``initial`` state of every entry; ``obs0`` its observation
    (NumPy, for same-step resets without a device round trip).

    Episodes: ``draw`` (one env's random draws), ``check_context`` (a caller's start context),
    ``begin`` (the rows' ``Episodes``, initial states, first observations and reset readout),
    ``step``; what a step reports (``observe``, ``readout`` (distance, reward and the head's
    positions, one host copy), ``info_arrays`` (the info keys, batched) and ``observation`` (the
    goal-conditioned dict)): the ``DreamReadout`` half (``dream_readout.py``).
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
            if (reads_ee(cfg) or cfg.task_obs) and not self.head.has_end_effector:
                raise ValueError(
                    f"{self.where}: task={cfg.task!r} with reach_weight={cfg.reach_weight} needs a head "
                    "with an end-effector branch (retrain it on data with states, or pass reach_weight=0)"
                )
        self.spec = cfg.task_spec()
        if cfg.data is not None and cfg.task == "recorded-goal":
            raise ValueError("task='recorded-goal' starts from the real env's recorded starts: use data=None")
        pool = data_pool(cfg, self.context) if cfg.data is not None else sim_pool(cfg, self.context)
        self.pool = {k: torch.from_numpy(v).to(self.device) for k, v in pool.items()}
        if cfg.reward == "learned" and not bool(torch.isfinite(self.pool["objects"]).any()):
            raise ValueError(
                f"{cfg.data}: reward='learned' needs object positions, the data has none "
                "(real BAIR data): use reward='goal-image'"
            )
        relative = self.head is not None and getattr(self.head, "ee_relative", False)
        if relative and reads_ee(cfg) and not np.isfinite(pool["ee"]).all():
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
            read = self.arm(self.model.features(self.pool_state).float(), p["ee"]).cpu().numpy()
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
            space = spaces.Box(-b, b, (self.model.feature_dim + self.task_obs_dim,), np.float32)
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
            goal = draw_goal(self.spec, rng, objects[target], ee)
        query = objects[target] if np.isfinite(objects[target]).all() else np.zeros(3)
        key = rng.integers(0, 2**32, size=2, dtype=np.int64)
        return Draw(idx, np.asarray(goal, np.float32), np.asarray(query, np.float32), key, int(target))

    def check_context(self, options: Any) -> dict[str, Any]:
        """A caller's start context (``reset(options=...)``, see ``CONTEXT_KEYS``) checked and
        normalised: ``frames`` uint8 ``(T0, H, W, 3)``, ``actions`` float32 ``(T0 - 1, 4)``,
        ``objects`` float32 ``(MAX_OBJECTS, 3)`` (NaN rows: absent), ``num_objects`` int,
        ``states`` float32 ``(3,)`` (NaN: unknown), ``goal`` ``(3,)`` or None, ``target`` int or
        None, ``goal_image`` uint8 ``(H, W, 3)`` or None. Bad input: ``ValueError`` naming the key."""
        return dream_inputs.check_context(options, self.config, self.spec, self.context, self.head)

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
                "arm": torch.as_tensor(ee, device=dev),  # moved by move_arm (heads that integrate it)
                "now": torch.as_tensor(objects, device=dev),  # the objects, likewise
                "target": torch.as_tensor([d.target for d in draws], device=dev, dtype=torch.long),
                "last_action": self._last_actions(pidx, pool_rows, ctxs, ctx_rows),
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
                read = self.arm(self.model.features(state).float(), ep.dev["ee"][rows])
                read = read.cpu().numpy()
                ee_start[ctx_rows] = np.where(np.isfinite(ee[ctx_rows]), ee[ctx_rows], read)
            if self.config.reward == "goal-image":
                dist0[ctx_rows] = self._image_distance(state, images, feats).float().cpu().numpy()
        state = (
            parts[0]
            if len(parts) == 1
            else State.cat(parts)[torch.as_tensor(np.argsort(np.concatenate(order)), device=dev)]
        )
        obs0 = self.with_goal(obs0, goal, self.target_now(ep).cpu().numpy() if self.observes_target else None)
        start = self._start_readout(ep, ee_start, dist0)
        return ep, state, obs0, start

    def _last_actions(
        self, pidx: np.ndarray, pool_rows: np.ndarray, ctxs: list[dict[str, Any]], ctx_rows: np.ndarray
    ) -> Tensor:
        """The action into each row's start frame, ``(B, A)`` (zeros after a one-frame context)."""
        acts = self.pool["actions"]
        out = torch.zeros(len(pidx), acts.shape[-1], device=self.device)
        if acts.shape[1] and len(pool_rows):
            rows, entries = (torch.as_tensor(x, device=self.device) for x in (pool_rows, pidx[pool_rows]))
            out[rows] = acts[entries, -1].float()
        for j, i in enumerate(ctx_rows):
            if len(ctxs[j]["actions"]):
                out[int(i)] = torch.as_tensor(ctxs[j]["actions"][-1], device=self.device).float()
        return out

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
