"""VGAN (Vondrick, Pirsiavash & Torralba, NIPS 2016, "Generating Videos with Scene Dynamics") as an
action-conditioned ``LatentDynamics``.

Networks follow the reference Torch7 code (``cvondrick/videogan``: ``main.lua`` unconditional,
``main_conditional.lua`` future from a static image). Pixels inside the networks are in [-1, 1],
videos are ``(B, C, L, S, S)`` with ``L = clip_len`` frames (32 in the paper)::

    two-stream generator          video = m ⊙ f + (1 − m) ⊙ b
      foreground stream (3-D)     3-D transposed convolutions → f (Tanh, C×L×S×S), m (Sigmoid, 1×L×S×S)
      background stream (2-D)     2-D transposed convolutions → b (Tanh, C×S×S), repeated over the L frames
    discriminator                 3-D convolutions, LeakyReLU(0.2), a 2-way softmax (real / fake)

Two modes (``conditional``):

- unconditional (``main.lua``): both streams start from ``z ~ N(0, I)`` (100-d); the mask gets an
  L1 sparsity penalty (``mask_l1 = 0.1``). Preset ``paper-unconditional``.
- conditional (``main_conditional.lua``, the world model; presets ``paper`` and ``tiny``): an image
  encoder (2-D convolutions, no BatchNorm on the first) maps the context frame ``x_0`` to a
  ``8·width × 4 × 4`` code that starts both streams; the generator loss adds
  ``first_frame_l1 · |Ĝ(x_0)[frame 0] − x_0|`` (weight 10) to the adversarial term, the
  discriminator is twice as wide (``width`` 128 instead of 64) and there is no mask penalty.

Widths scale with ``width`` as in the reference (encoder ``width·[1, 2, 4, 8]``, foreground stream
``width·[8, 8, 4, 2, 1]``, background ``width·[4, 2, 1]``, discriminator ``width·[1, 2, 4, 8]`` for
64 px; smaller frames drop the highest-resolution layers, ``log2(S) − 2`` levels). Initialisation:
(transposed) convolution weights N(0, 0.01), biases 0; BatchNorm weights N(1, 0.02), biases 0.
Adam lr 2e-4, betas (0.5, 0.999) for both networks.

Our extensions (the reference is action-free and, conditionally, deterministic):

- **Actions.** Clip frame ``j`` should follow the actions ``a_0..a_{j-1}`` (``a_j`` moves frame
  ``j`` to ``j+1``). The per-frame action signal ``s_j = [a_{j-1}, Σ_{i<j} a_i]`` (zero for
  ``j = 0``; the last action and the displacement so far) is concatenated as ``2A`` constant
  channels to the input of every foreground layer, at that layer's temporal scale: a cell that
  covers frames ``[τb, (τ+1)b)`` gets ``s_{τb}``, the signal at its first frame. The heads read it
  per frame. The discriminator gets the same signal at each of its scales, so it can tell motion
  that disagrees with the actions from motion that agrees.
- **Causality.** The reference's temporal kernels (4, stride 2, padding 1) let frame ``t`` see
  features of later frames, and so later actions. Each temporal up-sampling here drops the
  look-ahead tap (kernel 3, output cropped to ``2T``: output ``t`` reads inputs ``≤ ⌊t/2⌋``), and
  the temporal doublings move from the heads into the stream (first layer ``L/2^(levels-1)``
  frames instead of ``L/2^levels``, heads with temporal kernel 1), so the heads see one frame
  each. In eval mode, frame ``j`` of a clip therefore depends on ``a_0..a_{j-1}`` only: a clip
  generated for the first ``k`` actions agrees exactly with one generated for all of them on its
  first ``k + 1`` frames. (Training-mode BatchNorm statistics are over the whole clip, as in the
  reference.)
- **Noise in the conditional model.** A ``z_dim``-d ``z ~ N(0, I)`` is concatenated to the code at
  the first foreground layer (the reference conditional model has none).
- **Optional L1 on every frame** (``recon_l1``, 0 in the paper presets), as action-conditioned
  video GANs such as SAVP pair the adversarial loss with a reconstruction loss.

Training. ``loss`` returns ``{"g": ..., "d": ...}`` from one forward pass: ``d`` is the 2-way
cross-entropy of real (label 0) and generated (label 1) clips (separate discriminator passes, so
BatchNorm statistics are per kind, as in the reference), ``g`` the non-saturating term (generated
clips labelled real) plus the L1 terms. The trainer steps each optimiser on its own parameters;
the two updates are simultaneous, where the reference steps D and then G reusing D's forward
output. The clip is the window's frames ``n_past − 1 .. n_past − 1 + L − 1`` (the last context
frame and ``L − 1`` future frames; presets set ``n_past = 1``, ``n_future = L − 1``). BAIR
episodes (and ``worldmodel collect``'s default) have 30 frames, shorter than the ``paper`` 32-frame
clip, which the reference loader filled by repeating the last frame: here train the ``paper`` preset
on them with ``--set clip_len=16 --set n_future=15``, or collect episodes of at least 32 frames.

Rollouts and cost. A state holds the current clip's conditioning frame, its ``z``, the actions
taken in it so far and the position ``pos`` of the current frame in it (frame 0 is the
conditioning frame). ``step`` writes the action at ``pos``, generates the clip for the actions so
far and returns frame ``pos + 1``: **one generator call per step**, so ``H`` calls for an
``H``-step rollout by stepping. ``rollout`` writes all of a clip's actions at once and takes its
frames from one call: ``ceil(H / (L − 1))`` calls when the rows are at the same clip position
(as after ``initial``), at most that plus one per distinct position otherwise; by causality the
frames equal those of stepping. Horizons longer than a clip: when a clip is used up
(``pos = L − 1``) the next step starts a new clip conditioned on the last generated frame, with a
new ``z``. ``initial`` leaves ``pos = L − 1`` so the first step starts the first clip from the last
context frame; earlier context frames and actions are unused (VGAN conditions on one frame).
``z`` is drawn when a clip starts: from ``noise`` (``(B, z_dim)``, scaled by ``temperature``)
where given, rows not starting a clip ignore theirs; ``sample=False`` uses ``z = 0``.

``features`` is the encoder code of the current frame, average-pooled to
``feature_pool × feature_pool`` and flattened; the unconditional model has no encoder and uses
the frame average-pooled to 4 × 4 instead.

State head (our extension, off by default; ``state_head=True``): an end-effector and object-
position head trained with the model on its own open-loop rollouts along the recorded actions
(``LatentDynamics.state_loss``, added to this model's loss: the generator's, with the
generator's optimiser), so the latent keeps the arm and the objects that the task is about; see
``dynamics/base.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.data.batch import Batch, frames_to_float
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, State

_REAL, _FAKE = 0, 1


@dataclasses.dataclass
class VGANConfig(DynamicsConfig):
    """VGAN hyper-parameters. Defaults are the conditional model of the paper (the ``paper`` preset)."""

    conditional: bool = True
    """Future generation from a context frame (True) or unconditional videos from ``z`` (False)."""
    clip_len: int = 32
    """Frames ``L`` per generated clip (frame 0 reconstructs the conditioning frame)."""
    width: int = 128
    """Width of the last foreground layer and the first discriminator layer (reference: 128
    conditional, 64 unconditional); other layers scale with it."""
    z_dim: int = 100
    """Size of the noise vector ``z`` (one per clip)."""
    first_frame_l1: float = 10.0
    """Weight of the L1 loss between generated frame 0 and the context frame (conditional)."""
    mask_l1: float = 0.0
    """Weight of the L1 sparsity penalty on the mask (reference: 0.1 unconditional, 0 conditional)."""
    recon_l1: float = 0.0
    """Weight of an L1 loss on every generated frame (our extension; 0 = reference)."""
    action_conditioned: bool = True
    """Condition the foreground stream and the discriminator on the actions (our extension)."""
    feature_pool: int = 2
    """``features`` pools the encoder code to ``feature_pool × feature_pool``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Fast CPU model for tests and the quick demo (16×16 frames, 8-frame clips). It learns
        # action-driven motion within a few hundred CPU steps only with the L1 on every frame
        # (our extension) and a 5× higher learning rate than the paper's.
        "tiny": {
            "image_size": 16,
            "clip_len": 8,
            "width": 16,
            "z_dim": 8,
            "n_past": 1,
            "n_future": 7,
            "recon_l1": 10.0,
            "lr": 1e-3,
            "betas": (0.5, 0.999),
            "batch_size": 16,
        },
        # main_conditional.lua: 64 px, 32 frames, width 128 (G ≈ 68 M, D ≈ 44 M), batch 32.
        "paper": {
            "image_size": 64,
            "conditional": True,
            "clip_len": 32,
            "width": 128,
            "z_dim": 100,
            "first_frame_l1": 10.0,
            "mask_l1": 0.0,
            "recon_l1": 0.0,
            "n_past": 1,
            "n_future": 31,
            "lr": 2e-4,
            "betas": (0.5, 0.999),
            "batch_size": 32,
        },
        # main.lua: z ~ N(0, I) 100-d, width 64, mask L1 0.1, batch 64.
        "paper-unconditional": {
            "image_size": 64,
            "conditional": False,
            "clip_len": 32,
            "width": 64,
            "z_dim": 100,
            "first_frame_l1": 0.0,
            "mask_l1": 0.1,
            "recon_l1": 0.0,
            "n_past": 1,
            "n_future": 31,
            "lr": 2e-4,
            "betas": (0.5, 0.999),
            "batch_size": 64,
        },
    }

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 32
    n_past: int = 1
    n_future: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 8 for VGAN, got {s}")
        for name in ("clip_len", "width", "z_dim", "n_past", "feature_pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        d = 2**self.levels
        if self.clip_len < 2 or self.clip_len % d:
            raise ValueError(
                f"clip_len must be a multiple of {d} (2**levels at {s} px) and >= 2, got {self.clip_len}"
            )
        if self.n_future < self.clip_len - 1:
            raise ValueError(f"n_future must be >= clip_len - 1 = {self.clip_len - 1}, got {self.n_future}")
        if self.feature_pool > 4:
            raise ValueError(f"feature_pool must be <= 4 (the code is 4×4), got {self.feature_pool}")

    @property
    def levels(self) -> int:
        """Resolution levels between 4 px and the frame size: ``log2(image_size) − 2`` (4 for 64 px)."""
        return int(math.log2(self.image_size)) - 2


# --- building blocks ------------------------------------------------------------------------------


def init_weights(module: nn.Module) -> None:
    """Reference init: (transposed) conv weights N(0, 0.01), bias 0; BatchNorm N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def action_signal(actions: Tensor, length: int) -> Tensor:
    """Per-frame action signal ``s_j = [a_{j-1}, Σ_{i<j} a_i]``, ``s_0 = 0``.

    Args:
        actions: ``(B, n, A)`` the actions of a clip, ``n <= length - 1`` (missing ones are zero).
        length: ``L``, frames in the clip.

    Returns:
        ``(B, 2A, L)``: frame ``j`` depends on ``a_0..a_{j-1}`` only.
    """
    b, n, a = actions.shape
    padded = actions.new_zeros(b, length, a)
    padded[:, 1 : n + 1] = actions[:, : length - 1]
    return torch.cat([padded, padded.cumsum(1)], dim=2).transpose(1, 2)


def _with_signal(h: Tensor, signal: Tensor | None) -> Tensor:
    """Concatenate the action signal ``(B, 2A, L)`` to ``h (B, C, T, S, S)`` at ``h``'s time scale:
    cell ``τ`` (frames ``[τL/T, (τ+1)L/T)``) gets the signal of its first frame."""
    if signal is None:
        return h
    t, s = h.shape[2], h.shape[-1]
    sub = signal[:, :, :: signal.shape[2] // t]
    return torch.cat([h, sub[..., None, None].expand(-1, -1, -1, s, s).to(h.dtype)], dim=1)


class CausalUp3d(nn.Module):
    """Doubles time and space: the reference's ``VolumetricFullConvolution(4,4,4, s2, p1)`` without
    its temporal look-ahead tap (kernel 3 in time, output cropped to ``2T``): output frame ``t``
    reads input frames ``≤ ⌊t/2⌋`` only."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(cin, cout, (3, 4, 4), stride=2, padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)[:, :, : 2 * x.shape[2]]


class Encoder(nn.Module):
    """Context frame ``(B, C, S, S)`` in [-1, 1] → code ``(B, 8·width, 4, 4)`` (64 px; reference
    ``main_conditional.lua``: Conv 4×4 s2 p1, ReLU, BatchNorm(eps 1e-3) from the second layer)."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = c.channels
        for k in range(c.levels):
            cout = c.width * 2**k
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if k > 0:
                layers.append(nn.BatchNorm2d(cout, eps=1e-3))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Generator(nn.Module):
    """The two-stream generator: ``forward(code_or_z, z, actions)`` → ``video, fg, mask, bg``."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        self.config = c
        lv, w, sig = c.levels, c.width, (2 * c.action_dim if c.action_conditioned else 0)
        self.first_frames = c.clip_len // 2 ** (lv - 1)
        self.encoder = Encoder(c) if c.conditional else None
        # Widths from the 4×4 level up: 8·width at 64 px (= the code's width), then halving.
        widths = [w * 2**k for k in reversed(range(lv))]
        top = widths[0]
        # Foreground stream: [code, z] (cond., 1×1 spatial kernel) or z (uncond., 4×4) → T0×4×4.
        if c.conditional:
            first = nn.ConvTranspose3d(top + c.z_dim, top, (self.first_frames, 1, 1))
        else:
            first = nn.ConvTranspose3d(c.z_dim, top, (self.first_frames, 4, 4))
        self.fg_first = nn.Sequential(first, nn.BatchNorm3d(top), nn.ReLU(inplace=True))
        self.fg_up = nn.ModuleList(
            nn.Sequential(CausalUp3d(cin + sig, cout), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
            for cin, cout in itertools.pairwise(widths)
        )
        head = {"kernel_size": (1, 4, 4), "stride": (1, 2, 2), "padding": (0, 1, 1)}
        self.fg_head = nn.ConvTranspose3d(widths[-1] + sig, c.channels, **head)
        self.mask_head = nn.ConvTranspose3d(widths[-1] + sig, 1, **head)
        # Background stream: code (cond.) or z (uncond., first a 1×1 → 4×4 layer) → one image.
        bg: list[nn.Module] = []
        if not c.conditional:
            bg += [nn.ConvTranspose2d(c.z_dim, top, 4), nn.BatchNorm2d(top), nn.ReLU(inplace=True)]
        for cin, cout in itertools.pairwise(widths):
            bg += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        bg += [nn.ConvTranspose2d(widths[-1], c.channels, 4, 2, 1), nn.Tanh()]
        self.background = nn.Sequential(*bg)

    def forward(self, context: Tensor | None, z: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """Generate one clip.

        Args:
            context: ``(B, C, S, S)`` in [-1, 1] (conditional) or None (unconditional).
            z: ``(B, z_dim)`` noise.
            actions: ``(B, n, A)``, ``n <= L − 1``, the clip's actions (zeros where not yet taken).

        Returns:
            ``video (B, C, L, S, S)`` = ``mask·fg + (1 − mask)·bg`` in [-1, 1], ``fg`` (same shape,
            Tanh), ``mask (B, 1, L, S, S)`` in [0, 1], ``bg (B, C, S, S)`` (Tanh), ``code`` (the
            encoder's output, conditional only).
        """
        c = self.config
        signal = action_signal(actions, c.clip_len) if c.action_conditioned else None
        out: dict[str, Tensor] = {}
        if self.encoder is not None:
            code = self.encoder(context)
            out["code"] = code
            zmap = z[:, :, None, None].expand(-1, -1, *code.shape[-2:]).to(code.dtype)
            h = self.fg_first(torch.cat([code, zmap], 1)[:, :, None])
            bg = self.background(code)
        else:
            h = self.fg_first(z[:, :, None, None, None])
            bg = self.background(z[:, :, None, None])
        for layer in self.fg_up:
            h = layer(_with_signal(h, signal))
        h = _with_signal(h, signal)
        fg = torch.tanh(self.fg_head(h))
        mask = torch.sigmoid(self.mask_head(h))
        video = mask * fg + (1 - mask) * bg[:, :, None]
        return {"video": video, "fg": fg, "mask": mask, "bg": bg, **out}


class Discriminator(nn.Module):
    """Video ``(B, C, L, S, S)`` in [-1, 1] → 2 logits (real, fake): VConv 4×4×4 s2 p1 + LeakyReLU
    (0.2), BatchNorm(eps 1e-3) from the second layer, then a VConv over the remaining
    ``(L/2^levels, 4, 4)`` volume (reference: ``(2, 4, 4)``)."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        self.action_conditioned = c.action_conditioned
        sig = 2 * c.action_dim if c.action_conditioned else 0
        self.layers = nn.ModuleList()
        cin = c.channels
        for k in range(c.levels):
            cout = c.width * 2**k
            mods: list[nn.Module] = [nn.Conv3d(cin + sig, cout, 4, 2, 1)]
            if k > 0:
                mods.append(nn.BatchNorm3d(cout, eps=1e-3))
            mods.append(nn.LeakyReLU(0.2, inplace=True))
            self.layers.append(nn.Sequential(*mods))
            cin = cout
        self.out = nn.Conv3d(cin + sig, 2, (c.clip_len // 2**c.levels, 4, 4))

    def forward(self, video: Tensor, signal: Tensor | None) -> Tensor:
        """``signal``: ``action_signal`` ``(B, 2A, L)`` or None → logits ``(B, 2)``."""
        h = video
        for layer in self.layers:
            h = layer(_with_signal(h, signal))
        return self.out(_with_signal(h, signal)).flatten(1)


# --- the model ------------------------------------------------------------------------------------


class VGAN(LatentDynamics):
    """VGAN as action-conditioned latent dynamics (see the module docstring).

    State tensors (leading batch ``B``): ``frame`` ``(B, C, H, W)`` in [0, 1] (what ``decode``
    returns), ``context`` (the current clip's conditioning frame, same shape), ``z``
    ``(B, z_dim)``, ``clip_actions`` ``(B, L − 1, A)`` (the clip's actions, zero where not taken)
    and ``pos`` ``(B,)`` int64 (position of ``frame`` in the clip; ``L − 1`` = used up).
    """

    name: ClassVar[str] = "vgan"
    config_class: ClassVar[type[DynamicsConfig]] = VGANConfig
    config: VGANConfig

    def __init__(self, config: VGANConfig) -> None:
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.apply(init_weights)
        self.build_state_head()

    # --- helpers ----------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder | None:
        """The context-frame encoder (None for the unconditional model)."""
        return self.generator.encoder

    @property
    def feature_dim(self) -> int:
        """Pooled code size ``8·width · feature_pool²`` at 64 px (48 pixels for the unconditional model)."""
        c = self.config
        if self.encoder is None:
            return c.channels * 16
        return self.encoder.out_channels * c.feature_pool**2

    @property
    def noise_dim(self) -> int:
        """``z_dim``: one ``z`` per clip, taken from ``noise`` when a clip starts."""
        return self.config.z_dim

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam for the generator (with the encoder) and for the discriminator."""
        c = self.config
        return {
            "g": torch.optim.Adam(self._generator_side(), lr=c.lr, betas=c.betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=c.betas),
        }

    def _generator_side(self) -> list[nn.Parameter]:
        """The generator's parameters and the state head's (trained on the generator's loss)."""
        head = [] if self.state_head is None else list(self.state_head.parameters())
        return [*self.generator.parameters(), *head]

    def generate(self, context: Tensor | None, z: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """One clip from frames in [0, 1]: ``context (B, C, S, S)`` (None if unconditional),
        ``z (B, z_dim)``, ``actions (B, n ≤ L − 1, A)``; outputs as ``Generator.forward`` but
        ``video``, ``fg`` and ``bg`` in [0, 1] and ``video`` as ``(B, L, C, S, S)``."""
        out = self.generator(None if context is None else context * 2 - 1, z, actions)
        video = out["video"].transpose(1, 2).add(1).div(2)
        return {**out, "video": video, "fg": out["fg"].add(1).div(2), "bg": out["bg"].add(1).div(2)}

    # --- training ---------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Adversarial losses of one clip per sequence (see the module docstring).

        ``d`` = CE(D(real), real) + CE(D(G), fake); ``g`` = CE(D(G), real)
        + ``first_frame_l1``·L1(frame 0, context) + ``mask_l1``·mean(mask) + ``recon_l1``·L1(clip).
        """
        c = self.config
        frames, actions = batch["frames"], batch["actions"]
        self._check_frames(frames)
        b, t = frames.shape[:2]
        start, length = c.n_past - 1, c.clip_len
        if t < start + length:
            raise ValueError(f"frames: loss needs T >= n_past - 1 + clip_len = {start + length}, got {t}")
        self._check_actions(actions, (b, t, c.action_dim), "actions")
        real = frames_to_float(frames[:, start : start + length].to(self.device)).mul(2).sub(1)
        real = real.transpose(1, 2)  # (B, C, L, S, S)
        acts = actions[:, start : start + length - 1].to(self.device, torch.float32)
        context = real[:, :, 0] if c.conditional else None
        z = torch.randn(b, c.z_dim, device=real.device)
        out = self.generator(context, z, acts)
        fake = out["video"]
        signal = action_signal(acts, length) if c.action_conditioned else None
        logits_real = self.discriminator(real, signal)
        logits_fake = self.discriminator(fake, signal)
        real_lbl = torch.full((b,), _REAL, device=real.device)
        fake_lbl = torch.full((b,), _FAKE, device=real.device)
        d_loss = F.cross_entropy(logits_real, real_lbl) + F.cross_entropy(logits_fake, fake_lbl)
        adv = F.cross_entropy(logits_fake, real_lbl)
        l1_first = (fake[:, :, 0] - real[:, :, 0]).abs().mean()
        l1_all = (fake - real).abs().mean()
        mask_mean = out["mask"].mean()
        g_loss = adv + c.mask_l1 * mask_mean
        if c.conditional:
            g_loss = g_loss + c.first_frame_l1 * l1_first
        if c.recon_l1:
            g_loss = g_loss + c.recon_l1 * l1_all
        metrics = {
            "d_real": logits_real.detach().softmax(1)[:, _REAL].mean(),
            "d_fake": logits_fake.detach().softmax(1)[:, _REAL].mean(),
            "g_adv": adv.detach(),
            "l1_first": l1_first.detach(),
            "l1": l1_all.detach(),
            "mask": mask_mean.detach(),
        }
        g_loss = self.add_state_loss(batch, g_loss, metrics)
        return {"g": g_loss, "d": d_loss}, metrics

    # --- rollouts ---------------------------------------------------------------------------
    def initial(self, frames: Tensor, actions: Tensor) -> State:
        """Condition on the last context frame (earlier frames and ``actions`` are checked, unused).

        The state's clip is marked used up (``pos = L − 1``), so the first ``step`` starts a clip
        conditioned on that frame; ``decode`` gives the frame itself.
        """
        c = self.config
        self._check_frames(frames)
        b, t0 = frames.shape[:2]
        if b < 1 or t0 < 1:
            raise ValueError(f"frames: need B >= 1 and T0 >= 1 context frames, got {tuple(frames.shape)}")
        self._check_actions(actions, (b, t0 - 1, c.action_dim), "actions")
        x = frames_to_float(frames[:, -1].to(self.device))
        return State(
            frame=x,
            context=x,
            z=x.new_zeros(b, c.z_dim),
            clip_actions=x.new_zeros(b, c.clip_len - 1, c.action_dim),
            pos=torch.full((b,), c.clip_len - 1, dtype=torch.long, device=x.device),
        )

    def _new_z(
        self, b: int, like: Tensor, sample: bool, temperature: float, generator, noise: Tensor | None
    ) -> Tensor:
        """``z`` for clips that start now: ``temperature · noise`` (or a fresh draw), 0 if not sampling."""
        d = self.config.z_dim
        if noise is not None and tuple(noise.shape) != (b, d):
            raise ValueError(f"noise: expected shape {(b, d)}, got {tuple(noise.shape)}")
        if not sample:
            return like.new_zeros(b, d)
        if noise is None:
            noise = torch.randn((b, d), generator=generator, device=like.device, dtype=like.dtype)
        return temperature * noise.to(like.device, like.dtype)

    def _start_clips(self, state: State, z: Tensor) -> State:
        """Rows whose clip is used up start a new one from their current frame with ``z``."""
        c = self.config
        new = state["pos"] == c.clip_len - 1
        fresh = State(
            frame=state["frame"],
            context=state["frame"],
            z=z,
            clip_actions=torch.zeros_like(state["clip_actions"]),
            pos=torch.zeros_like(state["pos"]),
        )
        return state.where(new, fresh)

    def _advance(self, state: State, actions: Tensor) -> tuple[State, Tensor]:
        """Write ``actions (B, n, A)`` at each row's ``pos`` (all fit in the clip), generate the clip
        once and return the ``n`` next frames ``(B, n, C, H, W)`` in [0, 1]."""
        n = actions.shape[1]
        pos = state["pos"]
        idx = pos[:, None] + torch.arange(n, device=pos.device)  # (B, n)
        a_dim = actions.shape[2]
        clip_actions = state["clip_actions"].scatter(1, idx[..., None].expand(-1, -1, a_dim), actions)
        context = state["context"] if self.config.conditional else None
        video = self.generate(context, state["z"], clip_actions)["video"]  # (B, L, C, H, W)
        picked = video.gather(1, (idx + 1)[..., None, None, None].expand(-1, -1, *video.shape[2:]))
        picked = picked.clamp(0, 1)
        return state.replace(frame=picked[:, -1], clip_actions=clip_actions, pos=pos + n), picked

    def step(
        self,
        state: State,
        action: Tensor,
        *,
        sample: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> State:
        """Next frame of the clip generated for the actions so far (one generator call).

        Rows whose clip is used up first start a new one from their current frame, with
        ``z = temperature · noise`` (or a draw from ``generator``; ``z = 0`` if not ``sample``).
        Finiteness of ``action`` is checked only for CPU tensors (a GPU check syncs every step).
        """
        c = self.config
        b = len(state)
        self._check_actions(action, (b, c.action_dim), "action", finite=action.device.type == "cpu")
        frame = state["frame"]
        state = self._start_clips(state, self._new_z(b, frame, sample, temperature, generator, noise))
        state, _ = self._advance(state, action[:, None].to(frame.device, frame.dtype))
        return state

    def rollout(
        self,
        state: State,
        actions: Tensor,
        *,
        sample: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        decode: bool = True,
    ) -> tuple[State, Tensor]:
        """``H`` steps with one generator call per clip segment (``ceil(H / (L − 1))`` after
        ``initial``); frames equal those of stepping (eval mode) given the same ``noise``
        ``(B, H, z_dim)``. With a ``generator`` instead, ``z`` is drawn only where a segment starts.

        Returns the final state and frames ``(B, H, C, H, W)`` or features ``(B, H, F)``.
        """
        c = self.config
        b = len(state)
        horizon = actions.shape[1] if isinstance(actions, Tensor) and actions.dim() == 3 else -1
        on_cpu = isinstance(actions, Tensor) and actions.device.type == "cpu"
        self._check_actions(actions, (b, horizon, c.action_dim), "actions", finite=on_cpu)
        d = c.z_dim
        if noise is not None and tuple(noise.shape) != (b, horizon, d):
            raise ValueError(f"noise: expected shape {(b, horizon, d)}, got {tuple(noise.shape)}")
        frame = state["frame"]
        actions = actions.to(frame.device, frame.dtype)
        outs, t = [], 0
        while t < horizon:
            eps = None if noise is None else noise[:, t]
            state = self._start_clips(state, self._new_z(b, frame, sample, temperature, generator, eps))
            room = int((c.clip_len - 1 - state["pos"]).min())  # one host sync per segment
            n = min(horizon - t, room)
            state, frames = self._advance(state, actions[:, t : t + n])
            outs.append(frames)
            t += n
        video = torch.cat(outs, 1) if outs else frame.new_zeros(b, 0, *frame.shape[1:])
        if decode:
            return state, video
        return state, self._features(video.flatten(0, 1)).view(b, horizon, -1)

    def decode(self, state: State) -> Tensor:
        """The current frame ``(B, C, H, W)`` in [0, 1] (already generated: free)."""
        return state["frame"]

    def features(self, state: State) -> Tensor:
        """Pooled encoder code of the current frame ``(B, feature_dim)`` (one encoder call)."""
        return self._features(state["frame"])

    def _features(self, frames: Tensor) -> Tensor:
        """Frames ``(N, C, H, W)`` in [0, 1] → ``(N, feature_dim)`` float32."""
        if self.encoder is None:
            return F.adaptive_avg_pool2d(frames, 4).flatten(1).float()
        code = self.encoder(frames * 2 - 1)
        return F.adaptive_avg_pool2d(code, self.config.feature_pool).flatten(1).float()
