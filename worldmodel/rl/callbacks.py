"""SB3 callbacks of an agent run: the periodic real-sim evaluation (TensorBoard ``real/*`` and
``real/video``, ``eval.jsonl``, the checkpoint) and a progress bar; the run's hparams.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from worldmodel.rl.config import EVAL_SEED, RunConfig
from worldmodel.rl.evaluation import evaluate_real, write_episodes_video
from worldmodel.rl.storage import save_agent
from worldmodel.video import add_tensorboard_video, grid


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
    from worldmodel.training.run_log import hparam_value

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
