"""VideoFlow: exact inverses, the likelihood in closed form, learning (temporal prior vs per-frame
Glow, true vs shuffled actions), numerical safety, warm-up, and bpp in ``worldmodel eval``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from worldmodel.cli import main
from worldmodel.data.batch import frames_to_float
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import build_config, make, save
from worldmodel.dynamics.glow import Glow
from worldmodel.dynamics.videoflow import VideoFlow, WarmupAdam, allowed_dilations
from worldmodel.training.evaluate import score_predictions


def _model(seed: int = 0, **kw) -> VideoFlow:
    torch.manual_seed(seed)
    return make("videoflow", preset="tiny", **kw)


def _random_frames(b: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randint(0, 256, (b, t, 16, 16, 3), generator=g, dtype=torch.uint8),
        "actions": torch.rand(b, t, 4, generator=g) * 2 - 1,
    }


def _initialized_random(model: VideoFlow, scale: float = 0.02) -> VideoFlow:
    """Data-dependent init on a batch of noise frames, then every weight perturbed (no layer is the
    identity; noise frames keep the actnorm scales moderate, so the perturbation stays small)."""
    model.train().loss(_random_frames(8, model.config.seq_len, seed=3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


# --- configuration -----------------------------------------------------------------------------


def test_paper_preset_is_the_bair_quant_setting():
    c = build_config("videoflow", "paper")
    assert (c.levels, c.depth, c.coupling, c.coupling_width, c.activation) == (3, 24, "affine", 512, "gatu")
    assert (c.num_cond_latents, c.latent_width, c.latent_depth, c.latent_skip) == (3, 256, 5, True)
    assert (c.latent_activation, tuple(c.latent_dilation_rates), c.n_bits) == ("gatu", (1, 3), 8)
    assert (c.lr, tuple(c.betas), c.eps, c.warmup_steps, c.batch_size) == (
        3e-4,
        (0.85, 0.997),
        1e-6,
        10_000,
        5,
    )
    assert (c.n_past, c.seq_len) == (3, 4)  # 4-frame training windows scored on the last frame
    # 64×64×3 → 32×32×6, 16×16×12 and the 8×8×48 top (reference §3.3); dilations per width.
    assert Glow(3, 3, 1, 4).latent_shapes(3, 64) == [(6, 32, 32), (12, 16, 16), (48, 8, 8)]
    assert [allowed_dilations((1, 3), w) for w in (32, 16, 8)] == [[1, 2, 4], [1, 2, 4], [1, 2]]
    with pytest.raises(ValueError):
        build_config("videoflow", "tiny", coupling="spline")
    with pytest.raises(ValueError):
        build_config("videoflow", "tiny", image_size=18)


def test_noise_and_feature_sizes():
    model = _model()
    assert model.noise_dim == 3 * 16 * 16  # one normal per latent dimension of a frame
    assert model.feature_dim == 4 * 24  # the 4×4×24 top latent pooled to 2×2


# --- invertibility and the likelihood ---------------------------------------------------------


def test_whole_model_inverts_and_step_with_the_true_noise_reproduces_the_frame():
    """Encoding a frame, turning its latents into the prior's standard normals (in the documented
    ``noise`` order) and stepping with them gives the frame back: the flow, the priors and the
    noise layout fit together."""
    model = _initialized_random(_model())
    data = _random_frames(3, 3, seed=5)
    frames, actions = data["frames"], data["actions"]
    with torch.no_grad():
        x = model._preprocess(frames[:, 2], noise=False)
        latents, kept, _ = model.glow.encode(x)
        back = model.glow.decode(latents[-1], lambda level, x1: latents[level])
        torch.testing.assert_close(back, x, atol=1e-4, rtol=0)

        state = model.initial(frames[:, :2], actions[:, :1])
        acts = torch.cat([state["actions"], actions[:, 1:2]], 1)
        top = len(latents) - 1
        eps = []
        for level in [top, *reversed(range(top))]:
            k = kept[level] if level < top else None
            mean, log_scale = model._prior(level, 3, k, state[f"z{level}"], acts, state["count"] >= 2)
            eps.append(((latents[level] - mean) / log_scale.exp()).flatten(1))
        nxt = model.step(state, actions[:, 1], noise=torch.cat(eps, 1))
    torch.testing.assert_close(model.decode(nxt), frames_to_float(frames[:, 2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(nxt["z0"][:, -1], latents[0], atol=1e-4, rtol=0)


def test_untrained_likelihood_in_closed_form():
    """Fresh, before data-dependent init, with additive couplings the flow is a rotation and every
    prior is N(·, I) with the temporal mean z_{t-1} (latent skip), so
    ``log p(x_t) = -D/2 log 2π - |x_t - x_{t-1}|² / 2`` (``x_{t-1} := 0`` without enough history)."""
    model = _model(coupling="additive").eval()
    data = _random_frames(2, 4, seed=1)
    bpd = model.bits_per_dim(data["frames"], data["actions"], 1, generator=torch.Generator().manual_seed(5))
    k = data["frames"].movedim(-1, -3).double()
    x = (k + torch.rand(k.shape, generator=torch.Generator().manual_seed(5)).double()) / 256 - 0.5
    prev = torch.stack([torch.zeros_like(x[:, 1]), x[:, 1], x[:, 2]], 1)  # frame 1 has 1 < 2 past latents
    d = 3 * 16 * 16
    logp = -d / 2 * math.log(2 * math.pi) - 0.5 * (x[:, 1:] - prev).pow(2).flatten(2).sum(2)
    expected = 8 - logp / (d * math.log(2))
    assert bpd.shape == (2, 3)
    torch.testing.assert_close(bpd.double(), expected, atol=1e-4, rtol=0)


def test_fresh_model_scores_about_8_bits_per_dimension():
    model = _model()
    model.train().loss(_random_frames(16, 4, seed=0))  # data-dependent init
    model.eval()
    data = _random_frames(8, 4, seed=1)
    bpd = model.bits_per_dim(data["frames"], data["actions"], 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(bpd).all()
    assert 7.5 < bpd.mean().item() < 9.0, bpd.mean().item()


def test_loss_is_the_mean_target_bits_per_dimension():
    model = _model()
    data = moving_square(4, 5, seed=2)
    model.train().loss(data)
    model.eval()
    torch.manual_seed(3)
    loss, metrics = model.loss(data)
    torch.manual_seed(3)
    bpd = model.bits_per_dim(data["frames"], data["actions"], model.config.n_past)
    assert bpd.shape == (4, 3)
    torch.testing.assert_close(loss, bpd.mean())
    assert torch.equal(metrics["bpd"], loss.detach())


def test_temperature_scales_the_spread_of_samples():
    model = _initialized_random(_model(reencode=False))  # the raw samples enter the history
    data = _random_frames(1, 2, seed=1)
    with torch.no_grad():
        state = model.initial(data["frames"][:, :2], data["actions"][:, :1]).repeat_interleave(16)
        act = torch.zeros(16, 4)
        mean = model.step(state, act, sample=False)["z1"][:, -1]
        spread = [
            (
                model.step(state, act, temperature=t, generator=torch.Generator().manual_seed(0))["z1"][:, -1]
                - mean
            )
            .pow(2)
            .mean()
            .sqrt()
            .item()
            for t in (0.25, 0.5, 1.0)
        ]
    assert spread[0] == pytest.approx(spread[1] / 2, rel=1e-3)  # the same normals, scaled
    assert spread[1] == pytest.approx(spread[2] / 2, rel=1e-3)


def test_open_loop_history_is_the_code_of_the_frame_shown():
    model = _initialized_random(_model())
    data = _random_frames(4, 2, seed=1)
    with torch.no_grad():
        state = model.initial(data["frames"], data["actions"][:, :1])
        state = model.step(state, torch.zeros(4, 4), generator=torch.Generator().manual_seed(0))
        frame = model.decode(state)
        codes, _, _ = model.glow.encode((frame * 255 + 0.5) / 256 - 0.5)  # 8 bits: bin centres
    for level, code in enumerate(codes):
        torch.testing.assert_close(state[f"z{level}"][:, -1], code)
    # This step's frame needed clipping, so the code is not the raw sample: the raw feedback's
    # history (same weights, same noise) differs from it.
    raw_model = _initialized_random(_model(reencode=False))  # the same weights
    with torch.no_grad():
        raw_state = raw_model.initial(data["frames"], data["actions"][:, :1])
        raw_state = raw_model.step(raw_state, torch.zeros(4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(raw_model.decode(raw_state), frame)  # the same frame is shown
    assert (raw_state["z0"][:, -1] - codes[0]).abs().max() > 1e-2
    # Training rollouts (the state head's): the same values, the gradient of the samples.
    trained = model.step(
        model.initial(data["frames"], data["actions"][:, :1]),
        torch.zeros(4, 4),
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(trained[f"z{len(codes) - 1}"][:, -1].detach(), codes[-1])
    trained[f"z{len(codes) - 1}"][:, -1].square().mean().backward()
    grads = [p.grad for p in model.temporal.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_open_loop_rollouts_stay_finite():
    """Feeding back raw samples, this model's latents blow up in open loop (NaN within 40 steps);
    feeding back the code of the clipped frame keeps them in range."""

    def rollout(reencode: bool) -> list[float]:
        model = _initialized_random(_model(reencode=reencode))
        data = _random_frames(8, 2, seed=1)
        g = torch.Generator().manual_seed(0)
        peaks = []
        with torch.no_grad():
            state = model.initial(data["frames"], data["actions"][:, :1])
            for _ in range(40):
                state = model.step(state, torch.rand(8, 4, generator=g) * 2 - 1, generator=g)
                peaks.append(model.features(state).abs().max().item())
        return peaks

    raw, reencoded = rollout(False), rollout(True)
    assert not all(math.isfinite(v) and v < 100 for v in raw)  # the failure this guards against
    assert all(math.isfinite(v) and v < 100 for v in reencoded), reencoded


def test_short_context_uses_the_per_frame_prior():
    """With one context frame (< num_cond_latents) the first step samples from the per-frame priors,
    so it does not depend on the actions; the next step, with full history, does."""
    model = _initialized_random(_model())
    data = _random_frames(2, 1, seed=4)
    with torch.no_grad():
        state = model.initial(data["frames"], torch.zeros(2, 0, 4))
        assert state["count"].tolist() == [1, 1]
        a, b = (
            model.step(state, torch.ones(2, 4), sample=False),
            model.step(state, -torch.ones(2, 4), sample=False),
        )
        torch.testing.assert_close(model.decode(a), model.decode(b))
        a2 = model.step(a, torch.ones(2, 4), sample=False)
        b2 = model.step(a, -torch.ones(2, 4), sample=False)
    assert not torch.allclose(model.decode(a2), model.decode(b2), atol=1e-4)


# --- learning ---------------------------------------------------------------------------------


def _textured(n: int, t: int, seed: int) -> dict[str, torch.Tensor]:
    """Moving squares over a per-sequence random background that stays put: most of a frame is
    incompressible noise that only the past frames predict."""
    data = moving_square(n, t, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    background = torch.randint(0, 256, (n, 1, 16, 16, 3), generator=g, dtype=torch.uint8)
    mask = (data["frames"] == 16).all(-1, keepdim=True)  # the plain background value
    data["frames"] = torch.where(mask, background.expand_as(data["frames"]), data["frames"])
    return data


def _train(
    model: VideoFlow, steps: int, data: dict | None = None, batch: int = 8, seed: int = 0
) -> VideoFlow:
    data = data if data is not None else moving_square(512, model.config.seq_len, seed=1)
    opt = model.optimizers()["model"]
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data["frames"]), (batch,), generator=g)
        loss, _ = model.loss({"frames": data["frames"][idx], "actions": data["actions"][idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    return model.eval()


def _test_bits(model: VideoFlow, shuffle: bool = False, textured: bool = False) -> torch.Tensor:
    """Bits per dimension of held-out frames 2..3 given frames 0..1, ``(128, 2)``."""
    test = _textured(128, 4, seed=2) if textured else moving_square(128, 4, seed=2)
    actions = test["actions"]
    if shuffle:  # other sequences' actions: the true motion is no longer in them
        actions = actions[torch.randperm(128, generator=torch.Generator().manual_seed(1))]
    return model.bits_per_dim(test["frames"], actions, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def trained():
    """Tiny VideoFlow on moving squares (100 steps), and VideoFlow and the same Glow without the
    temporal prior on textured moving squares (60 identical steps each)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        textured = _textured(512, 4, seed=1)
        return {
            "flow": _train(_model(), 100),
            "flow-textured": _train(_model(), 60, textured),
            "glow-textured": _train(_model(temporal_prior=False), 60, textured),
        }
    finally:
        torch.set_num_threads(old)


def test_bits_per_dimension_drop_and_the_temporal_prior_beats_per_frame_glow_fast(trained):
    """On plain moving squares a per-frame Glow catches up with VideoFlow after a few hundred steps
    (the motion carries ~10 bits per frame, 0.01 bits per dimension), so the comparison uses a
    persistent random background, which only the temporal prior can predict."""
    bits = _test_bits(trained["flow"]).mean().item()
    flow = _test_bits(trained["flow-textured"], textured=True).mean().item()
    glow = _test_bits(trained["glow-textured"], textured=True).mean().item()
    print(f"test bpd: moving squares {bits:.3f} (100 steps); textured: VideoFlow {flow:.3f}, Glow {glow:.3f}")
    assert bits < 3.0  # from about 7 at init
    assert glow > 7.5  # noise is incompressible frame by frame
    assert flow < glow - 1.0


def test_true_actions_beat_shuffled_actions_fast(trained):
    """Paired over held-out sequences (same frames, same dequantisation noise): the trained model
    assigns the frames more probability under their own actions. A model that ignored the actions
    would score both exactly the same."""
    flow, glow = trained["flow"], trained["glow-textured"]
    diff = (_test_bits(flow, shuffle=True) - _test_bits(flow)).mean(1) * (3 * 16 * 16)  # bits per frame
    worse = (diff > 0).float().mean().item()
    print(f"shuffled - true actions: {diff.mean().item():.1f} bits/frame, worse for {worse:.0%}")
    assert diff.mean() > 4.0
    assert worse > 0.75
    assert torch.equal(_test_bits(glow, shuffle=True), _test_bits(glow))  # no temporal prior: no actions


@pytest.mark.slow
def test_learning_after_400_steps(one_thread):
    textured = _textured(512, 4, seed=1)
    plain = _train(_model(), 400)
    flow = _train(_model(), 400, textured)
    glow = _train(_model(temporal_prior=False), 400, textured)
    bits, shuffled = _test_bits(plain).mean().item(), _test_bits(plain, shuffle=True).mean().item()
    bits_flow = _test_bits(flow, textured=True).mean().item()
    bits_glow = _test_bits(glow, textured=True).mean().item()
    print(
        f"400 steps: squares {bits:.3f} (shuffled {shuffled:.3f}); textured {bits_flow:.3f}/{bits_glow:.3f}"
    )
    assert bits < 1.5 and shuffled > bits + 0.005
    assert bits_flow < bits_glow - 1.0


# --- numerical safety and the optimiser -------------------------------------------------------


def _no_nan_run(seed: int, steps: int) -> None:
    model = _model(seed)
    c = model.config
    data = moving_square(256, c.seq_len, seed=seed + 10)
    opt = model.optimizers()["model"]
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, 256, (8,), generator=g)
        loss, _ = model.loss({"frames": data["frames"][idx], "actions": data["actions"][idx]})
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss), f"seed {seed}: non-finite loss at step {step}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()), f"seed {seed} step {step}"
        opt.step()
    with torch.no_grad():
        model.eval()
        state = model.initial(data["frames"][:4, :2], data["actions"][:4, :1])
        _, frames = model.rollout(state, data["actions"][:4, :3], generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(frames).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_nan_in_early_training_fast(seed, one_thread):
    _no_nan_run(seed, 15)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_no_nan_in_the_first_thousand_steps(seed, one_thread):
    _no_nan_run(seed, 1000)


def test_warmup_adam_ramps_the_learning_rate_and_resumes():
    p = nn.Parameter(torch.zeros(3))
    opt = WarmupAdam([p], lr=0.1, warmup_steps=4)
    moves = []
    for _ in range(6):
        before = p.detach().clone()
        p.grad = torch.ones(3)  # constant gradient: each Adam step moves by its learning rate
        opt.step()
        moves.append((before - p.detach())[0].item())
    assert moves == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rel=1e-4)
    assert opt.param_groups[0]["lr"] == 0.1  # the base rate is what the group keeps
    again = WarmupAdam([nn.Parameter(torch.zeros(3))], lr=0.1, warmup_steps=4)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["warmup_step"] == 6


def test_model_optimizer_uses_the_preset():
    (opt,) = _model().optimizers().values()
    assert isinstance(opt, WarmupAdam)
    group = opt.param_groups[0]
    assert (group["warmup_steps"], group["lr"], group["eps"]) == (20, 2e-3, 1e-6)


def test_checkpointing_gives_the_same_loss_and_gradients():
    data = moving_square(4, 4, seed=1)
    grads = []
    for ckpt in (False, True):
        model = _model(checkpointing=ckpt).train()
        model.loss(data)  # init
        torch.manual_seed(7)
        loss, _ = model.loss(data)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


# --- evaluation -------------------------------------------------------------------------------


def test_evaluate_reports_bpp_and_uses_the_temperature():
    model = _initialized_random(_model())
    data = SyntheticDataset.moving_square(3, 5, image_size=16)
    res = score_predictions(model, data, n_past=2, n_future=3, samples=2)
    assert res.bpp is not None and len(res.bpp) == 3 and all(math.isfinite(v) for v in res.bpp)
    frames = torch.stack([data[i]["frames"] for i in range(3)])
    actions = torch.stack([data[i]["actions"] for i in range(3)])
    direct = model.bits_per_dim(frames, actions, 2, generator=torch.Generator().manual_seed(1))
    assert res.bpp == pytest.approx(direct.double().mean(0).tolist(), abs=1e-5)
    report = res.to_json()
    assert report["bpp_mean"] == pytest.approx(sum(res.bpp) / 3)
    cold = score_predictions(model, data, n_past=2, n_future=3, samples=2, temperature=0.0)
    assert cold.mean_of_n["psnr"] == cold.psnr  # temperature 0: every sample is the mean


def test_cli_eval_reports_bpp(tmp_path, capsys):
    from train_stubs import write_png_dataset

    data = moving_square(3, 5, seed=1)
    write_png_dataset(tmp_path / "data", {"train": data["frames"], "test": data["frames"]})
    ckpt = save(_initialized_random(_model()), tmp_path / "vf.pt", step=3)
    report = tmp_path / "eval.json"
    args = ["eval", str(ckpt), "--data", str(tmp_path / "data"), "--samples", "2", "--n-past", "2"]
    rc = main([*args, "--n-future", "3", "--temperature", "0.5", "--json", str(report)])
    assert rc == 0
    assert "bits per dimension" in capsys.readouterr().out
    r = json.loads(report.read_text())
    assert len(r["bpp"]) == 3 and math.isfinite(r["bpp_mean"]) and r["temperature"] == 0.5
    assert r["model"] == "videoflow"


def test_likelihood_stays_float32_under_bf16_autocast():
    model = _model()
    data = moving_square(4, 4, seed=1)
    model.train().loss(data)
    torch.manual_seed(2)
    plain, _ = model.loss(data)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = model.loss(data)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)
