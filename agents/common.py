"""What the agent scripts share: the run config, real-sim evaluation, videos, callbacks, the loop.

Real evaluation. A policy is judged in ``worldmodel/PushTable-v0`` (never in the dream): episodes
reset with seeds ``seed, seed + 1, ...`` (the same seeds at every periodic evaluation, so curves
compare like with like), actions from ``policy.predict(obs, deterministic=True)``, until the
TimeLimit (50 steps). An episode succeeds when ``info["is_success"]`` holds at its last step,
SB3's convention (``rollout/success_rate`` reads ``is_success`` at done); ``final_distance`` is
the target's xy distance (m) to the goal then.

Latent observations in the real sim (``LatentObservation``). A policy trained on
``obs="latent"`` sees the world model's ``features`` of the dreamed state. In the real sim it
sees the same model's features of the real frames: at every step the wrapper runs
``model.initial`` on the most recent real frames and the actions between them and returns
``features`` of that state, clipped to ``±latent_bound`` like the dream's. ``initial`` infers the
model's latent from each real frame (the posterior, as in training) and steps the predictor
through them, so the policy gets the model's reading of the recent real history. Choices, stated
because they are ours: (1) the window defaults to the model's training window ``seq_len``
(``n_past + n_future`` frames): the predictor has been trained to run that many steps on real
frames, and the cost per step stays constant (encoding the whole episode would cost quadratic time
in its length; ``window`` allows it). The dream's state after ``t`` steps has instead run
``n_past - 1 + t`` predictor steps, ``t`` of them on its own samples, so the two feature
distributions agree only as far as the model is accurate. (2) At the reset the sim has one frame
while ``initial`` needs ``n_past``: the first frame is repeated with ``REST_ACTION`` (no motion,
fingers open).

Loading a run executes nothing from it. ``RUN/checkpoints/last.zip`` is written by SB3's
``model.save`` (so SB3's own ``PPO.load``/``SAC.load`` still open it, at the risk of whoever calls
them: SB3 unpickles parts of it), but the scripts never load it that way. ``load_agent`` rebuilds the
algorithm from ``RUN/config.json`` and reads the zip with ``zipfile``: the weight entries
(``policy.pth``, the optimizers', ``pytorch_variables.pth``) with ``torch.load(weights_only=True)``,
which accepts tensors and plain containers only, and of the ``data`` entry (JSON) only the step,
update and episode counters; its cloudpickled ``:serialized:`` values are never decoded. SAC's
replay buffer is stored as arrays (``RUN/checkpoints/replay_buffer.npz``, read with
``allow_pickle=False``); a ``replay_buffer.pkl`` of an older run is never read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

import worldmodel
from worldmodel.cli.flags import (
    apply_settings,
    config_path,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
    read_settings,
)
from worldmodel.dynamics.inference import for_inference
from worldmodel.envs.dream import resolve_dtype
from worldmodel.envs.push_table import REST_ACTION
from worldmodel.envs.task import TASKS, TaskSpec, wilson_interval
from worldmodel.files import atomic_path, write_text_atomic
from worldmodel.perf import keep_freed_memory
from worldmodel.video import add_tensorboard_video, grid, write_video

ALGOS = ("ppo", "sac")
OBS_TYPES = ("pixels", "latent")
REWARDS = ("learned", "goal-image")
CONFIG_NAME = "config.json"
CONFIG_FORMAT = 1
EVAL_SEED = 1_000_000  # real evaluation episodes: far from the seeds anything else uses
MIN_CNN_SIZE = 36  # SB3's NatureCNN needs at least 36×36 images


# ------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class RunConfig:
    """Everything ``agents.evaluate`` and ``--resume`` need to rebuild a run (``RUN/config.json``)."""

    algo: str
    env: str
    """``"dream"`` (``agents.train``) or ``"real"`` (``agents.train_real``)."""
    timesteps: int
    """Target total of environment steps (transitions) over all envs."""
    num_envs: int
    obs: str = "pixels"
    reward: str | None = None
    """Dream reward (``learned`` | ``goal-image``); ``None`` for real runs (the sim's own)."""
    checkpoint: str | None = None
    """World-model checkpoint (absolute path); ``None`` for real pixel runs."""
    head: str | None = None
    """Object-position head file; ``None``: the one stored for the checkpoint."""
    image_size: int = 64
    seed: int = 0
    device: str = "auto"
    eval_every: int = 10_000
    eval_episodes: int = 10
    video_episodes: int = 4
    dream: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Extra ``DreamVecEnv`` options (``horizon``, ``pool_size``, ``temperature``, ``data``...)."""
    latent_window: int | None = None
    latent_bound: float = 10.0
    hyper: dict[str, Any] = dataclasses.field(default_factory=dict)
    """SB3 constructor keywords (``n_steps``, ``batch_size``, ``learning_rate``...)."""
    vec: str = "dream"
    """Vectorisation of the training env: ``dream`` (batched model), ``subproc`` or ``dummy``."""
    task: str = "push"
    """The task trained on and judged by default: ``push``, ``recorded-goal`` or ``reach``."""
    format: int = CONFIG_FORMAT

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"--algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.obs not in OBS_TYPES:
            raise ValueError(f"--obs must be one of {', '.join(OBS_TYPES)}, got {self.obs!r}")
        if self.reward is not None and self.reward not in REWARDS:
            raise ValueError(f"--reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        # The numbers: the same checks as the flags that set them (a hand-edited config.json too).
        for name, typ in (
            ("timesteps", positive_int),
            ("num_envs", positive_int),
            ("image_size", positive_int),
            ("seed", nonneg_int),
            ("eval_every", nonneg_int),
            ("eval_episodes", positive_int),
            ("video_episodes", nonneg_int),
            ("latent_window", positive_int),
            ("latent_bound", positive_float),
        ):
            _check_number(name, getattr(self, name), typ)
        for name in ("dream", "hyper"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        for name, typ in DREAM_NUMBERS.items():
            _check_number(f"dream.{name}", self.dream.get(name), typ)
        for key, typ, _, _ in HYPER_FLAGS.values():
            _check_number(f"hyper.{key}", self.hyper.get(key), typ)

    def save(self, run: Path) -> Path:
        """Write ``RUN/config.json`` atomically."""
        run.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(run / CONFIG_NAME, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run: str | os.PathLike) -> RunConfig:
        """Read ``RUN/config.json``; ``ValueError`` naming the file when it is missing or not ours."""
        path = Path(run) / CONFIG_NAME
        if not Path(run).is_dir():
            raise ValueError(f"{run}: no such run folder")
        if not path.is_file():
            raise ValueError(
                f"{run}: not a run folder (no {CONFIG_NAME}; runs come from agents.train/train_real)"
            )
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(d, dict) or d.get("format", 0) > CONFIG_FORMAT:
            raise ValueError(f"{path}: not a run config this version understands")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as err:
            raise ValueError(f"{path}: incomplete run config ({err})") from None
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _check_number(name: str, value: Any, typ: Callable[[str], Any]) -> None:
    """``value`` (``None``: unset, allowed) must pass the flag's ``argparse`` type ``typ``; a float
    where a whole number belongs, a bool or a string fails as its text would on the command line."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        typ(repr(value))
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"{name} {err}") from None


atomic_write_text = write_text_atomic  # the name the scripts use


def algo_class(name: str):
    """The SB3 class for ``ppo`` / ``sac``."""
    from stable_baselines3 import PPO, SAC

    classes = {"ppo": PPO, "sac": SAC}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGOS)}")
    return classes[name]


def policy_name(obs: str) -> str:
    """``CnnPolicy`` on uint8 frames, ``MlpPolicy`` on latent features."""
    return "CnnPolicy" if obs == "pixels" else "MlpPolicy"


def checkpoint_path(run: str | os.PathLike) -> Path:
    return Path(run) / "checkpoints" / "last.zip"


def replay_buffer_path(run: str | os.PathLike) -> Path:
    """SAC's replay buffer beside the checkpoint, as arrays (see ``save_replay_buffer``)."""
    return Path(run) / "checkpoints" / "replay_buffer.npz"


OLD_REPLAY_BUFFER = "replay_buffer.pkl"
"""SB3's pickled buffer, written by earlier versions: never read (a pickle can run code)."""


# ------------------------------------------------------------------------------ world models
def load_world_model(checkpoint: str, device: str = "auto"):
    """``worldmodel.dynamics.load`` with a one-line error for a missing file."""
    from worldmodel import dynamics

    if not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: world-model checkpoint not found")
    return dynamics.load(checkpoint, device=device)


class LatentObservation(gym.Wrapper):
    """Real pixel env → the world model's ``features`` of the real history (see the module docstring).

    Observation ``Box(-latent_bound, latent_bound, (F,), float32)``, as ``Dream-v0(obs="latent")``.
    ``render()`` is the wrapped env's (real frames).

    Args:
        env: a PushTable env (uint8 ``(H, W, 3)`` observations of the model's size, 4-d actions).
        model: the ``LatentDynamics`` the policy was trained in.
        window: frames encoded per step (the last ``window``, at least ``n_past``); ``None``:
            the model's training window ``model.config.seq_len``.
        latent_bound: clip, as the dream's ``latent_bound``.
        dtype: the dream's ``DreamConfig.dtype`` (``"auto"``: bf16 on CUDA for SVG, else float32).
        task_obs: the dream's ``DreamConfig.task_obs``: append the true end effector (the env's
            ``ee_pos``, proprioception) and the episode's goal (``goal_pos``), ``(F + 6,)``.
    """

    def __init__(
        self,
        env: gym.Env,
        model,
        *,
        window: int | None = None,
        latent_bound: float = 10.0,
        dtype: str = "auto",
        task_obs: bool = False,
    ) -> None:
        super().__init__(env)
        self.task_obs = bool(task_obs)
        self._task = np.zeros(6, np.float32)
        # The same inference copy and dtype as the dream's (DreamConfig.dtype), so a latent
        # policy sees the features it was trained on, bf16 rounding included.
        self.model = for_inference(model, dtype=resolve_dtype(model, dtype, model.device))
        self.context = int(model.config.n_past)
        window = model.config.seq_len if window is None else window
        self.window = max(int(window), self.context)
        self.latent_bound = float(latent_bound)
        b = self.latent_bound
        self.observation_space = gym.spaces.Box(-b, b, (model.feature_dim + 6 * self.task_obs,), np.float32)
        self._frames: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        frame, info = self.env.reset(**kwargs)
        self._note(info)
        self._frames = [frame] * self.context
        self._actions = [REST_ACTION] * (self.context - 1)  # the first frame held still
        return self._encode(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, np.float32).reshape(4), -1.0, 1.0)
        frame, reward, terminated, truncated, info = self.env.step(a)
        self._note(info)
        w = self.window
        self._frames = [*self._frames, frame][-w:]
        actions = [*self._actions, a]
        self._actions = actions[max(0, len(actions) - (w - 1)) :]
        return self._encode(), reward, terminated, truncated, info

    def _note(self, info: dict) -> None:
        if self.task_obs:
            self._task = np.concatenate([info["ee_pos"], info["goal_pos"]]).astype(np.float32)

    def _encode(self) -> np.ndarray:
        import torch

        frames, actions = self._frames, self._actions
        dev = self.model.device
        with torch.no_grad():
            x = torch.from_numpy(np.stack(frames)[None]).to(dev)
            a = (
                torch.from_numpy(np.stack(actions)[None]).to(dev)
                if actions
                else torch.zeros(1, 0, 4, device=dev)
            )
            feats = self.model.features(self.model.initial(x, a)).float()[0].cpu().numpy()
        if self.task_obs:
            feats = np.concatenate([feats, self._task])
        b = self.latent_bound
        return np.clip(feats, -b, b).astype(np.float32)


def make_real_env(
    image_size: int = 64,
    *,
    render_mode: str | None = None,
    model=None,
    cfg: RunConfig | None = None,
    task: str | None = None,
) -> gym.Env:
    """``worldmodel/PushTable-v0`` at ``image_size`` on ``task`` (default the run's, else push; the
    episode lasts the task's budget), wrapped in ``LatentObservation`` when ``model`` is given
    (latent runs). Module-level so ``SubprocVecEnv`` can pickle it by reference."""
    task = task or (cfg.task if cfg is not None else "push")
    steps = TaskSpec(name=task).budget
    env = gym.make(
        worldmodel.PUSH_TABLE_ID,
        image_size=image_size,
        render_mode=render_mode,
        task=task,
        max_episode_steps=steps,
    )
    if model is not None:
        window = cfg.latent_window if cfg is not None else None
        bound = cfg.latent_bound if cfg is not None else 10.0
        dtype = cfg.dream.get("dtype", "auto") if cfg is not None else "auto"
        task_obs = bool(cfg.dream.get("task_obs", False)) if cfg is not None else False
        env = LatentObservation(env, model, window=window, latent_bound=bound, dtype=dtype, task_obs=task_obs)
    return env


def make_eval_env(cfg: RunConfig, model=None, task: str | None = None) -> gym.Env:
    """The real env a run's policy is evaluated in (frames rendered for videos), on ``task``
    (default the run's).

    ``model``: the world model of a latent run (loaded from ``cfg.checkpoint`` when omitted)."""
    if cfg.obs == "latent":
        model = model if model is not None else load_world_model(cfg.checkpoint, cfg.device)
        return make_real_env(cfg.image_size, render_mode="rgb_array", model=model, cfg=cfg, task=task)
    return make_real_env(cfg.image_size, render_mode="rgb_array", cfg=cfg, task=task)


# ------------------------------------------------------------------------------- evaluation
class RandomPolicy:
    """Uniform random actions in [-1, 1]^4, with SB3's ``predict`` signature (a baseline)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        return self.rng.uniform(-1.0, 1.0, 4).astype(np.float32), state


def evaluate_real(
    policy, env: gym.Env, episodes: int, *, seed: int = EVAL_SEED, deterministic: bool = True, record: int = 0
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``episodes`` real episodes (seeds ``seed + i``); returns ``(summary, frames)``.

    ``summary``: ``success_rate``, ``final_distance`` (mean, m), ``episodes``, ``mean_return``,
    ``per_episode`` (``success``, ``final_distance``, ``return``, ``length``, ``seed``).
    ``frames``: uint8 ``(record, T + 1, H, W, 3)`` of the first ``record`` episodes (``None`` if 0).
    """
    rows, videos = [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        frames = [env.render()] if i < record else None
        ret, length, done = 0.0, 0, False
        while not done:
            action, _ = policy.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            ret, length, done = ret + float(reward), length + 1, bool(terminated or truncated)
            if frames is not None:
                frames.append(env.render())
        rows.append(
            {
                "seed": seed + i,
                "success": bool(info["is_success"]),
                "final_distance": float(info["distance"]),
                "return": ret,
                "length": length,
            }
        )
        if frames is not None:
            videos.append(np.stack(frames))
    successes = sum(r["success"] for r in rows)
    summary = {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "successes": int(successes),
        "ci95": list(wilson_interval(int(successes), len(rows))),
        "final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "episodes": len(rows),
        "mean_return": float(np.mean([r["return"] for r in rows])),
        "per_episode": rows,
    }
    return summary, _pad_stack(videos) if videos else None


def _pad_stack(videos: list[np.ndarray]) -> np.ndarray:
    """Stack episodes of possibly different lengths, holding each one's last frame."""
    t = max(len(v) for v in videos)
    return np.stack([np.concatenate([v, np.repeat(v[-1:], t - len(v), 0)]) for v in videos])


def write_episodes_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Episodes ``(N, T, H, W, 3)`` side by side (a grid of up to 4 columns) as MP4 or GIF."""
    return write_video(path, grid(frames, ncols=min(4, len(frames))), fps=fps)


# -------------------------------------------------------------------------------- callbacks
class RealEvalCallback(BaseCallback):
    """Every ``cfg.eval_every`` timesteps (and at the end): evaluate in the real sim, log to TensorBoard
    (``real/*`` and, from the training env's finished episodes since the last evaluation,
    ``{train_name}/*``), write a video (``videos/real_STEP.mp4``, and the same tiled frames as the
    TensorBoard video ``real/video``) and a line of ``eval.jsonl``, save ``last.zip``."""

    def __init__(self, cfg: RunConfig, run: Path, make_env: Callable[[], gym.Env], say) -> None:
        super().__init__()
        self.cfg, self.run, self.make_env, self.say = cfg, run, make_env, say
        self.train_name = "dream" if cfg.env == "dream" else "train_env"
        self.env: gym.Env | None = None
        self._last = 0
        self._done: list[tuple[bool, float]] = []

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and "is_success" in info:
                self._done.append((bool(info["is_success"]), float(info.get("distance", np.nan))))
        if self.cfg.eval_every and self.num_timesteps - self._last >= self.cfg.eval_every:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps > self._last or not (self.run / "eval.jsonl").is_file():
            self.evaluate()
        if self.env is not None:
            self.env.close()
            self.env = None

    def evaluate(self) -> dict[str, Any]:
        cfg, t, start = self.cfg, self.num_timesteps, time.perf_counter()
        self._last = t
        if self.env is None:
            self.env = self.make_env()
        summary, frames = evaluate_real(
            self.model, self.env, cfg.eval_episodes, seed=EVAL_SEED, record=cfg.video_episodes
        )
        row = {"timesteps": t, "real_success_rate": summary["success_rate"]}
        row["real_final_distance"] = summary["final_distance"]
        row["episodes"] = summary["episodes"]
        self.logger.record("real/success_rate", summary["success_rate"])
        self.logger.record("real/final_distance", summary["final_distance"])
        if self._done:
            ok, dist = np.array(self._done, dtype=np.float64).T
            row[f"{self.train_name}_success_rate"] = float(ok.mean())
            row[f"{self.train_name}_final_distance"] = float(np.nanmean(dist))
            row[f"{self.train_name}_episodes"] = len(ok)
            self.logger.record(f"{self.train_name}/success_rate", float(ok.mean()))
            self.logger.record(f"{self.train_name}/final_distance", float(np.nanmean(dist)))
            self._done = []
        self.logger.dump(t)
        if frames is not None:
            video = write_episodes_video(self.run / "videos" / f"real_{t:09d}.mp4", frames)
            row["video"] = str(video.relative_to(self.run))
            writer = tensorboard_writer(self.logger)
            if writer is not None:  # the MP4's frames: write_episodes_video tiles them the same way
                add_tensorboard_video(
                    writer, "real/video", grid(frames, ncols=min(4, len(frames))), t, fps=10
                )
                writer.flush()
        save_agent(self.model, self.run)
        row["seconds"] = round(time.perf_counter() - start, 2)
        with open(self.run / "eval.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        line = (
            f"[{t} steps] real success {summary['success_rate']:.2f} over {summary['episodes']} "
            f"episodes, final distance {summary['final_distance']:.3f} m"
        )
        if f"{self.train_name}_success_rate" in row:
            line += f"; {self.train_name} success {row[self.train_name + '_success_rate']:.2f}"
        self.say(line)
        return row


def tensorboard_writer(logger):
    """The ``SummaryWriter`` of an SB3 logger's TensorBoard output, or ``None`` (no such output)."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    for fmt in getattr(logger, "output_formats", ()):
        if isinstance(fmt, TensorBoardOutputFormat):
            return fmt.writer
    return None


SB3_HPARAMS = (
    "learning_rate",
    "gamma",
    "batch_size",
    "n_steps",
    "n_epochs",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "buffer_size",
    "learning_starts",
    "tau",
    "gradient_steps",
)
"""SB3 attributes recorded as ``sb3.*`` hparams when the algorithm has them as plain values."""


def agent_hparams(cfg: RunConfig, model) -> dict[str, Any]:
    """The run's settings as TensorBoard hparams: ``RunConfig``'s fields (``dream.*`` for the dream
    options) and the SB3 hyperparameters in effect (``sb3.*``: the algorithm's values, defaults
    included; schedules are left out), as numbers or text."""
    from worldmodel.training.trainer import hparam_value

    values: dict[str, Any] = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dream", "hyper", "format")
    }
    values.update({f"dream.{k}": v for k, v in cfg.dream.items()})
    for name in SB3_HPARAMS:
        value = getattr(model, name, None)
        if isinstance(value, (int, float, str)):
            values[f"sb3.{name}"] = value
    values.update({f"sb3.{k}": v for k, v in cfg.hyper.items() if not callable(v)})
    return {k: hparam_value(v) for k, v in values.items() if v is not None}


class ProgressCallback(BaseCallback):
    """A tqdm bar over the target total of timesteps (SB3's own bar needs ``rich``)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.bar = total, None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def save_agent(model, run: Path) -> Path:
    """``RUN/checkpoints/last.zip``, written under a temporary name and renamed."""
    path = checkpoint_path(run)
    with atomic_path(path) as tmp:  # the temporary keeps .zip, so SB3 does not append one
        model.save(tmp)
    return path


# ----------------------------------------------------------------------- loading an agent
AGENT_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")
"""The numbers taken from ``last.zip``'s ``data`` entry (all else there is the run's config)."""
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
"""The ``ReplayBuffer`` arrays in ``replay_buffer.npz`` (``next_observations`` unless SB3 shares it
with ``observations``), each up to its filled part, with ``pos`` and ``full``."""


def build_agent(cfg: RunConfig, env, device: str | None = None):
    """A new SB3 algorithm of the run's config on ``env``.

    ``env``: the training ``VecEnv``, or a ``gym.Env`` to act in only (evaluation): it is wrapped in
    a ``DummyVecEnv`` and SAC's replay buffer shrunk to one transition. An SB3 refusal of the
    settings is a ``ValueError``."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

    cls = algo_class(cfg.algo)
    kwargs = sb3_kwargs(cfg)
    if device is not None:
        kwargs["device"] = device
    acting_only = not isinstance(env, VecEnv)
    if acting_only:
        env = DummyVecEnv([lambda e=env: e])
        if cfg.algo == "sac":
            kwargs["buffer_size"] = 1
    try:
        with warnings.catch_warnings():
            if acting_only:  # e.g. PPO's batch size against n_steps of one env: no learning here
                warnings.simplefilter("ignore")
            return cls(policy_name(cfg.obs), env, **kwargs)
    except (AssertionError, ValueError, TypeError) as err:
        raise ValueError(f"SB3's {cls.__name__} refuses the run's settings: {_one_line(err)}") from None


def load_agent(cfg: RunConfig, path: str | os.PathLike, env, device: str | None = None):
    """The agent saved in ``path`` (a ``last.zip``), without executing anything from it.

    ``build_agent(cfg, env, device)``, then from the zip (read with ``zipfile``): the state dicts
    its class saves (``policy.pth``, the optimizers') and ``pytorch_variables.pth`` (SAC's
    ``log_ent_coef``), each through ``torch.load(weights_only=True)`` and checked against the
    rebuilt model (names, shapes); from the ``data`` entry, parsed as plain JSON, only the counters
    ``AGENT_COUNTERS`` (whole numbers). Any failure is a one-line ``ValueError`` naming the file."""
    model = build_agent(cfg, env, device)
    try:
        with zipfile.ZipFile(path) as archive:
            _read_agent_zip(model, archive)
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        # a damaged archive: bad CRC or deflate stream, encrypted, unknown compression...
        raise ValueError(f"{path}: not a readable agent checkpoint ({_one_line(err)})") from None
    except _BadAgent as err:
        raise ValueError(f"{path}: {err}") from None
    return model


class _BadAgent(Exception):
    pass


def _read_agent_zip(model, archive: zipfile.ZipFile) -> None:
    zipped = _AgentZip(model, archive)
    state_names, variable_names = model._get_torch_save_params()
    params = {}
    for name in state_names:
        params[name] = zipped.tensors(f"{name}.pth")
        if not isinstance(params[name], dict):
            raise _BadAgent(f"{name}.pth is not a state dict")
    try:
        model.set_parameters(params, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise _BadAgent(f"its weights do not fit the run's config ({_one_line(err)})") from None
    _check_optimizer_state(model, state_names)
    if variable_names:
        _copy_variables(model, zipped.tensors("pytorch_variables.pth"), variable_names)
    try:
        data = json.loads(zipped.entry("data"))  # plain JSON: ":serialized:" values stay strings
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _BadAgent(f"its data entry is not JSON ({_one_line(err)})") from None
    if not isinstance(data, dict) or "num_timesteps" not in data:
        raise _BadAgent("its data entry holds no num_timesteps")
    for key in AGENT_COUNTERS:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _BadAgent(f"its data entry's {key} is not a whole number >= 0: {value!r}")
        setattr(model, key, value)


class _AgentZip:
    """The entries of an SB3 zip, tensors read with ``torch.load(weights_only=True)`` only."""

    def __init__(self, model, archive: zipfile.ZipFile) -> None:
        self.model, self.archive, self.names = model, archive, set(archive.namelist())

    def entry(self, name: str) -> bytes:
        if name not in self.names:
            raise _BadAgent(f"not an SB3 {type(self.model).__name__} checkpoint (no {name!r} entry)")
        return self.archive.read(name)

    def tensors(self, name: str):
        import torch

        raw = self.entry(name)
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal says it all
                warnings.simplefilter("ignore")
                return torch.load(io.BytesIO(raw), map_location=self.model.device, weights_only=True)
        except Exception as err:  # weights_only refuses anything but tensors and plain containers
            raise _BadAgent(f"{name} is not plain tensors ({_weights_only_reason(err)})") from None


def _check_optimizer_state(model, state_names: list[str]) -> None:
    """An optimizer's ``load_state_dict`` does not compare its state to the parameters: do."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    for name in state_names:
        opt = recursive_getattr(model, name)
        if not isinstance(opt, torch.optim.Optimizer):
            continue
        for param, state in opt.state.items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    raise _BadAgent(
                        f"{name}.pth: state {key!r} of shape {tuple(value.shape)} for a parameter "
                        f"of shape {tuple(param.shape)}"
                    )


def _copy_variables(model, variables, names: list[str]) -> None:
    """``pytorch_variables.pth`` into the model's tensors (SAC's ``log_ent_coef``), in place, so the
    optimizers that hold them keep holding them."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    if not isinstance(variables, dict):
        raise _BadAgent("pytorch_variables.pth is not a dict of tensors")
    for name in names:
        value, target = variables.get(name), recursive_getattr(model, name)
        if not torch.is_tensor(value) or not torch.is_tensor(target) or value.shape != target.shape:
            raise _BadAgent(f"pytorch_variables.pth: {name!r} does not fit the run's config")
        with torch.no_grad():
            target.copy_(value.to(target.device, target.dtype))


def _weights_only_reason(err: Exception) -> str:
    """What ``torch.load``'s (long) refusal names, e.g. ``Unsupported global: GLOBAL getattr``."""
    text = " ".join(str(err).split())
    if "WeightsUnpickler error:" not in text:
        return _one_line(err)
    reason = text.split("WeightsUnpickler error:", 1)[1].split(" was not an allowed", 1)[0]
    reason = reason.split(" Check the documentation", 1)[0].strip().rstrip(".")
    return _one_line(f"torch.load(weights_only=True) refused it: {reason}", limit=200)


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_replay_buffer(model, run: Path) -> Path | None:
    """Off-policy runs: the replay buffer as ``RUN/checkpoints/replay_buffer.npz`` (the arrays of
    ``BUFFER_ARRAYS`` up to the filled part, ``pos``, ``full``; atomic), so resume keeps it."""
    buffer = getattr(model, "replay_buffer", None)
    if buffer is None:
        return None
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:filled] for k in _buffer_arrays(buffer)}
    arrays["pos"], arrays["full"] = np.asarray(buffer.pos, np.int64), np.asarray(buffer.full, np.bool_)
    path = replay_buffer_path(run)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_replay_buffer(model, path: str | os.PathLike) -> None:
    """Fill ``model.replay_buffer`` from ``save_replay_buffer``'s file: ``np.load(allow_pickle=False)``,
    every array checked against the rebuilt buffer (names, dtypes, shapes); a one-line
    ``ValueError`` naming the file otherwise."""
    buffer = model.replay_buffer
    expected = set(_buffer_arrays(buffer))
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with z:
            if set(z.files) != expected | {"pos", "full"}:
                raise ValueError(f"holds {sorted(z.files)}, not {sorted(expected | {'pos', 'full'})}")
            pos, full = z["pos"], z["full"]
            if pos.shape or pos.dtype.kind not in "iu" or full.shape or full.dtype != np.bool_:
                raise ValueError("pos and full are not an integer and a bool")
            pos, full = int(pos), bool(full)
            if not 0 <= pos < buffer.buffer_size:
                raise ValueError(f"pos {pos} outside the run's buffer of {buffer.buffer_size}")
            filled = buffer.buffer_size if full else pos
            for name in sorted(expected):
                array, target = z[name], getattr(buffer, name)
                want = (filled, *target.shape[1:])
                if array.dtype != target.dtype or array.shape != want:
                    raise ValueError(
                        f"{name} is {array.dtype} {array.shape}, the run's buffer needs {target.dtype} {want}"
                    )
                target[:filled] = array
    except (
        OSError,
        ValueError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise ValueError(f"{path}: not a replay buffer of this run ({_one_line(err)})") from None
    buffer.pos, buffer.full = pos, full


def _buffer_arrays(buffer) -> list[str]:
    arrays = [k for k in BUFFER_ARRAYS if isinstance(getattr(buffer, k, None), np.ndarray)]
    if "observations" not in arrays:
        raise ValueError(f"{type(buffer).__name__}: only array replay buffers are saved")
    return arrays


# ------------------------------------------------------------------------------------ loop
def sb3_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Constructor keywords for ``algo_class(cfg.algo)``."""
    return {"seed": cfg.seed, "device": cfg.device, "verbose": 0, **cfg.hyper}


def train(
    cfg: RunConfig,
    run: Path,
    make_train_env: Callable[[], Any],
    make_eval: Callable[[], gym.Env],
    *,
    resume: bool,
    progress: bool = True,
) -> int:
    """Create or resume the agent, learn up to ``cfg.timesteps`` with real evaluations, save.

    ``make_train_env``: the SB3 ``VecEnv`` to learn in (wrapped in ``VecMonitor`` here).
    Returns the exit status (130 after Ctrl-C, with ``last.zip`` saved first). SAC's replay
    buffer (GBs for pixels) is saved at the end and on Ctrl-C only, not at every evaluation: a run
    resumed after a crash continues with an empty buffer. A resumed agent is ``load_agent``'s (the
    step, update and episode counters kept; SB3's recent-episode statistics start afresh).

    ``RUN/config.json`` is written here, once SB3 has accepted the settings (a value it refuses
    leaves a new run folder without a config, so the corrected command can use it).

    TensorBoard (``RUN/tb``, one run for the whole training, resumes appending): SB3's
    ``rollout/*``, ``train/*`` and ``time/*``, the real evaluations' ``real/*`` and ``{dream,
    train_env}/*`` scalars and ``real/video`` (``RealEvalCallback``), and, written once when the
    agent is new (not on resume, so the HParams tab keeps one row per run), ``agent_hparams`` as
    hparams with ``real/success_rate``, ``real/final_distance``, the training env's success rate
    and ``rollout/ep_rew_mean`` as metrics (the tab shows their latest values).
    """
    from stable_baselines3.common.logger import HParam, configure
    from stable_baselines3.common.vec_env import VecMonitor

    say = _say(progress)
    venv = VecMonitor(make_train_env())
    ckpt = checkpoint_path(run)
    resumed = resume and ckpt.is_file()
    try:
        if resumed:
            model = load_agent(cfg, ckpt, venv)
            if getattr(model, "replay_buffer", None) is not None:
                _resume_replay_buffer(model, run, say)
            say(f"resuming {ckpt} at {model.num_timesteps} steps")
        else:
            model = build_agent(cfg, venv)
    except BaseException:
        with contextlib.suppress(OSError, EOFError):
            venv.close()
        raise
    cfg.save(run)
    model.set_random_seed(cfg.seed + model.num_timesteps)
    # One TensorBoard folder for the whole run: a resumed run appends to the same curves.
    model.set_logger(configure(str(run / "tb"), ["tensorboard"]))
    if not resumed:  # once per run, in tb/ itself (one HParams row; a resume adds none)
        train_name = "dream" if cfg.env == "dream" else "train_env"
        metrics = (
            "real/success_rate",
            "real/final_distance",
            f"{train_name}/success_rate",
            "rollout/ep_rew_mean",
        )
        # The HParams tab shows each metric's latest scalar (the final real success rate).
        hparams = HParam(agent_hparams(cfg, model), dict.fromkeys(metrics, 0.0))
        model.logger.record("hparams", hparams, exclude=("stdout", "log", "json", "csv"))
        model.logger.dump(model.num_timesteps)
    remaining = cfg.timesteps - model.num_timesteps
    if remaining <= 0:
        say(f"{run}: already at {model.num_timesteps} >= {cfg.timesteps} steps; nothing to do")
        venv.close()
        return 0
    callbacks: list[BaseCallback] = [RealEvalCallback(cfg, run, make_eval, say)]
    if progress:
        callbacks.append(ProgressCallback(cfg.timesteps))
    try:
        model.learn(remaining, callback=callbacks, reset_num_timesteps=False)
    except KeyboardInterrupt:
        save_agent(model, run)
        save_replay_buffer(model, run)
        say(f"interrupted at {model.num_timesteps} steps; saved {ckpt} (continue with --resume)")
        return 130
    finally:
        model.logger.dump(model.num_timesteps)  # SB3 writes the last update's train/* only at its next log
        with contextlib.suppress(OSError, EOFError):  # Ctrl-C also reached SubprocVecEnv's workers
            venv.close()
    save_agent(model, run)
    save_replay_buffer(model, run)
    say(f"done: {model.num_timesteps} steps; agent in {ckpt}, TensorBoard in {run / 'tb'}")
    return 0


def _resume_replay_buffer(model, run: Path, say) -> None:
    old = run / "checkpoints" / OLD_REPLAY_BUFFER
    path = replay_buffer_path(run)
    if old.is_file():
        say(f"{old}: not read (a pickle can run code; buffers are now saved as {path.name})")
    if path.is_file():
        load_replay_buffer(model, path)
        buffer = model.replay_buffer
        say(f"replay buffer: {buffer.size() * buffer.n_envs} transitions from {path}")
    else:
        say(f"no {path}: the replay buffer starts empty")


def _say(progress: bool):
    if progress:
        from tqdm.auto import tqdm

        return lambda msg: tqdm.write(msg)
    return lambda msg: print(msg, flush=True)


def prepare_run(run: Path, resume: bool, fresh: Callable[[], RunConfig], timesteps: int | None) -> RunConfig:
    """The run's config: stored (``--resume``, with a new ``--timesteps`` target) or new.

    A folder that already holds a run is refused without ``--resume``. Not yet written: ``train``
    saves it once the agent has been built (everything it names checked, SB3 content)."""
    stored = (run / CONFIG_NAME).is_file()
    if stored and not resume:
        raise ValueError(f"{run} already holds a run: pass --resume to continue it, or choose another --out")
    if resume and stored:
        cfg = RunConfig.load(run)
        if timesteps is not None:
            cfg.timesteps = int(timesteps)
    else:
        cfg = fresh()
    return cfg


def cli(name: str, run: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a script's ``run(argv)``; bad input becomes one line on stderr and exit status 2."""
    keep_freed_memory()  # the dream's batched steps reuse freed blocks (see worldmodel.perf)
    try:
        code = run(argv)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        code = 130
    except (OSError, ValueError, RuntimeError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


# ---------------------------------------------------------------------------- command line
# SB3 keywords settable from the command line: flag -> (keyword, type, algorithms, help); the
# types are worldmodel.cli.flags', and RunConfig checks a stored config with them too.
HYPER_FLAGS: dict[str, tuple[str, Any, tuple[str, ...], str]] = {
    "--lr": ("learning_rate", positive_float, ALGOS, "learning rate, > 0 (default 3e-4)"),
    "--gamma": ("gamma", probability, ALGOS, "discount, in [0, 1] (default 0.99)"),
    "--batch-size": ("batch_size", positive_int, ALGOS, "minibatch size (default 256)"),
    "--n-steps": ("n_steps", positive_int, ("ppo",), "PPO: steps per env per rollout (default 128)"),
    "--n-epochs": ("n_epochs", positive_int, ("ppo",), "PPO: epochs per rollout (default 4)"),
    "--buffer-size": (
        "buffer_size",
        positive_int,
        ("sac",),
        "SAC: replay buffer transitions (default 50000)",
    ),
    "--learning-starts": (
        "learning_starts",
        nonneg_int,
        ("sac",),
        "SAC: steps before learning (default 1000)",
    ),
}
DREAM_NUMBERS: dict[str, Callable[[str], Any]] = {
    "horizon": positive_int,
    "pool_size": positive_int,
    "temperature": nonneg_float,
}
"""The numbers of ``RunConfig.dream`` and the types of the flags that set them."""
HYPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"learning_rate": 3e-4, "gamma": 0.99, "batch_size": 256, "n_steps": 128, "n_epochs": 4},
    "sac": {
        "learning_rate": 3e-4,
        "gamma": 0.99,
        "batch_size": 256,
        "buffer_size": 50_000,
        "learning_starts": 1000,
    },
}


def add_agent_arguments(p, *, default_envs: int) -> None:
    """Flags every training script has: algorithm, budget, run folder, evaluation, SB3 settings."""
    p.add_argument("--algo", default=None, help=f"RL algorithm: {' | '.join(ALGOS)} (required for a new run)")
    p.add_argument(
        "--timesteps",
        type=positive_int,
        default=None,
        help="total environment steps over all envs (required for a new run; with --resume, the new total)",
    )
    p.add_argument(
        "--num-envs", type=positive_int, default=default_envs, help=f"parallel envs (default {default_envs})"
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder: config.json, checkpoints/last.zip, tb/ (TensorBoard), videos/, eval.jsonl",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from checkpoints/last.zip with the same step counter and RUN/config.json "
        "(other flags but --timesteps are then ignored); starts fresh if RUN holds no run yet",
    )
    p.add_argument(
        "--eval-every",
        type=nonneg_int,
        default=10_000,
        help="timesteps between evaluations in the real sim, each also saving the checkpoint "
        "(default 10000; 0: only at the end)",
    )
    p.add_argument(
        "--eval-episodes", type=positive_int, default=10, help="real episodes per evaluation (default 10)"
    )
    p.add_argument(
        "--video-episodes",
        type=nonneg_int,
        default=4,
        help="real episodes per evaluation written to RUN/videos/real_STEP.mp4 (default 4; 0: none)",
    )
    p.add_argument(
        "--seed", type=nonneg_int, default=0, help="seed of the agent and the training envs (default 0)"
    )
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N, for the agent and the world model"
    )
    for flag, (_, typ, _, help_text) in HYPER_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_text)
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (evaluation lines still print)"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="another run's RUN/config.json: a new run (--out) with its settings; flags given here win",
    )


# RunConfig fields that are not flags: what the script derives or fixes itself
_NOT_FLAGS = ("env", "image_size", "vec", "format", "dtype")


def parse_with_run_config(parser, argv: list[str] | None):
    """``parser.parse_args(argv)``, with ``--config RUN/config.json`` (a ``RunConfig`` as runs save
    it) setting the defaults of the flags it maps to (``dream`` and ``hyper`` entries included), so
    that a run can be repeated or swept from a file and the command line's flags win."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = config_path(argv)
    if path is not None:
        saved = read_settings(path)
        where = f"--config {path}"
        keys = {v[0]: k.lstrip("-").replace("-", "_") for k, v in HYPER_FLAGS.items()}
        flat = {k: v for k, v in saved.items() if k not in ("dream", "hyper", *_NOT_FLAGS)}
        dream, hyper = saved.get("dream") or {}, saved.get("hyper") or {}
        if not isinstance(dream, dict) or not isinstance(hyper, dict):
            raise ValueError(f"{where}: dream and hyper must be JSON objects")
        flat.update({k: v for k, v in dream.items() if k not in _NOT_FLAGS})
        flat.update({keys.get(k, k): v for k, v in hyper.items()})
        apply_settings(parser, flat, where)
    return parser.parse_args(argv)


def hyper_from_args(args) -> dict[str, Any]:
    """SB3 keywords: the algorithm's defaults overridden by the flags given; a flag that does not
    apply to ``--algo`` is an error."""
    algo = args.algo
    algo_class(algo)
    out = dict(HYPER_DEFAULTS[algo])
    for flag, (key, _, algos, _) in HYPER_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if algo not in algos:
            raise ValueError(f"{flag} applies to {' | '.join(algos)} only, not {algo}")
        out[key] = value
    return out


def base_config(args, **fields: Any) -> RunConfig:
    """A new run's config from the shared flags plus script-specific ``fields``."""
    if args.algo is None or args.timesteps is None:
        raise ValueError("a new run needs --algo and --timesteps")
    return RunConfig(
        algo=args.algo,
        timesteps=args.timesteps,
        num_envs=args.num_envs,
        seed=args.seed,
        device=args.device,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        video_episodes=args.video_episodes,
        hyper=hyper_from_args(args),
        **fields,
    )
