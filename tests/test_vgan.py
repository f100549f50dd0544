"""VGAN specifics: reference sizes, the two-stream composition, causality of the action pathway,
clip bookkeeping of step/rollout, and learning on the moving-square data."""

from __future__ import annotations

import math

import pytest
import torch

from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import build_config, load, make
from worldmodel.dynamics.vgan import VGANConfig, action_signal
from worldmodel.training.trainer import TrainConfig, Trainer


def _count(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _tiny(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return make("vgan", preset="tiny", **kw)


def _clip_inputs(model, b: int = 3, seed: int = 0):
    c = model.config
    g = torch.Generator().manual_seed(seed)
    context = torch.rand(b, c.channels, c.image_size, c.image_size, generator=g)
    z = torch.randn(b, c.z_dim, generator=g)
    actions = torch.rand(b, c.clip_len - 1, c.action_dim, generator=g) * 2 - 1
    return context, z, actions


# --- the published settings -------------------------------------------------------------------


def test_paper_presets_are_the_reference_settings():
    c = build_config("vgan", preset="paper")
    assert (c.image_size, c.clip_len, c.width, c.z_dim, c.conditional) == (64, 32, 128, 100, True)
    assert (c.lr, c.betas, c.batch_size, c.first_frame_l1, c.mask_l1, c.recon_l1) == (
        2e-4,
        (0.5, 0.999),
        32,
        10.0,
        0.0,
        0.0,
    )
    u = build_config("vgan", preset="paper-unconditional")
    assert (u.conditional, u.width, u.z_dim, u.mask_l1, u.batch_size) == (False, 64, 100, 0.1, 64)


def test_paper_sizes():
    """Reference: conditional D ≈ 44 M, unconditional G ≈ 16.2 M / D ≈ 11.1 M; ours drop the
    temporal look-ahead taps (kernel 3 instead of 4) and add 2A action channels per layer."""
    cond = make("vgan", preset="paper")
    assert 44 < _count(cond.discriminator) < 46
    assert 59 < _count(cond.generator) < 61
    assert cond.encoder.out_channels == 1024 and cond.feature_dim == 1024 * 4
    torch.manual_seed(0)
    unc = make("vgan", preset="paper-unconditional").eval()
    assert 15 < _count(unc.generator) < 16.2 and 11 < _count(unc.discriminator) < 12
    assert unc.encoder is None
    with torch.no_grad():
        out = unc.generator(None, torch.randn(1, 100), torch.zeros(1, 31, 4))
        assert out["video"].shape == (1, 3, 32, 64, 64) and out["mask"].shape == (1, 1, 32, 64, 64)
        assert out["bg"].shape == (1, 3, 64, 64)
        logits = unc.discriminator(out["video"], action_signal(torch.zeros(1, 31, 4), 32))
    assert logits.shape == (1, 2)


def test_init_follows_reference():
    model = make("vgan", preset="paper-unconditional")
    conv = model.generator.fg_up[0][0].conv
    bn = model.generator.fg_up[0][1]
    assert abs(conv.weight.std().item() - 0.01) < 0.001 and conv.bias.abs().max() == 0
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.01


def test_bad_config_raises():
    for bad in ({"image_size": 48}, {"clip_len": 30}, {"n_future": 10}, {"width": 0}):
        with pytest.raises(ValueError):
            VGANConfig(**bad)


# --- the generator ----------------------------------------------------------------------------


def test_two_stream_composition_shapes_and_ranges():
    model = _tiny().eval()
    c = model.config
    context, z, actions = _clip_inputs(model)
    with torch.no_grad():
        out = model.generator(context * 2 - 1, z, actions)
        other = model.generator(context * 2 - 1, -z, -actions)
    video, fg, mask, bg = out["video"], out["fg"], out["mask"], out["bg"]
    assert video.shape == fg.shape == (3, c.channels, c.clip_len, c.image_size, c.image_size)
    assert mask.shape == (3, 1, c.clip_len, c.image_size, c.image_size) and bg.shape == (3, 3, 16, 16)
    assert 0 <= mask.min() and mask.max() <= 1 and 0 < mask.std()
    assert fg.abs().max() <= 1 and bg.abs().max() <= 1 and video.abs().max() <= 1
    # video = m·f + (1 − m)·b, exactly, with one background image for every frame.
    assert torch.equal(video, mask * fg + (1 - mask) * bg[:, :, None])
    recovered = (video - mask * fg) / (1 - mask)  # the background each frame shows
    torch.testing.assert_close(recovered, bg[:, :, None].expand_as(recovered), atol=1e-4, rtol=1e-4)
    # The background stream sees the context only: z and the actions move the foreground alone.
    assert torch.equal(other["bg"], bg)
    assert not torch.allclose(other["fg"], fg)


def test_frames_depend_on_earlier_actions_only():
    """Causal action pathway: frame j of a clip is a function of a_0..a_{j-1} (eval mode)."""
    model = _tiny().eval()
    context, z, actions = _clip_inputs(model)
    with torch.no_grad():
        full = model.generate(context, z, actions)["video"]
        for k in range(actions.shape[1]):
            prefix = model.generate(context, z, actions[:, :k])["video"]  # later actions zero
            torch.testing.assert_close(prefix[:, : k + 1], full[:, : k + 1], atol=1e-6, rtol=0)
            assert not torch.allclose(prefix[:, k + 1], full[:, k + 1], atol=1e-6)


def test_action_signal_is_last_action_and_displacement():
    a = torch.tensor([[[1.0, 0.5], [-1.0, 0.25]]])
    s = action_signal(a, 4)  # (1, 4, 4): [last action, sum so far] per frame
    want = torch.tensor([[0, 0, 0, 0], [1, 0.5, 1, 0.5], [-1, 0.25, 0, 0.75], [0, 0, 0, 0.75]])
    torch.testing.assert_close(s[0].T, want)


# --- step / rollout bookkeeping ---------------------------------------------------------------


def _context(model, b=3, horizon=17, seed=0):
    data = moving_square(b, horizon + 1, seed=seed)
    return data["frames"][:, :1], data["actions"][:, :0], data["actions"][:, :horizon]


def _calls(model):
    counter = {"n": 0}

    def hook(*_):
        counter["n"] += 1

    return counter, model.generator.register_forward_hook(hook)


def test_rollout_is_one_call_per_clip_and_equals_stepping():
    model = _tiny().eval()
    c = model.config
    frames, ctx_actions, future = _context(model)
    horizon = future.shape[1]
    noise = torch.randn(3, horizon, c.z_dim, generator=torch.Generator().manual_seed(1))
    counter, handle = _calls(model)
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        end, rolled = model.rollout(state, future, noise=noise)
        calls_rollout = counter["n"]
        stepped = []
        for t in range(horizon):
            state = model.step(state, future[:, t], noise=noise[:, t])
            stepped.append(model.decode(state))
        _, feats = model.rollout(model.initial(frames, ctx_actions), future, noise=noise, decode=False)
    handle.remove()
    assert calls_rollout == math.ceil(horizon / (c.clip_len - 1)) == 3
    assert counter["n"] - calls_rollout == horizon + 3  # stepping: one call per step
    torch.testing.assert_close(rolled, torch.stack(stepped, 1), atol=1e-6, rtol=1e-5)
    for key in end:
        torch.testing.assert_close(end[key], state[key], atol=1e-6, rtol=1e-5)
    assert int(end["pos"][0]) == horizon - 2 * (c.clip_len - 1)
    assert feats.shape == (3, horizon, model.feature_dim)
    torch.testing.assert_close(feats[:, -1], model.features(state))


def test_noise_is_drawn_per_clip_and_clips_chain():
    model = _tiny().eval()
    c = model.config
    frames, ctx_actions, future = _context(model, horizon=10)
    noise = torch.randn(3, 10, c.z_dim, generator=torch.Generator().manual_seed(2))
    changed = noise.clone()
    changed[:, 1:7] = torch.randn(3, 6, c.z_dim)  # steps inside the first clip: unused
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        _, a = model.rollout(state, future, noise=noise)
        _, b = model.rollout(state, future, noise=changed)
        changed[:, 7] += 1.0  # the step that starts the second clip
        _, d = model.rollout(state, future, noise=changed)
        first_clip_end, _ = model.rollout(state, future[:, :7], noise=noise[:, :7])
        second, _ = model.rollout(first_clip_end, future[:, 7:8], noise=noise[:, 7:8])
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(d[:, :7], a[:, :7], atol=0, rtol=0)
    assert not torch.allclose(d[:, 7:], a[:, 7:])
    # The second clip is conditioned on the last frame of the first one, with its own z.
    torch.testing.assert_close(second["context"], a[:, 6])
    torch.testing.assert_close(second["z"], noise[:, 7])
    assert int(first_clip_end["pos"][0]) == c.clip_len - 1 and int(second["pos"][0]) == 1


def test_rows_at_different_clip_positions():
    model = _tiny().eval()
    frames, ctx_actions, future = _context(model, b=2, horizon=12)
    noise = torch.randn(2, 12, model.noise_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        state = state.where(torch.tensor([True, False]), model.step(state, future[:, 0], noise=noise[:, 0]))
        _, rolled = model.rollout(state, future[:, 1:], noise=noise[:, 1:])
        stepped = []
        for t in range(1, 12):
            state = model.step(state, future[:, t], noise=noise[:, t])
            stepped.append(model.decode(state))
    torch.testing.assert_close(rolled, torch.stack(stepped, 1), atol=1e-6, rtol=1e-5)


def test_unconditional_model_trains_and_rolls_out():
    torch.manual_seed(0)
    model = make("vgan", preset="tiny", conditional=False, mask_l1=0.1, recon_l1=0.0)
    c = model.config
    data = moving_square(4, c.seq_len, seed=0)
    losses, metrics = model.loss(data)
    assert set(losses) == set(model.optimizers()) == {"g", "d"}
    assert {"d_real", "d_fake", "mask", "l1_first"} <= set(metrics)
    assert model.encoder is None and model.feature_dim == 48
    model.eval()
    with torch.no_grad():
        state = model.initial(data["frames"][:, :1], data["actions"][:, :0])
        _, xs = model.rollout(state, data["actions"][:, :3], generator=torch.Generator().manual_seed(0))
        _, fs = model.rollout(state, data["actions"][:, :3], decode=False, sample=False)
    assert xs.shape == (4, 3, 3, 16, 16) and 0 <= xs.min() and xs.max() <= 1
    assert fs.shape == (4, 3, 48)


def test_loss_terms_are_the_reference_objective():
    """g = CE(D(G), real) + 10·L1(frame 0) + recon_l1·L1(clip); d = CE(real) + CE(fake)."""
    model = _tiny()
    data = moving_square(1, model.config.seq_len, seed=0)  # one clip: mean probabilities = the clip's
    torch.manual_seed(5)
    losses, m = model.loss(data)
    want_g = m["g_adv"] + 10.0 * m["l1_first"] + 10.0 * m["l1"]
    torch.testing.assert_close(losses["g"].detach(), want_g)
    want_d = -torch.log(m["d_real"]) - torch.log(1 - m["d_fake"])
    torch.testing.assert_close(losses["d"].detach(), want_d, atol=1e-5, rtol=1e-5)


# --- learning -------------------------------------------------------------------------------


def _centroid(frames: torch.Tensor) -> torch.Tensor:
    """Brightness-weighted centre ``(N, 2)`` (x, y) of what differs from the dark background."""
    w = (frames.sum(1) - 3 * 16 / 255).clamp(min=0)
    size = frames.shape[-1]
    coords = torch.arange(float(size))
    total = w.sum((1, 2)) + 1e-6
    return torch.stack([(w * coords).sum((1, 2)) / total, (w * coords[:, None]).sum((1, 2)) / total], 1)


def _score(model, test) -> tuple[float, float]:
    """(L1 between generated frame 0 and the context, fraction of action directions followed).

    Direction: the square's centroid in the first generated frame under ``a`` minus under ``−a``
    has the sign of ``a`` (x and y, where ``|a| ≥ 0.25``, i.e. a move of ≥ 1 px). A model that
    ignores the actions scores 0 (equal centroids), a random one ½.
    """
    model.eval()
    n = len(test["frames"])
    with torch.no_grad():
        state = model.initial(test["frames"][:, :1], test["actions"][:, :0])
        a = test["actions"][:, :1]
        clip = model.generate(state["frame"], torch.zeros(n, model.noise_dim), a)["video"]
        _, pos = model.rollout(state, a, sample=False)
        _, neg = model.rollout(state, -a, sample=False)
    l1 = (clip[:, 0] - state["frame"]).abs().mean().item()
    shift = _centroid(pos[:, 0]) - _centroid(neg[:, 0])
    a = a[:, 0, :2]
    moved = a.abs() >= 0.25
    followed = ((shift.sign() == a.sign()) & moved).sum().item() / moved.sum().item()
    model.train()
    return l1, followed


def _train_and_score(steps: int) -> tuple[tuple[float, float], tuple[float, float]]:
    model = _tiny()
    c = model.config
    train = moving_square(1024, c.seq_len, seed=1)
    test = moving_square(256, 2, seed=2)
    before = _score(model, test)
    opts = model.optimizers()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(train["frames"]), (c.batch_size,), generator=g)
        losses, _ = model.loss({"frames": train["frames"][idx], "actions": train["actions"][idx]})
        for key, opt in opts.items():
            opt.zero_grad()
            params = [p for group in opt.param_groups for p in group["params"]]
            losses[key].backward(inputs=params, retain_graph=True)
        for opt in opts.values():
            opt.step()
    return before, _score(model, test)


def test_learns_first_frame_and_action_direction_fast(one_thread):
    (l1_0, _), (l1, followed) = _train_and_score(150)
    print(f"frame-0 L1 {l1_0:.3f} -> {l1:.3f}; action direction followed {followed:.2f}")
    assert l1 < 0.2 * l1_0, (l1_0, l1)
    assert followed > 0.6, followed


@pytest.mark.slow
def test_learns_first_frame_and_action_direction(one_thread):
    (l1_0, _), (l1, followed) = _train_and_score(600)
    print(f"frame-0 L1 {l1_0:.3f} -> {l1:.3f}; action direction followed {followed:.2f}")
    assert l1 < 0.1 * l1_0, (l1_0, l1)
    assert followed > 0.62, followed


def test_trains_through_the_trainer(tmp_path):
    torch.manual_seed(0)
    model = make("vgan", preset="tiny", batch_size=8)
    data = SyntheticDataset.moving_square(32, model.config.seq_len, image_size=16, seed=0)
    cfg = TrainConfig(steps=4, log_every=2, ckpt_every=4, sample_every=4)
    result = Trainer(model, data, tmp_path, cfg).fit()
    assert sorted(result.history) == [1, 2, 3, 4]
    assert {"loss/g", "loss/d"} <= set(result.history[4])
    assert all(math.isfinite(v) for h in result.history.values() for v in h.values())
    assert (tmp_path / "samples" / "step_0000004.gif").stat().st_size > 0
    loaded = load(tmp_path / "checkpoints" / "last.pt", device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.cpu()), k
