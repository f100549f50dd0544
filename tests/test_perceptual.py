"""FVD and LPIPS: the Fréchet distance against closed forms, the networks' layouts, weights loaded
only from local files (as ``worldmodel eval --fvd-weights / --lpips-weights`` does), the eval CLI.

The networks here are randomly initialised (no pretrained weights on this machine), so the tests
check properties that hold for any weights: zero on identical inputs, symmetry, growth with noise,
file round trips, and the key layouts of the published checkpoints.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_stubs import write_png_dataset

from worldmodel.cli import main
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import make, save
from worldmodel.errors import CheckpointError
from worldmodel.training.evaluate import score_predictions
from worldmodel.training.perceptual import (
    I3D,
    LPIPS,
    feature_stats,
    frechet_distance,
    frechet_distance_of,
    fvd,
    i3d_embeddings,
    load_i3d,
    load_lpips,
    lpips_distances,
    resize_tf_bilinear,
)

# ----------------------------------------------------------------------------- Fréchet distance


def _diag_closed_form(mu1, s1, mu2, s2):
    return float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())


def test_frechet_diagonal_gaussians_equal_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(_diag_closed_form(mu1, s1, mu2, s2), rel=1e-12)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-12)
    # one dimension: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_frechet_full_covariances_closed_forms():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # a random rotation: non-diagonal covariances
    d1, d2 = rng.uniform(0.2, 2, 6), rng.uniform(0.2, 2, 6)
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_diag_closed_form(mu1, d1, mu2, d2), rel=1e-10)
    # a full covariance against a scaled copy: tr(S) (1 - c)^2
    a = rng.normal(size=(6, 6))
    s = a @ a.T
    assert frechet_distance(mu1, s, mu1, 2.25 * s) == pytest.approx(np.trace(s) * 0.25, rel=1e-10)
    # rank-deficient (fewer samples than dimensions, as FVD on small sets): still 0 on itself
    low = rng.normal(size=(6, 2))
    assert frechet_distance(mu1, low @ low.T, mu1, low @ low.T) == pytest.approx(0.0, abs=1e-10)


def test_frechet_general_case_matches_scipy_sqrtm():
    import scipy.linalg as scipy_linalg  # a dev dependency (through scikit-image): never skipped

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)  # do not commute
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


def test_feature_stats_and_bad_inputs():
    x = np.random.default_rng(3).normal(size=(10, 4))
    mu, sigma = feature_stats(torch.from_numpy(x))
    assert np.allclose(mu, x.mean(0)) and np.allclose(sigma, np.cov(x.T))  # unbiased (N - 1)
    assert frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(x[:1])
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, sigma, mu, sigma * np.nan)
    with pytest.raises(ValueError, match="expected means"):
        frechet_distance(mu, sigma, mu[:3], sigma)


# ----------------------------------------------------------------------------- I3D / FVD


def test_resize_is_tf1_bilinear():
    # TF1 resize_bilinear(align_corners=False): output i samples input i * in/out, edge repeated
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = resize_tf_bilinear(x, 8)
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    assert out[0, 0, :, 3].tolist() == [1.5] * 8  # constant along the other axis
    assert torch.equal(resize_tf_bilinear(x, 4), x)
    assert resize_tf_bilinear(x, 2)[0, 0, 0].tolist() == [0.0, 2.0]  # downsampling: every other


def test_i3d_layout_is_the_kinetics_port():
    keys = I3D().state_dict()
    shapes = {k: tuple(v.shape) for k, v in keys.items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4b.b0.conv3d.weight"] == (192, 480, 1, 1, 1)
    assert shapes["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in keys
    assert "logits.bn.weight" not in keys and "Mixed_3b.b3a.weight" not in keys
    blocks = {k.split(".")[0] for k in keys}
    assert len([b for b in blocks if b.startswith("Mixed_")]) == 9
    convs = [k for k in keys if k.endswith("conv3d.weight")]
    assert len(convs) == 3 + 9 * 6 + 1


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_random.pt"
    torch.save(I3D().state_dict(), path)
    return path


def _videos(n=6, t=8, size=32, seed=0):
    frames = moving_square(n, t, image_size=size, seed=seed, square=8)["frames"]
    return frames.movedim(-1, -3).float() / 255  # (B, T, 3, H, W)


def test_fvd_is_zero_on_itself_and_grows_with_noise(i3d_file):
    i3d = load_i3d(i3d_file)  # the path the CLI takes
    real = _videos()
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(real.shape, generator=gen)
    near = fvd(i3d, real, (real + 0.05 * noise).clamp(0, 1), resolution=32)
    far = fvd(i3d, real, (real + 0.3 * noise).clamp(0, 1), resolution=32)
    same = fvd(i3d, real, real, resolution=32)
    assert same <= 1e-6 * near and 0 < near < far
    # the embedding is the mean over time of the 400 logits; batching does not change it
    emb = i3d_embeddings(i3d, real, resolution=32, batch=2)
    assert emb.shape == (6, 400) and emb.dtype == torch.float64
    assert torch.allclose(emb, i3d_embeddings(i3d, real, resolution=32, batch=6), atol=1e-5)


def test_i3d_file_round_trip_and_wrappers(tmp_path, i3d_file):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    state = torch.load(i3d_file, weights_only=True)
    ref = I3D()
    ref.load_state_dict(state)
    want = ref.eval()(x)
    assert torch.allclose(load_i3d(i3d_file)(x), want, atol=1e-6)
    # {"state_dict": ...} with DataParallel's "module." prefix and no num_batches_tracked (old files)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items() if "num_batches" not in k}}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    assert torch.allclose(load_i3d(tmp_path / "wrapped.pt")(x), want, atol=1e-6)


class _Payload:  # pickled as a class instance: refused by weights_only
    pass


def test_bad_weights_files_are_one_line_errors(tmp_path, i3d_file):
    state = torch.load(i3d_file, weights_only=True)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    torch.save({"x": _Payload()}, tmp_path / "code.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_5c")}, tmp_path / "cut.pt")
    torch.save({**state, "logits.conv3d.weight": torch.zeros(157, 1024, 1, 1, 1)}, tmp_path / "charades.pt")
    torch.save({**state, "Mixed_6a.b0.conv3d.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    bad = dict(state)
    bad["Mixed_4b.b0.conv3d.weight"] = torch.full_like(bad["Mixed_4b.b0.conv3d.weight"], float("nan"))
    torch.save(bad, tmp_path / "nan.pt")
    torch.save(LPIPS("alex").state_dict(), tmp_path / "lpips.pt")
    cases = {
        "missing.pt": "I3D weights not found",
        "junk.pt": "not a readable I3D state dict",
        "code.pt": "not a readable I3D state dict",
        "cut.pt": "missing Mixed_5c.",
        "charades.pt": "157 classes",
        "extra.pt": "unexpected Mixed_6a.b0.conv3d.weight",
        "nan.pt": "Mixed_4b.b0.conv3d.weight holds NaN",
        "lpips.pt": "missing Conv3d_1a_7x7.conv3d.weight",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as err:
            load_i3d(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value), name


# ----------------------------------------------------------------------------- LPIPS

# torchvision ``features`` indices of the convolutions, as the reference's slices keep them
_CONVS = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_SLICES = {"alex": (1, 2, 3, 4, 5), "vgg": (1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5)}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_layout_is_the_reference(net):
    keys = LPIPS(net).state_dict()
    want = [
        f"net.slice{s}.{i}.{p}"
        for s, i in zip(_SLICES[net], _CONVS[net], strict=True)
        for p in ("weight", "bias")
    ]
    chans = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}[net]
    want += [f"lin{k}.model.1.weight" for k in range(5)]
    assert list(keys) == want
    assert [tuple(keys[f"lin{k}.model.1.weight"].shape) for k in range(5)] == [(1, c, 1, 1) for c in chans]
    first = {"alex": (64, 3, 11, 11), "vgg": (64, 3, 3, 3)}[net]
    assert tuple(keys["net.slice1.0.weight"].shape) == first


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    torch.manual_seed(0)
    net = LPIPS("alex")
    with torch.no_grad():  # lin weights >= 0 as trained ones are (the reference clamps them)
        for k in range(5):
            getattr(net, f"lin{k}").model[1].weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("lpips") / "alex_random.pt"
    torch.save(net.state_dict(), path)
    return path


def test_lpips_zero_symmetric_and_grows_with_noise(lpips_file):
    net = load_lpips(lpips_file)
    assert net.net_name == "alex"
    x = _videos(n=4, t=1)[:, 0]  # (4, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    small, big = (x + 0.05 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)
    assert net(x, x).tolist() == [0.0] * 4
    d_small, d_big = net(x, small), net(x, big)
    assert torch.allclose(d_small, net(small, x), rtol=1e-5, atol=0)
    assert (d_small > 0).all() and (d_big > d_small).all()
    # batched helper: any leading shape, any chunking
    pairs = torch.stack([small, big])  # (2, 4, 3, H, W)
    got = lpips_distances(net, pairs, x.expand_as(pairs), batch=3)
    assert got.shape == (2, 4) and torch.allclose(got, torch.stack([d_small, d_big]), atol=1e-6)
    with pytest.raises(ValueError, match="at least 31"):
        net(x[..., :16, :16], x[..., :16, :16])


def test_lpips_other_layouts_load_the_same_network(tmp_path, lpips_file):
    state = torch.load(lpips_file, weights_only=True)
    x = _videos(n=2, t=1)[:, 0]
    y = _videos(n=2, t=1, seed=5)[:, 0]
    want = load_lpips(lpips_file)(x, y)
    # torchvision's alexnet() state dict merged with the reference's weights/v0.1/alex.pth
    tv = {"features." + k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("net.")}
    tv["classifier.1.weight"] = torch.zeros(8, 4)  # ignored, as torchvision's head is
    lins = {k: v for k, v in state.items() if k.startswith("lin")}
    torch.save({**tv, **lins}, tmp_path / "tv.pt")
    # the lpips package's own state dict: ModuleList duplicates and the ScalingLayer buffers
    full = {
        **state,
        **{f"lins.{k[3:]}": v for k, v in lins.items()},
        "scaling_layer.shift": torch.zeros(1, 3, 1, 1),
    }
    torch.save(full, tmp_path / "full.pt")
    # lin layers saved without dropout (model.0)
    torch.save(
        {**tv, **{k.replace("model.1", "model.0"): v for k, v in lins.items()}}, tmp_path / "nodrop.pt"
    )
    for name in ("tv.pt", "full.pt", "nodrop.pt"):
        assert torch.allclose(load_lpips(tmp_path / name)(x, y), want, atol=1e-6), name
    torch.save(tv, tmp_path / "trunk_only.pt")
    with pytest.raises(CheckpointError, match=r"missing lin0\.model\.1\.weight"):
        load_lpips(tmp_path / "trunk_only.pt")
    torch.save(I3D().state_dict(), tmp_path / "i3d.pt")
    with pytest.raises(CheckpointError, match="no trunk"):
        load_lpips(tmp_path / "i3d.pt")


# ----------------------------------------------------------------------------- evaluation


def _static(n, t=6, size=32, seed=0):
    frames = moving_square(n, 1, image_size=size, seed=seed, square=8)["frames"]
    return frames.expand(n, t, size, size, 3).contiguous()


def test_evaluate_adds_lpips_and_fvd(lpips_file, i3d_file):
    torch.manual_seed(0)
    model = make("svg-lp", preset="tiny", image_size=32).eval()
    data = SyntheticDataset({"frames": _static(3), "actions": torch.zeros(3, 6, 4)})
    kw = dict(n_past=2, n_future=4, samples=3, max_rollouts=6)
    plain = score_predictions(model, data, **kw)
    res = score_predictions(
        model, data, **kw, lpips=load_lpips(lpips_file), i3d=load_i3d(i3d_file), fvd_resolution=32
    )
    assert res.psnr == plain.psnr and res.ssim == plain.ssim  # the old numbers are untouched
    report, old = res.to_json(), plain.to_json()
    assert not {"lpips", "lpips_mean", "fvd", "perceptual"} & set(old)
    assert len(report["lpips"]) == 4 and report["lpips_mean"] <= report["mean_of_n"]["lpips_mean"]
    # static videos: the copy-last baseline is the truth itself
    assert report["baseline"]["lpips"] == [0.0] * 4 and report["baseline"]["fvd"] == pytest.approx(
        0, abs=1e-6
    )
    assert report["fvd"] > 1e3 * max(report["baseline"]["fvd"], 1e-9)
    assert report["perceptual"] == {
        "lpips_net": "alex",
        "fvd_videos": 3,
        "fvd_frames": 6,
        "fvd_resolution": 32,
    }
    with pytest.raises(ValueError, match="at least 2 sequences"):
        score_predictions(model, data, **kw, sequences=1, i3d=load_i3d(i3d_file))


@pytest.fixture
def eval_setup(tmp_path):
    write_png_dataset(tmp_path / "data", {"train": _static(2), "test": _static(3, seed=1)})
    torch.manual_seed(0)
    ckpt = save(make("svg-lp", preset="tiny", image_size=32), tmp_path / "m.pt", step=3)
    base = ["eval", str(ckpt), "--data", str(tmp_path / "data"), "--samples", "2", "--n-future", "4"]
    return tmp_path, base


def test_cli_eval_writes_fvd_and_lpips(eval_setup, lpips_file, i3d_file, capsys):
    tmp_path, base = eval_setup
    out = tmp_path / "eval.json"
    flags = ["--lpips-weights", str(lpips_file), "--fvd-weights", str(i3d_file), "--fvd-resolution", "32"]
    assert main([*base, *flags, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert len(r["lpips"]) == 4 and r["lpips_mean"] == pytest.approx(np.mean(r["lpips"]))
    assert r["fvd"] > 0 and r["baseline"]["lpips_mean"] == 0.0 and "lpips_mean" in r["mean_of_n"]
    assert r["perceptual"]["fvd_frames"] == 6 and r["perceptual"]["fvd_videos"] == 3
    assert f"LPIPS {r['lpips_mean']:.4f}" in printed and f"FVD {r['fvd']:.1f}" in printed


def test_cli_eval_bad_weights_exit_2_one_line(eval_setup, lpips_file, i3d_file, capsys):
    tmp_path, base = eval_setup
    out = tmp_path / "eval.json"
    cases = [
        (["--fvd-weights", str(tmp_path / "nope.pt")], "--fvd-weights: ", "I3D weights not found"),
        (["--fvd-weights", str(lpips_file)], "--fvd-weights: ", "not I3D (Kinetics-400) weights"),
        (["--lpips-weights", str(i3d_file)], "--lpips-weights: ", "not LPIPS weights"),
        (["--fvd-resolution", "32"], "--fvd-resolution", "needs --fvd-weights"),
    ]
    for flags, flag, message in cases:
        assert main([*base, *flags, "--json", str(out)]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"worldmodel eval: error: {flag}") and message in err, err
        assert "\n" not in err and not out.exists()
