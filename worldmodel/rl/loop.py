"""The training loop of an agent run: create or resume the SB3 agent (``storage.load_agent``: nothing
from the run folder is executed), learn with real-sim evaluations, save; ``prepare_run`` decides
between a stored config (``--resume``) and a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback

from worldmodel.rl.callbacks import ProgressCallback, RealEvalCallback, agent_hparams
from worldmodel.rl.config import (
    CONFIG_NAME,
    OLD_REPLAY_BUFFER,
    RunConfig,
    checkpoint_path,
    replay_buffer_path,
)
from worldmodel.rl.storage import build_agent, load_agent, load_replay_buffer, save_agent, save_replay_buffer


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
