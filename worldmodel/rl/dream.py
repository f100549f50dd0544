"""Training an agent in a world model's dream: ``train_in_dream(cfg, RUN)``, what
``python -m agents.train`` runs.

The agent learns only in ``DreamVecEnv`` (all envs stepped by one batched model call, under
``VecMonitor``; SB3 adds ``VecTransposeImage`` for ``CnnPolicy`` itself). Pixel observations use
``CnnPolicy``, latent observations (the model's features) ``MlpPolicy``. The periodic real-sim
evaluations, the checkpoints and the TensorBoard curves are ``loop.train``'s; latent policies see
the real sim through ``LatentObservation``, which encodes the real frames with the same model.

A ``learned`` reward reads the object positions off a head: the run's ``head`` file, else the
model's own state head, else the head stored for the checkpoint (``select_head``: refused when
stale or fitted to another model).
"""

from __future__ import annotations

from pathlib import Path

from worldmodel.rl.config import MIN_CNN_SIZE, RunConfig
from worldmodel.rl.envs import load_world_model, make_eval_env
from worldmodel.rl.loop import train


def train_in_dream(cfg: RunConfig, run: Path, *, resume: bool, progress: bool = True) -> int:
    """Load the run's world model and head, then ``loop.train`` in its dream; returns the exit
    status (130 after Ctrl-C, the agent saved first). ``cfg`` is ``prepare_run``'s (a new run's
    or the stored one); ``RUN/config.json`` is written once SB3 has accepted the settings."""
    model = load_world_model(cfg.checkpoint, cfg.device)
    cfg.image_size = int(model.config.image_size)
    if cfg.obs == "pixels" and cfg.image_size < MIN_CNN_SIZE:
        raise ValueError(
            f"{cfg.checkpoint}: the model makes {cfg.image_size}-px frames, too small for SB3's CnnPolicy "
            f"(>= {MIN_CNN_SIZE}); use --obs latent or a larger model"
        )
    head = dream_head(cfg, model)
    return train(
        cfg,
        Path(run),
        lambda: make_dream_env(cfg, model, head),
        lambda: make_eval_env(cfg, model),
        resume=resume,
        progress=progress,
    )


def dream_head(cfg: RunConfig, model):
    """The object-position head of a ``learned``-reward run: ``cfg.head``, else the model's own
    state head (``None``: the dream uses it), else the one stored for the checkpoint (``None`` for
    ``goal-image``)."""
    from worldmodel.dynamics.heads import head_path_for, select_head

    if cfg.reward != "learned":
        return None
    # Refused when stale (fitted to other weights) or fitted to another model (feature size).
    head, source = select_head(cfg.checkpoint, model, cfg.head)
    if source == "model":
        return None
    if head is None:
        raise ValueError(
            f"{cfg.checkpoint}: --reward learned needs an object-position head and there is none "
            f"(looked in the checkpoint and at {head_path_for(cfg.checkpoint)}); run "
            "`worldmodel train-head CKPT --data DIR`, pass --head FILE, or use --reward goal-image"
        )
    return head


def make_dream_env(cfg: RunConfig, model, head):
    """The ``DreamVecEnv`` of a dream run: ``cfg.num_envs`` batched dreams of ``model``."""
    from worldmodel.envs import DreamVecEnv

    return DreamVecEnv(
        model,
        cfg.num_envs,
        head=head,
        device=cfg.device,
        reward=cfg.reward,
        task=cfg.task,
        obs=cfg.obs,
        image_size=cfg.image_size,
        latent_bound=cfg.latent_bound,
        pool_seed=cfg.seed,
        **cfg.dream,
    )
