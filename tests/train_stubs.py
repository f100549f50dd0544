"""Small LatentDynamics models for trainer, evaluation and DDP tests (no BatchNorm, CPU-fast).

``TinyPredictor`` ("test-tiny"): conv encoder → MLP(h, action, noise) → deconv decoder, teacher
forced one step ahead; ``noise`` draws from torch's global RNG in ``loss`` so that resume tests
check RNG restoring too. ``FakeGAN`` ("test-gan"): two optimisers ``g`` and ``d`` (plain SGD so
tests can predict the update exactly) whose losses both depend on both parameter groups.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.data.batch import frames_to_float
from worldmodel.dynamics import DynamicsConfig, LatentDynamics, State, register


@dataclasses.dataclass
class TinyConfig(DynamicsConfig):
    image_size: int = 16
    n_past: int = 2
    n_future: int = 4
    hidden: int = 32
    noise: float = 0.1
    lr: float = 3e-3
    batch_size: int = 8


class TinyPredictor(LatentDynamics):
    name = "test-tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        c, h = config.channels, config.hidden
        self.enc = nn.Sequential(nn.Conv2d(c, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 16, 4, 2, 1))
        s = config.image_size // 4
        self.enc_fc = nn.Linear(16 * s * s, h)
        self.dyn = nn.Sequential(nn.Linear(h + config.action_dim, h), nn.Tanh(), nn.Linear(h, h))
        self.dec_fc = nn.Linear(h, 16 * s * s)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(16, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(16, c, 4, 2, 1)
        )
        self.calls = 0
        self.nan_at_call: int | None = None

    def _encode(self, x: Tensor) -> Tensor:
        return self.enc_fc(self.enc(x).flatten(1))

    def _decode(self, h: Tensor) -> Tensor:
        s = self.config.image_size // 4
        return torch.sigmoid(self.dec(self.dec_fc(h).view(-1, 16, s, s)))

    def _next(self, h: Tensor, a: Tensor, noise: Tensor | None = None) -> Tensor:
        out = h + self.dyn(torch.cat([h, a], dim=-1))
        return out if noise is None else out + noise

    def loss(self, batch):
        self.calls += 1
        x = frames_to_float(batch["frames"])  # (B, T, 3, H, W)
        b, t = x.shape[:2]
        h = self._encode(x[:, :-1].flatten(0, 1)).view(b, t - 1, -1)
        noise = self.config.noise * torch.randn_like(h) if self.config.noise else None
        pred = self._decode(self._next(h, batch["actions"][:, :-1], noise).flatten(0, 1)).view_as(x[:, 1:])
        loss = F.mse_loss(pred, x[:, 1:])
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}

    def initial(self, frames, actions):
        x = frames_to_float(frames[:, -1])
        return State(h=self._encode(x), frame=x)

    @property
    def noise_dim(self):
        return self.config.hidden if self.config.noise else 0

    def step(self, state, action, *, sample=True, temperature=1.0, generator=None, noise=None):
        eps = None
        if sample and temperature > 0 and self.config.noise:
            if noise is None:
                noise = torch.randn(state["h"].shape, generator=generator, device=state["h"].device)
            eps = temperature * self.config.noise * noise
        frame = self._decode(self._next(state["h"], action, eps))
        return State(h=self._encode(frame), frame=frame)

    def decode(self, state):
        return state["frame"]

    def features(self, state):
        return state["h"]

    @property
    def feature_dim(self):
        return self.config.hidden


class FakeGAN(TinyPredictor):
    """Two parameter groups, two losses, two SGD optimisers: ``g`` (the predictor) and ``d``."""

    name = "test-gan"

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.disc = nn.Linear(3 * config.image_size**2, 1)

    def optimizers(self):
        g_params = [p for n, p in self.named_parameters() if not n.startswith("disc.")]
        return {
            "g": torch.optim.SGD(g_params, lr=self.config.lr),
            "d": torch.optim.SGD(self.disc.parameters(), lr=self.config.lr),
        }

    def loss(self, batch):
        x = frames_to_float(batch["frames"])
        _b, _t = x.shape[:2]
        h = self._encode(x[:, :-1].flatten(0, 1))
        fake = self._decode(self._next(h, batch["actions"][:, :-1].flatten(0, 1)))
        real = x[:, 1:].flatten(0, 1)
        d_fake, d_real = self.disc(fake.flatten(1)), self.disc(real.flatten(1))
        # Both losses reach both groups (no detach): the trainer must keep them apart.
        g_loss = F.softplus(-d_fake).mean() + F.mse_loss(fake, real)
        d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        return {"g": g_loss, "d": d_loss}, {"d_real": float(d_real.mean().detach())}


register("test-tiny", TinyPredictor)
register("test-gan", FakeGAN)


def write_png_dataset(root, splits: dict) -> None:
    """SVG-style PNG folders ``root/processed_data/<split>/traj_<i>/0/<t>.png`` from uint8
    ``(N, T, H, W, 3)`` arrays per split (a frames-only dataset for CLI tests)."""
    from pathlib import Path

    from PIL import Image

    for split, frames in splits.items():
        for i, seq in enumerate(frames):
            folder = Path(root) / "processed_data" / split / f"traj_{i}" / "0"
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(seq):
                Image.fromarray(frame.numpy() if hasattr(frame, "numpy") else frame).save(folder / f"{t}.png")


def join_local_group(rank: int, world: int, port: int) -> None:
    """The ``torchrun`` environment of process ``rank`` of ``world`` on this host, one thread each
    (what a spawned DDP test worker sets before ``distributed.init``)."""
    rank_vars = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **rank_vars)
    torch.set_num_threads(1)


def fit(model, data: dict, steps: int, batch: int = 16, seed: int = 0):
    """``steps`` Adam steps of ``model.loss`` on random batches of ``data``; the model in eval mode."""
    opt = model.optimizers()["model"]
    gen = torch.Generator().manual_seed(seed)
    n = len(next(iter(data.values())))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss, _ = model.loss({k: v[idx] for k, v in data.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
