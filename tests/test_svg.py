"""SVG specifics: reference layer sizes, the KL terms, the skip fix, and real action conditioning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from worldmodel.data.synthetic import moving_square
from worldmodel.dynamics import build_config, make
from worldmodel.dynamics.svg import SVG, SVGConfig
from worldmodel.dynamics.svg_nets import ENCODERS, kl_gaussians, kl_standard_normal


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_preset_is_the_bair_setting():
    c = build_config("svg-lp", preset="paper")
    assert (c.encoder, c.g_dim, c.z_dim, c.rnn_size) == ("vgg64", 128, 64, 256)
    assert (c.predictor_layers, c.posterior_layers, c.prior_layers) == (2, 1, 1)
    assert (c.beta, c.n_past, c.n_future, c.lr, c.batch_size, c.image_size) == (1e-4, 2, 10, 2e-3, 100, 64)
    assert build_config("svg-fp", preset="paper").prior == "fixed"


@pytest.mark.parametrize(("encoder", "enc_m", "dec_m"), [("vgg64", 8.7, 11.8), ("dcgan64", 3.8, 6.6)])
def test_reference_layer_sizes(encoder, enc_m, dec_m):
    enc_cls, dec_cls = ENCODERS[encoder]
    enc, dec = enc_cls(128, 3, 64, 64), dec_cls(128, 3, 64, 64)
    assert abs(_count(enc) / 1e6 - enc_m) < 0.05
    assert abs(_count(dec) / 1e6 - dec_m) < 0.05
    h, skips = enc(torch.rand(2, 3, 64, 64))
    assert h.shape == (2, 128)
    first = 64 if encoder == "vgg64" else 32
    assert [s.shape[-1] for s in skips] == [first, first // 2, first // 4, first // 8]
    assert dec(h, skips).shape == (2, 3, 64, 64)


def test_paper_model_modules():
    model = make("svg-lp", preset="paper")
    assert _count(model.predictor.embed) == (128 + 64 + 4) * 256 + 256  # [h, z, a] -> rnn
    assert len(model.predictor.cells) == 2 and len(model.posterior.cells) == 1
    assert model.prior_net.mu.out_features == 64
    assert not hasattr(make("svg-fp", preset="tiny"), "prior_net")
    det = make("svg-det", preset="tiny")
    assert not hasattr(det, "posterior") and not hasattr(det, "prior_net")


def test_init_follows_reference():
    model = make("svg-lp", preset="paper")
    conv = model.encoder.stages[1][0][0]
    bn = model.encoder.stages[1][0][1]
    assert abs(conv.weight.std().item() - 0.02) < 0.002 and conv.bias.abs().max() == 0
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0


def test_kl_closed_forms_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu1, lv1, mu2, lv2 = (torch.randn(5, 7, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mu1, (0.5 * lv1).exp()), Normal(mu2, (0.5 * lv2).exp()))
    torch.testing.assert_close(kl_gaussians(mu1, lv1, mu2, lv2), ref)
    ref0 = kl_divergence(Normal(mu1, (0.5 * lv1).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_standard_normal(mu1, lv1), ref0)


def test_config_round_trips_through_a_plain_dict():
    model = make("svg-fp", preset="tiny", action_repeat=2)
    again = build_config("svg-fp", **model.config_dict())
    assert again == model.config and isinstance(again.betas, tuple)


def test_bad_config_raises():
    for bad in ({"encoder": "resnet"}, {"prior": "flow"}, {"image_size": 48}):
        with pytest.raises(ValueError):
            SVGConfig(**bad)


def test_skips_come_from_the_last_context_frame():
    torch.manual_seed(0)
    model = make("svg-lp", preset="tiny", n_past=3).eval()
    # Training: step i decodes with skips of x_{i-1} inside the context, then of x_{n_past-1}
    # (the reference's `<` would freeze them at x_{n_past-2}).
    assert model.skip_index(6) == [0, 1, 2, 2, 2, 2]
    data = moving_square(2, 5, seed=3)
    with torch.no_grad():
        state = model.initial(data["frames"][:, :3], data["actions"][:, :2])
        x_last = data["frames"][:, 2].movedim(-1, -3).float() / 255
        _, skips = model.encoder(x_last)
        for k, s in enumerate(skips):
            torch.testing.assert_close(state[f"skip{k}"], s)
        after = model.step(model.step(state, data["actions"][:, 2]), data["actions"][:, 3])
        for k in range(len(skips)):
            assert torch.equal(after[f"skip{k}"], state[f"skip{k}"])
        # With last_frame_skip the skips follow the model's own predictions.
        lfs = SVG(dataclasses.replace(model.config, last_frame_skip=True)).eval()
        lfs.load_state_dict(model.state_dict())
        s1 = lfs.step(lfs.initial(data["frames"][:, :3], data["actions"][:, :2]), data["actions"][:, 2])
        torch.testing.assert_close(s1["skip0"], lfs.encoder(lfs.decode(s1))[1][0])


def test_decode_after_initial_is_the_last_context_frame():
    model = make("svg-det", preset="tiny").eval()
    data = moving_square(2, 3, seed=4)
    with torch.no_grad():
        state = model.initial(data["frames"][:, :2], data["actions"][:, :1])
    torch.testing.assert_close(model.decode(state), data["frames"][:, 1].movedim(-1, -3).float() / 255)


# --- action conditioning is real -------------------------------------------------------------


def _train_and_score(steps: int, shuffle: bool, seed: int = 0) -> float:
    """Train tiny SVG-LP on moving_square; return 5-step MSE / copy-last-frame MSE on held-out data."""
    torch.manual_seed(seed)
    model = make("svg-lp", preset="tiny")
    c = model.config
    train = moving_square(1024, c.seq_len, seed=1)
    test = moving_square(256, 7, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, betas=c.betas)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(train["frames"]), (c.batch_size,), generator=g)
        actions = train["actions"][idx]
        if shuffle:  # actions of other sequences: the frames no longer depend on them
            actions = actions[torch.randperm(len(idx), generator=g)]
        loss, _ = model.loss({"frames": train["frames"][idx], "actions": actions})
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        state = model.initial(test["frames"][:, :2], test["actions"][:, :1])
        _, pred = model.rollout(state, test["actions"][:, 1:6], sample=False)
    truth = test["frames"][:, 2:7].movedim(-1, -3).float() / 255
    last = test["frames"][:, 1:2].movedim(-1, -3).float() / 255
    return ((pred - truth).pow(2).mean() / (last - truth).pow(2).mean()).item()


@pytest.mark.parametrize(
    ("steps", "most", "gap"),
    [pytest.param(300, 0.6, 0.2, id="fast"), pytest.param(1500, 0.5, 0.3, id="slow", marks=pytest.mark.slow)],
)
def test_action_conditioning_is_real(one_thread, steps, most, gap):
    """True actions beat copying the last frame, shuffled ones fall behind: tighter bars after more steps."""
    real = _train_and_score(steps, shuffle=False)
    shuffled = _train_and_score(steps, shuffle=True)
    print(f"5-step MSE / copy-last-frame: true actions {real:.3f}, shuffled {shuffled:.3f}")
    assert real < most, f"5-step MSE / copy-last = {real:.3f} with true actions"
    assert shuffled > real + gap, f"shuffled actions {shuffled:.3f} vs true {real:.3f}"
