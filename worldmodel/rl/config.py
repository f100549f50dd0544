"""An agent run's settings: ``RunConfig`` (``RUN/config.json``), the SB3 hyperparameters a run may
set (``HYPER_FLAGS``, with the checked-number type of each), and the run folder's file names.

A stored config is checked with the same ``worldmodel.numbers`` types as the flags that set it, so a
hand-edited ``config.json`` is refused exactly as the command line would refuse its values.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldmodel.choices import check_choice
from worldmodel.envs.task import TASKS
from worldmodel.files import write_text_atomic
from worldmodel.numbers import nonneg_float, nonneg_int, positive_float, positive_int, probability

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
        check_choice("--algo", self.algo, ALGOS)
        check_choice("--obs", self.obs, OBS_TYPES)
        if self.reward is not None:
            check_choice("--reward", self.reward, REWARDS)
        check_choice("--task", self.task, TASKS)
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


def sb3_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Constructor keywords for ``algo_class(cfg.algo)``."""
    return {"seed": cfg.seed, "device": cfg.device, "verbose": 0, **cfg.hyper}
