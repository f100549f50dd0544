"""SVG-LP / SVG-FP (Denton & Fergus, ICML 2018) and a deterministic ablation, as ``LatentDynamics``.

One class, ``SVG``, three registry names: ``svg-lp`` (learned prior), ``svg-fp`` (fixed N(0, I)
prior) and ``svg-det`` (no latent z: the predictor LSTM alone). Networks follow the reference
code (``edenton/svg``): ``vgg64`` / ``dcgan64`` encoder and decoder with multi-scale skips, the
frame-predictor ``lstm`` and the posterior / prior ``gaussian_lstm``; see ``svg_nets``.

Per step ``i`` (``x`` frames, ``h = enc(x)``, ``a_{i-1}`` drives ``x_{i-1}`` → ``x_i``)::

    z_i   ~ q(z | h_{1..i})             posterior (training and context frames)
    z_i   ~ p(z | h_{<i}, a_{<i})       learned prior (rollouts; svg-fp: N(0, I))
    g_i   = predictor([h_{i-1}, z_i, a_{i-1}])
    x̂_i   = dec(g_i, skips)

Action conditioning (our extension; the reference is action-free). ``a_{i-1}`` is appended to
the inputs of the **predictor** and the **learned prior**, not the posterior nor the decoder.
The predictor needs it to move the scene deterministically; the prior needs it so that
``p(z_i | x_{<i}, a_{<i})`` can match a posterior that saw ``x_i`` (which already shows the
action's effect) — without it the KL term would push the action's effect out of z only where
the predictor already explains it, and rollouts would draw z blind to the chosen action. The
posterior sees the target frame, so the action adds nothing there. ``action_repeat`` tiles the
action vector (t2t ``NextFrameEmily`` used 40) so its 4 dims are not drowned by ``g_dim``-wide
``h`` at initialisation. ``action_conditioned=False`` gives the action-free reference model.

Deviations from the reference, deliberate:

- Skip fix (edenton/svg issue #1): the reference refreshes the decoder's skips while
  ``i < n_past`` and so, after the context, decodes with the skips of frame ``n_past - 2``;
  here they come from the last context frame ``x_{n_past-1}`` (``<=``), as the paper describes.
  Inside the context window skips still come from ``x_{i-1}`` as in the reference.
  ``last_frame_skip=True`` refreshes them from every input frame (own predictions at test time).
- BatchNorm runs in eval mode (running statistics) at test time (``model.eval()``); the
  reference generation script kept the encoder/decoder in train mode (batch statistics, issue
  #15), which makes a sample depend on the rest of the batch. Training encodes all ``T`` frames
  in one batched call and decodes all predictions in one call, so BN statistics are over
  ``B·T`` frames instead of ``B`` per call.
- ``initial`` uses the posterior *mean* on context frames by default (deterministic; the
  reference's "approx posterior" rollout), ``sample=True`` draws it as the reference does.
- One Adam over all parameters instead of one per module (identical updates: Adam is
  per-parameter and all five reference optimisers share lr and betas).

State head (our extension, off by default; ``state_head=True``): an end-effector and object-
position head trained with the model on its own open-loop rollouts along the recorded actions
(``LatentDynamics.state_loss``, added to this model's loss), so the latent keeps the arm and the
objects that the task is about; see ``dynamics/base.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from worldmodel.choices import check_choice
from worldmodel.data.batch import Batch, frames_to_float
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, Sampling, State, param_dtype
from worldmodel.dynamics.inference import SkipSplitDecoder
from worldmodel.dynamics.svg_nets import (
    ENCODERS,
    LSTM,
    SUPPORTED_SIZES,
    GaussianLSTM,
    init_weights,
    kl_gaussians,
    kl_standard_normal,
)

_PRIORS = ("learned", "fixed", "none")


@dataclasses.dataclass
class SVGConfig(DynamicsConfig):
    """SVG hyper-parameters. Defaults are the paper's BAIR settings (the ``paper`` preset)."""

    encoder: str = "vgg64"
    """Encoder/decoder family: ``"vgg64"`` (BAIR) or ``"dcgan64"`` (SM-MNIST)."""
    nf: int = 64
    """Width of the first reference stage (64 in the paper); stage k has ``nf * 2**k`` channels."""
    g_dim: int = 128
    """Size of the frame code ``h`` and of the predictor output ``g`` (the ``features``)."""
    z_dim: int = 64
    """Size of the latent ``z`` (unused when ``prior="none"``)."""
    rnn_size: int = 256
    """Hidden size of every LSTM."""
    predictor_layers: int = 2
    """Stacked LSTM cells in the frame predictor."""
    posterior_layers: int = 1
    """Stacked LSTM cells in the posterior ``q(z_t | x_{1:t})``."""
    prior_layers: int = 1
    """Stacked LSTM cells in the learned prior ``p(z_t | x_{1:t-1}, a_{1:t-1})``."""
    beta: float = 1e-4
    """Weight of the KL term (KL summed over z and time, divided by the batch size)."""
    prior: str = "learned"
    """``"learned"`` (SVG-LP), ``"fixed"`` (SVG-FP, N(0, I)) or ``"none"`` (deterministic)."""
    last_frame_skip: bool = False
    """Refresh decoder skips from every input frame instead of keeping the last context frame's."""
    action_conditioned: bool = True
    """Feed ``a_{t-1}`` to the predictor and the prior (our extension; False = reference SVG)."""
    action_repeat: int = 1
    """Times the action vector is tiled before it is concatenated (t2t used 40)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Fast CPU model for tests, the trainer's fixtures and the quick demo (16×16 frames).
        "tiny": {
            "image_size": 16,
            "encoder": "dcgan64",
            "nf": 8,
            "g_dim": 32,
            "z_dim": 8,
            "rnn_size": 64,
            "predictor_layers": 1,
            "posterior_layers": 1,
            "prior_layers": 1,
            "beta": 1e-4,
            "action_repeat": 4,
            "n_past": 2,
            "n_future": 5,
            "lr": 2e-3,
            "batch_size": 16,
        },
        # The BAIR settings of the paper's README command (vgg, g 128, z 64, beta 1e-4, 2+10).
        "paper": {
            "image_size": 64,
            "encoder": "vgg64",
            "nf": 64,
            "g_dim": 128,
            "z_dim": 64,
            "rnn_size": 256,
            "predictor_layers": 2,
            "posterior_layers": 1,
            "prior_layers": 1,
            "beta": 1e-4,
            "n_past": 2,
            "n_future": 10,
            "lr": 2e-3,
            "betas": (0.9, 0.999),
            "batch_size": 100,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("encoder", self.encoder, ENCODERS)
        check_choice("prior", self.prior, _PRIORS)
        if self.image_size not in SUPPORTED_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_SIZES} for SVG, got {self.image_size}")
        self._check_positive(
            "nf", "g_dim", "z_dim", "rnn_size", "predictor_layers", "action_repeat", "n_past"
        )
        if self.prior != "none" and min(self.posterior_layers, self.prior_layers) < 1:
            raise ValueError("posterior_layers and prior_layers must be >= 1")


class SVG(LatentDynamics):
    """SVG as action-conditioned latent dynamics (see the module docstring for the maths).

    State tensors (all with leading batch ``B``): ``h`` (code of the last frame, the next step's
    input), ``g`` (predictor output, the ``features``), ``frame`` ``(B, C, H, W)`` (what ``decode``
    returns), ``skip0..skipK`` (decoder skips; an inference copy with a split decoder keeps
    ``dterm0..dtermK`` instead, the skips' share of each decoder stage), ``pred_h``/``pred_c``
    ``(B, layers, rnn)`` and, for the learned prior, ``prior_h``/``prior_c``.
    """

    name: ClassVar[str] = "svg-lp"
    config_class: ClassVar[type[DynamicsConfig]] = SVGConfig
    config: SVGConfig

    def __init__(self, config: SVGConfig) -> None:
        super().__init__(config)
        c = config
        enc_cls, dec_cls = ENCODERS[c.encoder]
        self.encoder = enc_cls(c.g_dim, c.channels, c.image_size, c.nf)
        self.decoder = dec_cls(c.g_dim, c.channels, c.image_size, c.nf)
        a_in = c.action_dim * c.action_repeat if c.action_conditioned else 0
        self.stochastic = c.prior != "none"
        z_in = c.z_dim if self.stochastic else 0
        self.predictor = LSTM(c.g_dim + z_in + a_in, c.g_dim, c.rnn_size, c.predictor_layers)
        if self.stochastic:
            self.posterior = GaussianLSTM(c.g_dim, c.z_dim, c.rnn_size, c.posterior_layers)
        if c.prior == "learned":
            self.prior_net = GaussianLSTM(c.g_dim + a_in, c.z_dim, c.rnn_size, c.prior_layers)
        self.apply(init_weights)
        self.build_state_head()

    # --- helpers ----------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """``g_dim``: ``features`` is the predictor output ``g``."""
        return self.config.g_dim

    def _act(self, actions: Tensor) -> Tensor:
        """Actions ``(..., A)`` → the predictor/prior input slice (tiled; empty if unconditioned)."""
        c = self.config
        if not c.action_conditioned:
            return actions[..., :0]
        return (
            actions.repeat(*([1] * (actions.dim() - 1)), c.action_repeat) if c.action_repeat > 1 else actions
        )

    def _encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Frames ``(B, T, C, H, W)`` → ``h (B, T, g)``, skips ``[(B, T, Ck, Hk, Wk)]`` in one call."""
        b, t = x.shape[:2]
        h, skips = self._encode_frames(x.flatten(0, 1))
        return h.view(b, t, -1), [s.view(b, t, *s.shape[1:]) for s in skips]

    def _encode_frames(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The encoder on ``(N, C, H, W)``, in the encoder's dtype; ``h`` in the recurrent nets'.

        The casts matter only for a bf16 inference copy (``inference_half_modules``), where the
        convolutions run in bf16 and the LSTMs keep float32 state; otherwise they are no-ops.
        """
        h, skips = self.encoder(x.to(param_dtype(self.encoder)))
        return h.to(param_dtype(self.predictor)), skips

    def prepare_for_inference(self) -> None:
        """Split the decoder at its skip connections (``inference.SkipSplitDecoder``): ``initial``
        then stores each stage's skip response (``dterm{k}``) and ``step`` reuses it. Idempotent:
        a copy of a copy keeps its split decoder."""
        if not isinstance(self.decoder, SkipSplitDecoder):
            self.decoder = SkipSplitDecoder(self.decoder)

    def _skip_state(self, skips: list[Tensor]) -> dict[str, Tensor]:
        """State entries for the decoder's skips: ``skip{k}``, or ``dterm{k}`` when it is split."""
        if not isinstance(self.decoder, SkipSplitDecoder):
            return {f"skip{k}": s for k, s in enumerate(skips)}
        terms = self.decoder.skip_terms([s.to(param_dtype(self.decoder)) for s in skips])
        return {f"dterm{k}": t for k, t in enumerate(terms)}

    def _decode(self, g: Tensor, state: State) -> Tensor:
        """The decoder on ``g`` with the skips (or their terms) held in ``state``."""
        g = g.to(param_dtype(self.decoder))
        if isinstance(self.decoder, SkipSplitDecoder):
            n = len(self.decoder.firsts)
            if f"dterm{n - 1}" not in state:
                raise ValueError(
                    "state: made by a model without a split decoder (no dterm*); use its own model"
                )
            return self.decoder.forward_terms(g, [state[f"dterm{k}"] for k in range(n)])
        if "skip0" not in state:
            raise ValueError(
                "state: made by an inference copy (dterm* instead of skip*); step it with the copy"
            )
        return self.decoder(g, [state[f"skip{k}"] for k in range(self._num_skips(state))])

    def inference_half_modules(self) -> list[nn.Module]:
        """The convolutional encoder and decoder (almost all of a step's work) may run in bf16."""
        return [self.encoder, self.decoder]

    def skip_index(self, steps: int) -> list[int]:
        """The frame whose skips decode each step ``i = 1..steps`` in training: ``i - 1``, frozen at
        ``n_past - 1`` (fix), or always ``i - 1`` with ``last_frame_skip``."""
        if self.config.last_frame_skip:
            return list(range(steps))
        return [min(i - 1, self.config.n_past - 1) for i in range(1, steps + 1)]

    # --- training ---------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The reference objective with teacher forcing over steps ``1..T-1`` (context included).

        ``mse`` = per-frame pixel mean summed over time; ``kld`` = KL summed over z and time,
        divided by ``B`` (to the learned prior, or to N(0, I) for svg-fp; 0 for svg-det);
        ``loss = mse + beta * kld``. Step ``i`` conditions the predictor and prior on ``a_{i-1}``.
        """
        c = self.config
        frames, actions = batch["frames"], batch["actions"]
        self._check_frames(frames)
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"frames: loss needs T >= 2 frames, got {t}")
        self._check_actions(actions, (b, t, c.action_dim), "actions")
        x = frames_to_float(frames.to(self.device))
        acts = self._act(actions.to(self.device, torch.float32))
        h_all, skips_all = self._encode(x)

        ph, pc = self.predictor.zero_state(b, x.device)
        if self.stochastic:
            qh, qc = self.posterior.zero_state(b, x.device)
        if c.prior == "learned":
            rh, rc = self.prior_net.zero_state(b, x.device)
        g_seq, kld = [], x.new_zeros(())
        for i in range(1, t):
            h_prev, a_prev = h_all[:, i - 1], acts[:, i - 1]
            inp = [h_prev, a_prev]
            if self.stochastic:
                mu, logvar, qh, qc = self.posterior(h_all[:, i], qh, qc)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                inp.insert(1, z)
                if c.prior == "learned":
                    mu_p, logvar_p, rh, rc = self.prior_net(torch.cat([h_prev, a_prev], 1), rh, rc)
                    kld = kld + kl_gaussians(mu, logvar, mu_p, logvar_p).sum()
                else:
                    kld = kld + kl_standard_normal(mu, logvar).sum()
            g, ph, pc = self.predictor(torch.cat(inp, 1), ph, pc)
            g_seq.append(g)

        idx = torch.tensor(self.skip_index(t - 1), device=x.device)
        skips = [s.index_select(1, idx).flatten(0, 1) for s in skips_all]
        pred = self.decoder(torch.stack(g_seq, 1).flatten(0, 1), skips).view(b, t - 1, *x.shape[2:])
        mse = (pred - x[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).sum()
        kld = kld / b
        loss = mse + c.beta * kld
        # Detached scalars, not floats: the trainer reads them in its one host sync per step.
        metrics = {"mse": mse.detach(), "kld": kld.detach()}
        loss = self.add_state_loss(batch, loss, metrics)
        return loss, {**metrics, "loss": loss.detach()}

    # --- rollouts ---------------------------------------------------------------------------
    def initial(
        self,
        frames: Tensor,
        actions: Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> State:
        """Run the context through the networks (the reference generation protocol).

        Context steps ``i = 1..T0-1`` take ``z`` from the posterior on the true frame ``x_i``
        (its mean unless ``sample``), step the learned prior alongside to warm its state, and
        step the predictor. ``decode`` of the result is the true last context frame; ``features``
        is the predictor output for it (the encoder code when ``T0 == 1``, no predictor step yet).
        """
        c = self.config
        b, t0 = self._check_context(frames, actions)
        x = frames_to_float(frames.to(self.device))
        acts = self._act(actions.to(self.device, torch.float32))
        h_all, skips_all = self._encode(x)

        dev = x.device
        ph, pc = self.predictor.zero_state(b, dev)
        out: dict[str, Tensor] = {}
        if self.stochastic:
            qh, qc = self.posterior.zero_state(b, dev)
        if c.prior == "learned":
            rh, rc = self.prior_net.zero_state(b, dev)
        g = h_all[:, 0]
        for i in range(1, t0):
            h_prev, a_prev = h_all[:, i - 1], acts[:, i - 1]
            inp = [h_prev, a_prev]
            if self.stochastic:
                mu, logvar, qh, qc = self.posterior(h_all[:, i], qh, qc)
                if sample:
                    mu = mu + torch.randn(mu.shape, generator=generator, device=dev) * (0.5 * logvar).exp()
                inp.insert(1, mu)
                if c.prior == "learned":
                    _, _, rh, rc = self.prior_net(torch.cat([h_prev, a_prev], 1), rh, rc)
            g, ph, pc = self.predictor(torch.cat(inp, 1), ph, pc)
        if c.prior == "learned":
            out.update(prior_h=rh, prior_c=rc)
        # Skips of the last context frame (the fix); with last_frame_skip the same frame too.
        out.update(self._skip_state([s[:, -1] for s in skips_all]))
        return State(h=h_all[:, -1], g=g, frame=x[:, -1], pred_h=ph, pred_c=pc, **out)

    def _step(self, state: State, action: Tensor, opts: Sampling) -> State:
        """Sample ``z`` from the prior, predict ``g``, decode the frame and re-encode it.

        Learned prior: ``z ~ N(mu, (temperature·sigma)^2)``; fixed: ``N(0, temperature^2)``;
        ``sample=False`` takes the mean.
        """
        c = self.config
        b = len(state)
        sample, temperature, generator, noise = opts
        h_prev = state["h"]
        a = self._act(action.to(h_prev.device, h_prev.dtype))
        inp = [h_prev, a]
        new: dict[str, Tensor] = {}
        if c.prior == "learned":
            mu, logvar, rh, rc = self.prior_net(torch.cat([h_prev, a], 1), state["prior_h"], state["prior_c"])
            new.update(prior_h=rh, prior_c=rc)
            z = mu
            if sample:
                eps = self._eps(noise, mu, generator)
                z = mu + (temperature * eps) * (0.5 * logvar).exp()
            inp.insert(1, z)
        elif c.prior == "fixed":
            z = h_prev.new_zeros(b, c.z_dim)
            if sample:
                z = temperature * self._eps(noise, z, generator)
            inp.insert(1, z)
        elif noise is not None and tuple(noise.shape) != (b, 0):  # svg-det draws nothing
            raise ValueError(f"noise: svg-det takes no noise (shape ({b}, 0)), got {tuple(noise.shape)}")
        g, ph, pc = self.predictor(torch.cat(inp, 1), state["pred_h"], state["pred_c"])
        frame = self._decode(g, state)
        h, new_skips = self._encode_frames(frame)
        if c.last_frame_skip:
            new.update(self._skip_state(new_skips))
        return state.replace(h=h, g=g, frame=frame, pred_h=ph, pred_c=pc, **new)

    @property
    def noise_dim(self) -> int:
        """``z_dim`` normals per step (0 for ``svg-det``)."""
        return self.config.z_dim if self.stochastic else 0

    def _eps(self, noise: Tensor | None, like: Tensor, generator: torch.Generator | None) -> Tensor:
        """Standard normals shaped like ``like``: the caller's ``noise`` or fresh draws."""
        if noise is None:
            return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        if noise.shape != like.shape:
            raise ValueError(f"noise: expected shape {tuple(like.shape)}, got {tuple(noise.shape)}")
        return noise.to(like.device, like.dtype)

    @staticmethod
    def _num_skips(state: State) -> int:
        return sum(1 for k in state if k.startswith("skip"))

    def decode(self, state: State) -> Tensor:
        """The frame the state stands for, ``(B, C, H, W)`` in [0, 1] (already decoded: free).

        float32 also when a bf16 inference copy decoded it (``uint8`` conversion needs the bits)."""
        return state["frame"].float()

    def features(self, state: State) -> Tensor:
        """The predictor output ``g`` ``(B, g_dim)`` (in [-1, 1], Tanh): the decoder's input."""
        return state["g"]
