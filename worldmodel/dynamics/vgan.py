"""VGAN (Vondrick, Pirsiavash & Torralba, NIPS 2016, "Generating Videos with Scene Dynamics") as an
action-conditioned ``LatentDynamics``.

The networks (the two-stream generator, its context-frame encoder and the discriminator, with
our action conditioning and causality) are in ``vgan_nets.py``, the hyper-parameters and presets
in ``vgan_config.py``; this module wraps them as a model: the losses, rollouts and features.

Two modes (``conditional``):

- unconditional (``main.lua``): both streams start from ``z ~ N(0, I)`` (100-d); the mask gets an
  L1 sparsity penalty (``mask_l1 = 0.1``). Preset ``paper-unconditional``.
- conditional (``main_conditional.lua``, the world model; presets ``paper`` and ``tiny``): an image
  encoder (2-D convolutions, no BatchNorm on the first) maps the context frame ``x_0`` to a
  ``8·width × 4 × 4`` code that starts both streams; the generator loss adds
  ``first_frame_l1 · |Ĝ(x_0)[frame 0] − x_0|`` (weight 10) to the adversarial term, the
  discriminator is twice as wide (``width`` 128 instead of 64) and there is no mask penalty.

Adam lr 2e-4, betas (0.5, 0.999) for both networks.

Our extension to the loss (those to the networks, for the actions, causality and the conditional
model's noise, are in ``vgan_nets.py``):

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

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.data.batch import Batch, frames_to_float
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, Sampling, State
from worldmodel.dynamics.vgan_config import VGANConfig
from worldmodel.dynamics.vgan_nets import Discriminator, Encoder, Generator, action_signal, init_weights

_REAL, _FAKE = 0, 1


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
        b, _ = self._check_context(frames, actions)
        x = frames_to_float(frames[:, -1].to(self.device))
        return State(
            frame=x,
            context=x,
            z=x.new_zeros(b, c.z_dim),
            clip_actions=x.new_zeros(b, c.clip_len - 1, c.action_dim),
            pos=torch.full((b,), c.clip_len - 1, dtype=torch.long, device=x.device),
        )

    def _new_z(self, b: int, like: Tensor, opts: Sampling) -> Tensor:
        """``z`` for clips that start now: ``temperature · noise`` (or a fresh draw), 0 if not sampling."""
        d = self.config.z_dim
        sample, temperature, generator, noise = opts
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

    def _step(self, state: State, action: Tensor, opts: Sampling) -> State:
        """Next frame of the clip generated for the actions so far (one generator call).

        Rows whose clip is used up first start a new one from their current frame, with
        ``z = temperature · noise`` (or a draw from ``generator``; ``z = 0`` if not ``sample``).
        """
        frame = state["frame"]
        state = self._start_clips(state, self._new_z(len(state), frame, opts))
        state, _ = self._advance(state, action[:, None].to(frame.device, frame.dtype))
        return state

    def _rollout(self, state: State, actions: Tensor, opts: Sampling, decode: bool) -> tuple[State, Tensor]:
        """``H`` steps with one generator call per clip segment (``ceil(H / (L − 1))`` after
        ``initial``); frames equal those of stepping (eval mode) given the same ``noise``
        ``(B, H, z_dim)``. With a ``generator`` instead, ``z`` is drawn only where a segment starts.
        """
        c = self.config
        b = len(state)
        horizon = actions.shape[1] if isinstance(actions, Tensor) and actions.dim() == 3 else -1
        on_cpu = isinstance(actions, Tensor) and actions.device.type == "cpu"
        self._check_actions(actions, (b, horizon, c.action_dim), "actions", finite=on_cpu)
        d = c.z_dim
        if opts.noise is not None and tuple(opts.noise.shape) != (b, horizon, d):
            raise ValueError(f"noise: expected shape {(b, horizon, d)}, got {tuple(opts.noise.shape)}")
        frame = state["frame"]
        actions = actions.to(frame.device, frame.dtype)
        outs, t = [], 0
        while t < horizon:
            state = self._start_clips(state, self._new_z(b, frame, opts.at(t)))
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
