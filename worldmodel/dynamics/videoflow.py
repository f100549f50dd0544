"""VideoFlow (Kumar et al., ICLR 2020) as action-conditioned ``LatentDynamics``, after the
tensor2tensor ``NextFrameGlow`` (``next_frame_glow_bair_quant``).

Every frame ``x_t`` is mapped by one multi-scale Glow (``glow.py``) to latents
``z_t = [z_t^0, ..., z_t^{L-2}, z_t^top]``. The video likelihood factorises over time and levels::

    log p(x_t | x_<t) = log |det ∂z_t/∂x_t| + Σ_l log p(z_t^l | z_{t-n..t-1}^l, z_t^{>l}, a_{t-n..t-1})

Latent dynamics prior, per level: a causal 3-D residual network (``TemporalPrior``,
``videoflow_prior.py``; the reference ``temporal_latent_to_dist``) reads the stack of that
level's previous ``n = num_cond_latents`` latents, concatenated along channels with the mean of
the level's own (per-frame) prior tiled over time — at a split level that mean is a function of
the kept half, i.e. of the higher levels' latents of the same frame — and outputs
``(mean, log_scale)``; with ``latent_skip`` the mean is ``z_{t-1}^l + net(...)``. Frames with
fewer than ``n`` past latents use the per-frame priors (the split priors ``p(z^l | x1^l)``, and a
learned top prior), exactly as in the reference. Hyper-parameters and presets:
``videoflow_config.py``.

Likelihood: frames are quantised to ``n_bits`` (``k = floor(x / 2^(8 - n_bits))``), dequantised
with uniform noise, ``x = (k + u) / 2^n_bits - 0.5``, and the objective carries
``-D · n_bits · log 2`` (``D = C·H·W``); bits per dimension ``= -log p / (D log 2)`` over the
target frames only (context frames give latents, not loss), as in the paper. A fresh model after
its data-dependent init scores about 8 bits per dimension at ``n_bits = 8``.

Action conditioning (our extension; VideoFlow is action-free): the prior of ``z_t`` at every level
also reads the actions ``a_{t-n..t-1}``, the action applied at each history frame broadcast over
space as ``action_dim`` extra input channels of that time slice (the last slice carries
``a_{t-1}``, the action that moves ``x_{t-1}`` to ``x_t``). The per-frame priors stay
action-free. ``action_conditioned=False`` gives the action-free model; ``temporal_prior=False``
gives a per-frame Glow (the baseline the temporal prior must beat).

Rollouts: ``initial`` encodes the context frames at their bin centres (``u = 1/2``, no noise)
and keeps each level's last ``n`` latents; ``step`` samples the top latent from its prior, then
inverts the flow level by level, sampling each split's latent from its prior given the kept half
(``temperature`` multiplies every prior standard deviation; 0 or ``sample=False`` gives the
means), and appends to the history the latents of the frame it shows (see below). ``noise``
fills the standard normals in sampling order: first the top latent (``C·H·W`` row-major), then
the split levels from the coarsest to the finest, each ``C·H·W`` row-major; ``noise_dim`` is the
frame size ``3·H·W``.

Deviations from the reference, deliberate:

- Dequantisation divides by ``2^n_bits`` both in the data and in the ``-D n_bits log 2`` term
  (the reference divides the data by 255 but adds ``U(0, 1/256)``); the bound is then exact.
- The per-frame top prior is a learned mean and log-scale per latent position (the reference's
  zero-initialised conv on zeros, with edge bias, varies only at the border); its mean also
  enters the top level's temporal prior, as the split priors' means do at the other levels (the
  reference feeds nothing there), which lets the loss train it.
- ``decode`` maps the flow's output ``y`` to ``((y + 0.5)·2^n - 0.5) / (2^n - 1)`` clipped to
  [0, 1] (bin centres → the original pixel values) without rounding to the pixel grid, so that
  batched and single rollouts agree to float precision.
- Data-dependent init runs on the first training batch (one extra no-grad forward), not on a
  separate batch of 128; under ``torch.distributed`` the initialised weights are broadcast from
  rank 0.
- The likelihood is computed in float32 even under the trainer's bf16 autocast: a sum of
  thousands of log-densities and log-determinants, and a flow that must stay invertible, do not
  survive bf16 (Glow ports report NaNs and failed inversions at low precision).
- The latent prior's 3-D convolutions mark only the spatial border in their edge-indicator
  channel, not the causal time pad (why: ``videoflow_prior.py``).
- Open-loop rollouts feed back the code of the frame they show: after sampling and inverting,
  ``step`` clips the frame to [0, 1] (as ``decode`` always did) and re-encodes it, and those
  latents, not the raw samples, enter the history the temporal prior reads next. Where the frame
  needs no clipping the two are the same up to float error (the flow is invertible); where a
  sample falls outside the images the flow was trained on, it is pulled back onto one. Feeding
  back raw samples, the tiny model's latents compounded in open loop until they were NaN after
  5-13 steps at temperature 0.5-1 (256 rows, random actions), which stopped every dream-trained
  agent; re-encoded, they stay in range (28 steps: |z| below 40 at temperature 1). The training
  likelihood is unchanged; a step costs one more encoder pass. Rollouts that train (the state
  head's) pass gradients straight through the re-encoding, to the samples, as before: through
  the round trip itself the tiny model's training diverged within 150 steps.
- The linear learning-rate warm-up lives in the optimiser (``WarmupAdam``; the trainer needs no
  scheduler); the logged ``lr`` is the base rate.

State head (our extension, off by default; ``state_head=True``): an end-effector and object-
position head trained with the model on its own open-loop rollouts along the recorded actions
(``LatentDynamics.state_loss``, added to this model's loss in bits per dimension), so the latent
keeps the arm and the objects that the task is about; see ``dynamics/base.py``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.data.batch import Batch, frames_to_float
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, Sampling, State
from worldmodel.dynamics.glow import Glow, gaussian_log_prob
from worldmodel.dynamics.videoflow_config import VideoFlowConfig
from worldmodel.dynamics.videoflow_prior import TemporalPrior, allowed_dilations

_LN2 = math.log(2.0)


class WarmupAdam(torch.optim.Adam):
    """Adam whose step ``s`` (1-based) uses ``lr · min(1, s / warmup_steps)`` (t2t ``linear_warmup``).

    The counter lives in each param group (``warmup_step``), so it is saved and restored with the
    optimiser state; ``group["lr"]`` stays the base rate (trainers may override it).
    """

    def __init__(self, params, lr: float, warmup_steps: int, **kw: Any) -> None:
        super().__init__(params, lr=lr, **kw)
        for group in self.param_groups:
            group.setdefault("warmup_steps", warmup_steps)
            group.setdefault("warmup_step", 0)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["warmup_step"] += 1
            if group["warmup_steps"] > 0:
                group["lr"] = group["lr"] * min(1.0, group["warmup_step"] / group["warmup_steps"])
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base, strict=True):
                group["lr"] = lr


class VideoFlow(LatentDynamics):
    """VideoFlow as action-conditioned latent dynamics (see the module docstring for the maths).

    State tensors (leading batch ``B``): ``z0 .. z{L-1}`` the last ``n`` latents of each level
    ``(B, n, C_l, H_l, W_l)`` (oldest first; ``z{L-1}`` is the top), ``actions`` ``(B, n-1, A)``
    the actions between those frames, ``count`` ``(B,)`` how many of the ``n`` history slots are
    real frames (front slots are zeros before that), and ``frame`` ``(B, C, H, W)``.
    """

    name: ClassVar[str] = "videoflow"
    config_class: ClassVar[type[DynamicsConfig]] = VideoFlowConfig
    config: VideoFlowConfig

    def __init__(self, config: VideoFlowConfig) -> None:
        super().__init__(config)
        c = config
        self.glow = Glow(
            c.channels,
            c.levels,
            c.depth,
            c.coupling_width,
            additive=c.coupling == "additive",
            activation=c.activation,
            checkpointing=c.checkpointing,
        )
        self.shapes = self.glow.latent_shapes(c.channels, c.image_size)
        top_c, top_h, top_w = self.shapes[-1]
        # Per-frame top prior: a learned mean and log-scale per position (N(0, I) at init).
        self.top_prior = nn.Parameter(torch.zeros(2, top_c, top_h, top_w))
        a_in = c.action_dim if c.action_conditioned else 0
        if c.temporal_prior:
            self.temporal = nn.ModuleList(
                TemporalPrior(
                    2 * ch + a_in,
                    ch,
                    c.latent_width,
                    c.latent_depth,
                    c.num_cond_latents,
                    allowed_dilations(tuple(c.latent_dilation_rates), w),
                    c.latent_activation,
                    c.checkpointing,
                )
                for ch, _, w in self.shapes
            )
        self.register_buffer("initialized", torch.tensor(False))
        self.build_state_head()

    # --- properties ---------------------------------------------------------------------------
    @property
    def noise_dim(self) -> int:
        """``C·H·W``: one standard normal per latent dimension of a frame (order: module docstring)."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def feature_dim(self) -> int:
        """``4 · C_top``: the top latent average-pooled to a 2×2 grid."""
        return 4 * self.shapes[-1][0]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam (the preset's betas and epsilon) with the linear warm-up of ``warmup_steps``."""
        c = self.config
        return {
            "model": WarmupAdam(
                self.parameters(), lr=c.lr, warmup_steps=c.warmup_steps, betas=tuple(c.betas), eps=c.eps
            )
        }

    # --- input checks -------------------------------------------------------------------------
    # --- flow <-> pixels ----------------------------------------------------------------------
    def _preprocess(self, frames: Tensor, noise: bool, generator: torch.Generator | None = None) -> Tensor:
        """uint8 ``(..., H, W, 3)`` → ``(k + u) / 2^n - 0.5``, ``(..., 3, H, W)``; ``u ~ U(0,1)`` or 1/2."""
        bins = 2**self.config.n_bits
        k = torch.div(frames, 2 ** (8 - self.config.n_bits), rounding_mode="floor").movedim(-1, -3).float()
        if noise:
            u = torch.rand(k.shape, generator=generator, device=k.device)
        else:
            u = torch.full_like(k, 0.5)
        return (k + u) / bins - 0.5

    def _from_frame(self, frame: Tensor) -> Tensor:
        """Float frame in [0, 1] → flow input (the inverse of ``_to_frame`` on [0, 1])."""
        bins = 2**self.config.n_bits
        return (frame * (bins - 1) + 0.5) / bins - 0.5

    def _to_frame(self, y: Tensor) -> Tensor:
        """Flow output → float frame in [0, 1] (bin centres map to the original pixel values)."""
        bins = 2**self.config.n_bits
        y = torch.nan_to_num(y, nan=0.5, posinf=0.5, neginf=-0.5)
        return (((y + 0.5) * bins - 0.5) / (bins - 1)).clamp(0.0, 1.0)

    # --- priors -------------------------------------------------------------------------------
    def _marginal(self, level: int, kept: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
        """Per-frame prior of ``z^level``: split prior of the kept half, or the learned top prior."""
        if level < len(self.shapes) - 1:
            return self.glow.splits[level].prior(kept)
        mean, log_scale = self.top_prior
        return mean.expand(n, *mean.shape), log_scale.expand(n, *log_scale.shape)

    def _conditional(
        self, level: int, history: Tensor, actions: Tensor, marginal_mean: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Temporal prior of ``z_t^level`` from ``history (N, n, C, H, W)``, ``actions (N, n, A)``
        (the action at each history frame) and the per-frame prior mean ``(N, C, H, W)``."""
        parts = [history, marginal_mean.unsqueeze(1).expand_as(history)]
        if self.config.action_conditioned:
            h, w = history.shape[-2:]
            parts.append(actions[..., None, None].expand(*actions.shape, h, w).to(history.dtype))
        inp = torch.cat(parts, dim=2).transpose(1, 2)  # (N, C_in, n, H, W)
        mean, log_scale = self.temporal[level](inp)
        if self.config.latent_skip:
            mean = mean + history[:, -1]
        return mean, log_scale

    def _prior(
        self,
        level: int,
        n: int,
        kept: Tensor | None,
        history: Tensor | None,
        actions: Tensor | None,
        use_temporal: Tensor | bool,
    ) -> tuple[Tensor, Tensor]:
        """Prior of ``z^level`` for ``n`` frames: temporal where ``use_temporal`` (``(n,)`` bool or a
        bool for all), per-frame elsewhere."""
        mean, log_scale = self._marginal(level, kept, n)
        if not self.config.temporal_prior or use_temporal is False:
            return mean, log_scale
        c_mean, c_log_scale = self._conditional(level, history, actions, mean)
        if use_temporal is True:
            return c_mean, c_log_scale
        m = use_temporal.view(-1, 1, 1, 1)
        return torch.where(m, c_mean, mean), torch.where(m, c_log_scale, log_scale)

    # --- likelihood ---------------------------------------------------------------------------
    def _log_likelihood(
        self, frames: Tensor, actions: Tensor, first: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``log p(x_t | x_<t, a_<t)`` in nats, dequantised, for frames ``t >= first``: ``(B, T - first)``.

        Always in float32: autocast is switched off here (see the module docstring)."""
        with torch.autocast(self.device.type, enabled=False):
            return self._log_likelihood_fp32(frames, actions, first, generator)

    def _log_likelihood_fp32(
        self, frames: Tensor, actions: Tensor, first: int, generator: torch.Generator | None
    ) -> Tensor:
        c = self.config
        b, t = frames.shape[:2]
        x = self._preprocess(frames.to(self.device), noise=True, generator=generator)
        latents, kept, logdet = self.glow.encode(x.flatten(0, 1))
        targets = list(range(first, t))
        tgt = torch.tensor(targets, device=x.device)
        n = c.num_cond_latents
        cond = [i for i in targets if i >= n] if c.temporal_prior else []
        marg = [i for i in targets if i < n or not c.temporal_prior]
        acts = actions.to(self.device, torch.float32)

        logp = logdet.view(b, t)[:, first:]
        for level, z in enumerate(latents):
            z = z.view(b, t, *z.shape[1:])
            k = kept[level].view(b, t, *kept[level].shape[1:]) if level < len(kept) else None
            lp = z.new_zeros(b, t)
            for group, temporal in ((cond, True), (marg, False)):
                if not group:
                    continue
                idx = torch.tensor(group, device=x.device)
                zg = z[:, idx].flatten(0, 1)
                kg = k[:, idx].flatten(0, 1) if k is not None else None
                hist = ah = None
                if temporal:
                    hist = torch.stack([z[:, i - n : i] for i in group], 1).flatten(0, 1)
                    ah = torch.stack([acts[:, i - n : i] for i in group], 1).flatten(0, 1)
                mean, log_scale = self._prior(level, zg.shape[0], kg, hist, ah, temporal)
                lp[:, idx] = gaussian_log_prob(zg, mean, log_scale).view(b, len(group))
            logp = logp + lp[:, tgt]
        dims = c.channels * c.image_size**2
        return logp - dims * c.n_bits * _LN2

    def _bits(self, log_likelihood: Tensor) -> Tensor:
        c = self.config
        return -log_likelihood / (c.channels * c.image_size**2 * _LN2)

    @torch.no_grad()
    def _initialize(self, frames: Tensor, actions: Tensor) -> None:
        """Data-dependent init of every actnorm: one forward on the first training batch."""
        self._log_likelihood(frames, actions, min(self.config.n_past, frames.shape[1] - 1))
        self.initialized.fill_(True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in [*self.parameters(), *self.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean bits per dimension of the target frames ``x_{n_past..T-1}`` given the past.

        The first call in training mode runs the data-dependent init first.
        """
        c = self.config
        frames, actions = batch["frames"], batch["actions"]
        self._check_frames(frames)
        b, t = frames.shape[:2]
        if t <= c.n_past:
            raise ValueError(f"frames: loss needs T > n_past = {c.n_past} frames, got {t}")
        self._check_actions(actions, (b, t, c.action_dim), "actions")
        if self.training and not bool(self.initialized):
            self._initialize(frames, actions)
        bpd = self._bits(self._log_likelihood(frames, actions, c.n_past)).mean()
        metrics = {"bpd": bpd.detach()}
        return self.add_state_loss(batch, bpd, metrics), metrics

    @torch.no_grad()
    def bits_per_dim(
        self, frames: Tensor, actions: Tensor, n_past: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Bits per dimension of each frame after the context: ``(B, T - n_past)``.

        Args:
            frames: uint8 ``(B, T, H, W, 3)``; the first ``n_past`` are context (not scored).
            actions: float32 ``(B, T, A)`` (``a_t`` moves ``x_t`` to ``x_{t+1}``).
            n_past: context frames, ``1 <= n_past < T``.
            generator: seeds the dequantisation noise.
        """
        c = self.config
        self._check_frames(frames)
        b, t = frames.shape[:2]
        if not 1 <= n_past < t:
            raise ValueError(f"n_past: need 1 <= n_past < T = {t}, got {n_past}")
        self._check_actions(actions, (b, t, c.action_dim), "actions")
        return self._bits(self._log_likelihood(frames, actions, n_past, generator=generator))

    # --- rollouts -----------------------------------------------------------------------------
    def initial(self, frames: Tensor, actions: Tensor) -> State:
        """Encode the context frames (at their bin centres) and keep each level's last ``n`` latents.

        ``decode`` of the result is the last context frame; with fewer than ``n`` context frames
        the first steps use the per-frame priors, as the reference does for early frames.
        """
        c = self.config
        b, t0 = self._check_context(frames, actions)
        n = c.num_cond_latents
        frames = frames.to(self.device)[:, -n:]
        keep = frames.shape[1]
        x = self._preprocess(frames, noise=False)
        latents, _, _ = self.glow.encode(x.flatten(0, 1))
        out: dict[str, Tensor] = {}
        for level, z in enumerate(latents):
            z = z.view(b, keep, *z.shape[1:])
            out[f"z{level}"] = F.pad(z, (0, 0, 0, 0, 0, 0, n - keep, 0))  # zeros in front
        acts = actions.to(self.device, torch.float32)[:, max(0, t0 - n) :]
        out["actions"] = F.pad(acts, (0, 0, n - 1 - acts.shape[1], 0))
        out["count"] = torch.full((b,), keep, dtype=torch.long, device=self.device)
        out["frame"] = frames_to_float(frames[:, -1])
        return State(out)

    def _eps(self, noise: Tensor | None, b: int, generator: torch.Generator | None) -> list[Tensor]:
        """Standard normals for one step, one tensor per level in sampling order (top first)."""
        shapes = [self.shapes[-1], *reversed(self.shapes[:-1])]
        if noise is None:
            flat = torch.randn(b, self.noise_dim, generator=generator, device=self.device)
        else:
            if tuple(noise.shape) != (b, self.noise_dim):
                raise ValueError(f"noise: expected shape {(b, self.noise_dim)}, got {tuple(noise.shape)}")
            flat = noise.to(self.device, torch.float32)
        parts = flat.split([math.prod(s) for s in shapes], dim=1)
        return [p.reshape(b, *s) for p, s in zip(parts, shapes, strict=True)]

    def _step(self, state: State, action: Tensor, opts: Sampling) -> State:
        """Sample the next frame's latents from the priors (top first) and invert the flow.

        ``z = mean + temperature · exp(log_scale) · eps`` at every level (``sample=False``: the
        mean).
        """
        c = self.config
        b = len(state)
        sample, temperature, generator, noise = opts
        n, top = c.num_cond_latents, len(self.shapes) - 1
        acts = torch.cat([state["actions"], action.to(self.device, torch.float32)[:, None]], 1)
        use_temporal = state["count"] >= n
        eps = self._eps(noise, b, generator) if sample else None
        scale = float(temperature) if sample else 0.0

        samples: dict[int, Tensor] = {}

        def draw(level: int, kept: Tensor | None, order: int) -> Tensor:
            mean, log_scale = self._prior(level, b, kept, state[f"z{level}"], acts, use_temporal)
            samples[level] = mean if eps is None else mean + scale * torch.exp(log_scale) * eps[order]
            return samples[level]

        z_top = draw(top, None, 0)
        frame = self._to_frame(self.glow.decode(z_top, lambda level, kept: draw(level, kept, top - level)))
        latents = [samples[level] for level in range(top + 1)]
        if c.reencode:  # the history holds the code of the frame shown (module docstring)
            with torch.no_grad():
                codes, _, _ = self.glow.encode(self._from_frame(frame))
            if torch.is_grad_enabled():  # the code's value, the sample's gradient (straight through)
                latents = [z + (code - z).detach() for z, code in zip(latents, codes, strict=True)]
            else:
                latents = codes
        history = {f"z{i}": torch.cat([state[f"z{i}"][:, 1:], z[:, None]], 1) for i, z in enumerate(latents)}
        return state.replace(
            **history,
            actions=acts[:, 1:],
            count=(state["count"] + 1).clamp(max=n),
            frame=frame,
        )

    def decode(self, state: State) -> Tensor:
        """The frame the state stands for, ``(B, C, H, W)`` in [0, 1] (already inverted: free)."""
        return state["frame"]

    def features(self, state: State) -> Tensor:
        """The current top latent average-pooled to 2×2, flattened: ``(B, 4·C_top)``.

        The top latent is the coarsest, most global part of the frame's code; the 2×2 grid keeps
        where things are (left/right, top/bottom) at a size policies and heads can use.
        """
        z = state[f"z{len(self.shapes) - 1}"][:, -1]
        return F.adaptive_avg_pool2d(z, 2).flatten(1).float()
