"""Shared helpers for the dream-env tests: a tiny SVG whose samples visibly depend on the noise."""

from __future__ import annotations

import torch

from worldmodel import dynamics
from worldmodel.dynamics.heads import ObjectHead


def noisy_tiny_svg(image_size: int = 64, seed: int = 0):
    """``svg-lp`` tiny preset with weights drawn wide enough that z (hence the seed) changes the
    frames: the reference init (std 0.02) makes an untrained model's frames nearly constant, which
    would let a determinism test pass without testing anything."""
    torch.manual_seed(seed)
    model = dynamics.make("svg-lp", preset="tiny", image_size=image_size)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.5 / p[0].numel() ** 0.5)
    return model.eval()


def object_moving_svg(move: float = 0.01):
    """``svg-lp`` tiny with a state head that integrates the arm and the objects, whose contact
    model moves every object ``move`` m in x per action whatever the arm does (closed form)."""
    torch.manual_seed(0)
    model = dynamics.make(
        "svg-lp", preset="tiny", image_size=64, state_head=True, state_arm="actions", state_objects="actions"
    ).eval()
    with torch.no_grad():
        model.state_head.obj_net[-1].bias.copy_(torch.tensor([move / 0.1, 0.0, 0.0]))  # x pos_scale (0.1 m)
    return model


def identity_head(model) -> ObjectHead:
    """An untrained head: predicts "the target is where it started" plus a small feature term."""
    torch.manual_seed(1)
    head = ObjectHead(model.feature_dim, hidden=16)
    with torch.no_grad():
        head.net[-1].weight.normal_(0.0, 0.05)
    return head.eval()


def drive_until_done(agent, venv, steps: int = 3) -> None:
    """Attach a planning agent to a one-env VecEnv whose episodes last ``steps`` and act until the
    episode ends: every action in the box, the episode done on its last step."""
    import numpy as np

    agent.attach(venv)
    obs = venv.reset()
    for _ in range(steps):
        action, _ = agent.predict(obs)
        assert action.shape == (1, 4) and np.all(np.abs(action) <= 1)
        obs, _, done, _ = venv.step(action)
    assert done[0]
    venv.close()
