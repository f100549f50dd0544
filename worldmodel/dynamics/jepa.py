"""A decoder-free latent world model (JEPA family: PLDM, DINO-WM, LeWM), as ``LatentDynamics``.

Registry name ``jepa``. An encoder (a small conv net trained from scratch: nothing pretrained is
downloaded) maps each frame to a latent ``z_t`` ``(D,)``; an action-conditioned predictor maps the
last ``history`` latents and actions to the next latent. Nothing is trained to reproduce pixels::

    z_t     = enc(x_t)                                     (B, D)
    ẑ_{t+1} = ẑ_t + pred([ẑ_{t-h+1..t}], [a_{t-h+1..t}])   residual MLP, last layer zero-initialised
    loss    = mean_i ||ẑ_i - z_i||² / D  +  sigreg_weight · SIGReg(z)  [+ decoder]  [+ state head]

Objective, and where it departs from the papers:

- **Collapse: SIGReg** (LeWM, Maes et al. 2026, arXiv 2603.19312, its code ``lucas-maes/le-wm``;
  LeJEPA's Sketched Isotropic Gaussian Regulariser). At each time step of the window the batch's
  latents (``B`` rows) are projected on ``sigreg_projections`` random unit directions (fresh each
  call); along each, the Epps–Pulley statistic ``B ∫ |mean_b e^{i t u_b} - e^{-t²/2}|² e^{-t²/2}
  dt`` compares the empirical characteristic function with N(0, 1)'s (trapezoid rule on
  ``sigreg_knots`` = 17 points of ``[0, 3]``, doubled: the integrand is even), averaged over time
  steps and directions, weighted ``sigreg_weight`` = 0.09 — LeWM's form and values. A collapsed
  latent is far from N(0, I) along every direction, so this one term keeps every dimension
  spread and decorrelated, where PLDM needs VICReg's variance and covariance terms plus temporal
  smoothness and inverse-dynamics terms. The statistic grows with ``B``: the weight holds for the
  preset's batch size (LeWM trained with 128, the ``paper`` preset's).
- **Target encoder: the same encoder, no stop-gradient, no EMA** (LeWM; PLDM likewise trains
  encoder and predictor end to end through the targets). SIGReg is what prevents the trivial
  solution; a stop-gradient/EMA target (BYOL, I-JEPA) would add a second copy of the encoder and
  its momentum to tune. DINO-WM instead freezes a pretrained DINOv2 encoder, which cannot be
  downloaded here.
- **Multi-step open-loop prediction** (PLDM's rollout loss), not DINO-WM's and LeWM's teacher
  forcing: from the encoded context frames the predictor rolls out ``n_future`` steps on its own
  predictions along the recorded actions, and every step is compared with the encoder's latent of
  the recorded frame (the first step is the teacher-forced one-step prediction). The dream and the
  planner run the predictor open loop, so it is trained as it is used.
- **Encoder and predictor are small and convolutional / MLP**, not LeWM's ViT-tiny (224 px) and
  6-layer transformer with AdaLN-zero action conditioning: stride-2 4×4 convolutions with
  GroupNorm (no BatchNorm: a latent must not depend on the rest of the batch, and train and eval
  mode then compute the same encoder) down to 4×4, then LeWM's two-layer MLP projector with
  LayerNorm in its hidden layer where LeWM has BatchNorm1d (again: no batch dependence) and no
  normalisation on its output, which SIGReg shapes (a final LayerNorm would fix each latent's
  scale and fight it). The
  predictor is a residual MLP on ``[z_{t-h+1..t}, action embedding of a_{t-h+1..t}]`` (LayerNorm,
  SiLU, dropout as LeWM's predictor); its last layer starts at zero, so an untrained predictor
  is "nothing moves" (AdaLN-zero's idea).

Optional decoder (``decoder=True``, the default in both presets): a conv decoder trained with a
pixel MSE on **detached** latents — the encoder's latent of every frame of the window and the
predictor's open-loop predictions (those are what the dream decodes, and they drift off the
encoder's latents) — so its gradients never reach the encoder or the predictor (DINO-WM's
decoder is trained apart in the same way; its Table 7 shows that letting a pixel loss shape the
predictor made planning worse). ``decode(state)`` returns its picture of the state's latest
latent. Without it (``decoder=False``) ``decode`` raises ``ValueError``: the dream decodes for
pixel observations, ``goal-image`` rewards and rendering, and a blank frame there would silently
train a policy on nothing; such a model runs in the dream with ``obs="latent"`` and
``reward="learned"`` (a state head), and in the planner with ``LearnedReward``.

Deterministic: ``noise_dim`` is 0 and ``sample``/``temperature`` change nothing (``step`` accepts
an empty ``noise`` of shape ``(B, 0)``, as ``svg-det``).

State head (``state_head=True``): the shared ``LatentDynamics.state_loss`` on the model's own
open-loop rollouts, added to the loss; it reads ``features``, the latest latent ``z_t``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from worldmodel.data.batch import Batch, frames_to_float
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, Sampling, State

_SIGREG_T_MAX = 3.0  # the e^{-t²/2} weight is below 0.012 past t = 3


@dataclasses.dataclass
class JEPAConfig(DynamicsConfig):
    """JEPA hyper-parameters. Defaults are the ``paper`` preset's (see ``PRESETS``)."""

    nf: int = 64
    """Channels of the encoder's first (highest-resolution) stage; stage k has ``nf * 2**k``,
    at most ``8 * nf``. The decoder mirrors it."""
    latent_dim: int = 192
    """``D``, the latent's size (the ``features``): LeWM's 192."""
    history: int = 3
    """Latents (and actions) the predictor sees: ``h``. Shorter contexts are padded with the
    first latent and zero actions ("stood still")."""
    predictor_hidden: int = 1024
    """Width of the predictor MLP's hidden layers."""
    predictor_layers: int = 3
    """Linear layers of the predictor MLP (>= 2)."""
    predictor_dropout: float = 0.1
    """Dropout after each hidden layer of the predictor in training (LeWM's 0.1)."""
    action_embed: int = 64
    """Width of the action embedding (an MLP on the ``h`` actions) fed to the predictor."""
    sigreg_weight: float = 0.09
    """Weight of SIGReg (LeWM's lambda, its one loss hyper-parameter, 0.09 in its code). The
    statistic is proportional to the batch size: retune it with a very different batch."""
    sigreg_projections: int = 1024
    """Random directions SIGReg tests per call."""
    sigreg_knots: int = 17
    """Quadrature points of the Epps–Pulley integral on ``[0, 3]``."""
    decoder: bool = True
    """Train a pixel decoder on detached latents (for ``decode``: the dream's pixels, eval,
    sample GIFs). Its gradients never reach the encoder or the predictor."""
    decoder_weight: float = 1.0
    """Weight of the decoder's pixel MSE (it only scales the decoder's own gradients)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Fast CPU model for tests (16×16 frames), as the other models' tiny presets.
        "tiny": {
            "image_size": 16,
            "nf": 8,
            "latent_dim": 32,
            "history": 1,
            "predictor_hidden": 128,
            "predictor_layers": 3,
            "predictor_dropout": 0.0,
            "action_embed": 16,
            "sigreg_weight": 0.09,
            "sigreg_projections": 128,
            "sigreg_knots": 17,
            "n_past": 2,
            "n_future": 5,
            "lr": 1e-3,
            "batch_size": 16,
        },
        # LeWM's (lucas-maes/le-wm config lewm.yaml) where it carries over: latent 192, history
        # 3, SIGReg weight 0.09 with 1024 directions and 17 knots, predictor dropout 0.1, batch
        # 128; on this repo's BAIR protocol (64 px, 2 context + 10 predicted frames, as the other
        # models' paper presets, so eval compares like with like). Ours: the conv encoder and MLP
        # predictor (LeWM: ViT-tiny at 224 px, 6-layer transformer), Adam at 3e-4 (LeWM: AdamW
        # 5e-5, weight decay 1e-3, for its ViT) and the open-loop loss (LeWM teacher-forces).
        "paper": {
            "image_size": 64,
            "nf": 64,
            "latent_dim": 192,
            "history": 3,
            "predictor_hidden": 1024,
            "predictor_layers": 3,
            "predictor_dropout": 0.1,
            "action_embed": 64,
            "sigreg_weight": 0.09,
            "sigreg_projections": 1024,
            "sigreg_knots": 17,
            "n_past": 2,
            "n_future": 10,
            "lr": 3e-4,
            "betas": (0.9, 0.999),
            "batch_size": 128,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 8 for jepa, got {s}")
        self._check_positive(
            "nf", "latent_dim", "history", "predictor_hidden", "action_embed", "sigreg_projections"
        )
        if self.predictor_layers < 2:
            raise ValueError(f"predictor_layers must be >= 2, got {self.predictor_layers}")
        if self.sigreg_knots < 2:
            raise ValueError(f"sigreg_knots must be >= 2, got {self.sigreg_knots}")
        if not 0 <= self.predictor_dropout < 1:
            raise ValueError(f"predictor_dropout must be in [0, 1), got {self.predictor_dropout}")
        if self.sigreg_weight < 0 or self.decoder_weight < 0:
            raise ValueError(
                "sigreg_weight and decoder_weight must be >= 0, got "
                f"{self.sigreg_weight} and {self.decoder_weight}"
            )


def sigreg(z: Tensor, projections: int, knots: int, generator: torch.Generator | None = None) -> Tensor:
    """SIGReg: how far each group of latents ``z`` ``(G, N, D)`` is from N(0, I), tested along
    random 1-D projections; a scalar tensor.

    For each group (a time step of the window: its ``N`` rows are the batch) and each of
    ``projections`` random unit directions (the same for every group, fresh each call), the
    Epps–Pulley statistic ``N ∫ |mean_n e^{i t u_n} - e^{-t²/2}|² e^{-t²/2} dt`` over ``t`` in
    ``[-3, 3]`` (trapezoid rule on ``knots`` points of ``[0, 3]``, doubled: the integrand is
    even); the mean over groups and directions. It is 0 only when every projection's empirical
    characteristic function equals the Gaussian's on the knots.
    """
    n, d = z.shape[-2:]
    z = z.float()
    dirs = torch.randn(d, projections, generator=generator, device=z.device)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    t = torch.linspace(0.0, _SIGREG_T_MAX, knots, device=z.device)
    tu = (z @ dirs).unsqueeze(-1) * t  # (G, N, M, K)
    gauss = torch.exp(-0.5 * t.square())
    err = (tu.cos().mean(-3) - gauss).square() + tu.sin().mean(-3).square()  # (G, M, K)
    return 2 * n * torch.trapezoid(err * gauss, t, dim=-1).mean()


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 that divides ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _stage_channels(image_size: int, nf: int) -> list[int]:
    """Channels after each stride-2 stage, from ``image_size`` down to 4×4."""
    stages = int(math.log2(image_size)) - 2
    return [nf * 2 ** min(k, 3) for k in range(stages)]


class Encoder(nn.Module):
    """Frames ``(N, C, S, S)`` in [0, 1] → latents ``(N, D)`` (no output normalisation)."""

    def __init__(self, c: JEPAConfig) -> None:
        super().__init__()
        chans = _stage_channels(c.image_size, c.nf)
        layers: list[nn.Module] = []
        cin = c.channels
        for cout in chans:
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(_groups(cout), cout), nn.SiLU()]
            cin = cout
        self.convs = nn.Sequential(*layers)
        flat = cin * 16
        self.project = nn.Sequential(
            nn.Linear(flat, 2 * c.latent_dim), nn.LayerNorm(2 * c.latent_dim), nn.SiLU(),
            nn.Linear(2 * c.latent_dim, c.latent_dim),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.convs(x).flatten(1))


class Decoder(nn.Module):
    """Latents ``(N, D)`` → frames ``(N, C, S, S)`` in [0, 1] (Sigmoid); the encoder mirrored."""

    def __init__(self, c: JEPAConfig) -> None:
        super().__init__()
        chans = _stage_channels(c.image_size, c.nf)[::-1]
        self.top = chans[0]
        self.unproject = nn.Linear(c.latent_dim, self.top * 16)
        layers: list[nn.Module] = [nn.GroupNorm(_groups(self.top), self.top), nn.SiLU()]
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.GroupNorm(_groups(cout), cout), nn.SiLU()]
        layers += [nn.ConvTranspose2d(chans[-1], c.channels, 4, 2, 1), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.unproject(z).view(len(z), self.top, 4, 4))


class Predictor(nn.Module):
    """``(z (N, h, D), actions (N, h, A))`` → the next latent ``(N, D)``: ``z[:, -1] + MLP``."""

    def __init__(self, c: JEPAConfig) -> None:
        super().__init__()
        e = c.action_embed
        self.action = nn.Sequential(nn.Linear(c.history * c.action_dim, e), nn.SiLU(), nn.Linear(e, e))
        layers: list[nn.Module] = []
        cin = c.history * c.latent_dim + e
        for _ in range(c.predictor_layers - 1):
            layers += [
                nn.Linear(cin, c.predictor_hidden),
                nn.LayerNorm(c.predictor_hidden),
                nn.SiLU(),
                nn.Dropout(c.predictor_dropout),
            ]
            cin = c.predictor_hidden
        self.out = nn.Linear(cin, c.latent_dim)
        # Zero init: an untrained predictor says "nothing moves" (AdaLN-zero's idea in LeWM).
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: Tensor, actions: Tensor) -> Tensor:
        a = self.action(actions.flatten(1))
        return z[:, -1] + self.out(self.mlp(torch.cat([z.flatten(1), a], 1)))


class JEPA(LatentDynamics):
    """A JEPA world model (see the module docstring for the objective).

    State tensors (leading batch ``B``): ``z`` ``(B, h, D)``, the last ``history`` latents (the
    newest last; ``features`` is ``z[:, -1]``), and, when ``history > 1``, ``past`` ``(B, h-1, A)``,
    the actions between them.
    """

    name: ClassVar[str] = "jepa"
    config_class: ClassVar[type[DynamicsConfig]] = JEPAConfig
    config: JEPAConfig

    def __init__(self, config: JEPAConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config)
        self.predictor = Predictor(config)
        self.decoder = Decoder(config) if config.decoder else None
        self.build_state_head()

    @property
    def feature_dim(self) -> int:
        """``latent_dim``: ``features`` is the latest latent."""
        return self.config.latent_dim

    @property
    def noise_dim(self) -> int:
        """0: the model is deterministic."""
        return 0

    # --- helpers ----------------------------------------------------------------------------
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 frames ``(B, T, H, W, C)`` → latents ``(B, T, D)`` (one batched encoder call)."""
        b, t = frames.shape[:2]
        x = frames_to_float(frames.to(self.device))
        return self.encoder(x.flatten(0, 1)).view(b, t, -1)

    def _window(self, z: Tensor, actions: Tensor) -> State:
        """The state after latents ``z`` ``(B, T0, D)`` and the actions between them
        ``(B, T0-1, A)``: the last ``history`` of each, padded in front when too few."""
        h = self.config.history
        if z.shape[1] < h:  # "stood still" before the first frame
            z = torch.cat([z[:, :1].expand(-1, h - z.shape[1], -1), z], 1)
        out = {"z": z[:, -h:]}
        if h > 1:
            a = actions[:, -(h - 1) :]
            if a.shape[1] < h - 1:
                a = torch.cat([a.new_zeros(len(a), h - 1 - a.shape[1], a.shape[2]), a], 1)
            out["past"] = a
        return State(out)

    def _advance(self, state: State, action: Tensor) -> State:
        """One predictor step with ``action`` ``(B, A)`` (float32, on the model's device)."""
        z = state["z"]
        acts = action[:, None] if self.config.history == 1 else torch.cat([state["past"], action[:, None]], 1)
        nxt = self.predictor(z, acts)
        out = {"z": torch.cat([z[:, 1:], nxt[:, None]], 1)}
        if self.config.history > 1:
            out["past"] = acts[:, 1:]
        return State(out)

    # --- training ---------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Open-loop latent prediction + SIGReg (+ the decoder's pixel MSE on detached latents,
        + the state head's loss).

        Metrics: ``pred`` (mean squared error of the open-loop predictions to the encoder's
        latents, per dimension), ``copy`` (the same for "the last context latent stays put": the
        baseline ``pred`` must beat), ``sigreg``, ``recon`` (the decoder's pixel MSE; with a
        decoder), ``loss``.
        """
        c = self.config
        frames, actions = batch["frames"], batch["actions"]
        self._check_frames(frames)
        b, t = frames.shape[:2]
        if t < c.n_past + 1:
            raise ValueError(f"frames: loss needs T >= n_past + 1 = {c.n_past + 1} frames, got {t}")
        self._check_actions(actions, (b, t, c.action_dim), "actions")
        acts = actions.to(self.device, torch.float32)
        z = self.encode(frames)  # (B, T, D): inputs and targets, gradients through both
        k = c.n_past
        state = self._window(z[:, :k], acts[:, : k - 1])
        preds = []
        for i in range(k, t):
            state = self._advance(state, acts[:, i - 1])
            preds.append(state["z"][:, -1])
        pred = torch.stack(preds, 1)  # (B, T - k, D)
        target = z[:, k:]
        pred_loss = (pred - target).pow(2).mean()
        reg = sigreg(z.transpose(0, 1), c.sigreg_projections, c.sigreg_knots)  # per frame
        loss = pred_loss + c.sigreg_weight * reg
        metrics = {
            "pred": pred_loss.detach(),
            "copy": (target - z[:, k - 1 : k]).detach().pow(2).mean(),
            "sigreg": reg.detach(),
        }
        if self.decoder is not None:
            # Detached inputs: the pixel loss trains the decoder only.
            x = frames_to_float(frames.to(self.device))
            codes = torch.cat([z, pred], 1).detach().flatten(0, 1)
            want = torch.cat([x, x[:, k:]], 1).flatten(0, 1)
            recon = (self.decoder(codes) - want).pow(2).mean()
            loss = loss + c.decoder_weight * recon
            metrics["recon"] = recon.detach()
        loss = self.add_state_loss(batch, loss, metrics)
        return loss, {**metrics, "loss": loss.detach()}

    # --- rollouts ---------------------------------------------------------------------------
    def initial(self, frames: Tensor, actions: Tensor) -> State:
        """Encode the context; the state holds its last ``history`` latents (and actions between).

        ``features`` of the result is the last context frame's latent; ``decode`` its decoder
        reconstruction."""
        self._check_context(frames, actions)
        return self._window(self.encode(frames), actions.to(self.device, torch.float32))

    def _step(self, state: State, action: Tensor, opts: Sampling) -> State:
        """Predict the next latent from the state's latents and ``action`` ``(B, A)``.

        Deterministic: ``sample``, ``temperature`` and ``generator`` change nothing; ``noise``
        may only be empty ``(B, 0)``."""
        b, noise = len(state), opts.noise
        if noise is not None and tuple(noise.shape) != (b, 0):
            raise ValueError(
                f"noise: jepa is deterministic and takes no noise (shape ({b}, 0)), got {tuple(noise.shape)}"
            )
        return self._advance(state, action.to(state["z"].device, torch.float32))

    def decode(self, state: State) -> Tensor:
        """The decoder's picture of the latest latent: ``(B, C, H, W)`` in [0, 1].

        ``ValueError`` for a model built with ``decoder=False``: it predicts latents, not pixels."""
        if self.decoder is None:
            raise ValueError(
                "jepa: this model has no decoder (decoder=false), so it makes no pixels; use it with "
                "latent observations and a state head (obs='latent', reward='learned') or train it "
                "with --set decoder=true"
            )
        return self.decoder(state["z"][:, -1]).float()

    def features(self, state: State) -> Tensor:
        """The latest latent ``z_t`` ``(B, latent_dim)``, float32 (about N(0, 1) per dimension)."""
        return state["z"][:, -1].float()
