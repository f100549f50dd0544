"""The trainer: learns, resumes exactly, stops on NaN, several optimisers, checkpoints, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_stubs import FakeGAN, TinyConfig, TinyPredictor, write_png_dataset

from worldmodel.cli import main
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import load, make
from worldmodel.dynamics.checkpoint import read
from worldmodel.training.batches import to_device
from worldmodel.training.trainer import (
    StepBatchSampler,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
)

REPO = Path(__file__).resolve().parents[1]


def _svg(seed=0):
    torch.manual_seed(seed)
    return make("svg-lp", preset="tiny", batch_size=8)


def _square_data(seq_len=7, n=32, seed=0):
    return SyntheticDataset.moving_square(n, seq_len, image_size=16, seed=seed)


def test_trainer_reduces_loss_svg(tmp_path):
    model = _svg()
    cfg = TrainConfig(steps=30, log_every=10, ckpt_every=30, sample_every=30)
    result = Trainer(model, _square_data(), tmp_path, cfg).fit()
    losses = [result.history[s]["loss"] for s in sorted(result.history)]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3, losses
    # the run folder: checkpoint, TensorBoard events, sample GIF, scalar log
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "samples" / "step_0000030.gif").stat().st_size > 0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [10, 20, 30]
    assert {"loss", "grad_norm", "lr", "frames_per_s", "metrics/mse", "metrics/kld"} <= set(logged[-1])


def test_checkpoint_is_self_describing(tmp_path):
    model = _svg()
    Trainer(model, _square_data(), tmp_path, TrainConfig(steps=2, sample_every=0)).fit()
    path = tmp_path / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)  # no code runs
    assert raw["model"] == "svg-lp" and raw["step"] == 2
    assert {"weights", "config", "optimizers", "rng", "extra"} <= set(raw)
    assert raw["extra"]["train_config"]["steps"] == 2
    rebuilt = load(path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v.cpu()), k


def _run(model, data, out, steps, resume=False, total=None):
    cfg = TrainConfig(steps=total or steps, log_every=1, ckpt_every=3, sample_every=3, seed=5)
    trainer = Trainer(model, data, out, cfg)
    if resume:
        trainer.resume()
    return trainer, trainer.fit(steps)


@pytest.mark.parametrize("which", ["svg-lp", "stub"])
def test_resume_reproduces_uninterrupted_run(tmp_path, which):
    data = _square_data()

    def fresh():
        if which == "svg-lp":
            return _svg(seed=1)
        torch.manual_seed(1)
        return TinyPredictor(TinyConfig(n_future=5))

    straight, r_all = _run(fresh(), data, tmp_path / "a", 6)
    _, r_first = _run(fresh(), data, tmp_path / "b", 3, total=6)
    # a new process would build a differently initialised model: resume must overwrite it all
    torch.manual_seed(123)
    resumed, r_second = _run(fresh(), data, tmp_path / "b", 6, resume=True)
    assert sorted(r_second.history) == [4, 5, 6]
    combined = {**r_first.history, **r_second.history}
    assert combined == r_all.history  # exact, float for float
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TinyPredictor(TinyConfig(n_future=5))
    model.nan_at_call = 6
    trainer = Trainer(model, _square_data(), tmp_path, TrainConfig(steps=20, ckpt_every=4, sample_every=0))
    with pytest.raises(TrainingDivergedError, match=r"at step 6: non-finite loss=nan.*step 5"):
        trainer.fit()
    ckpt = read(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 5
    assert all(torch.isfinite(w).all() for w in ckpt["weights"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # nothing stepped on NaN


def test_several_optimizers_each_step_their_own_parameters(tmp_path):
    torch.manual_seed(0)
    model = FakeGAN(TinyConfig(n_future=5, lr=0.1))
    trainer = Trainer(model, _square_data(), tmp_path, TrainConfig(steps=1, sample_every=0))
    batch = to_device(next(trainer._batches(1)), torch.device("cpu"))
    groups = {k: list(p) for k, p in trainer._params.items()}
    assert set(groups) == {"g", "d"}
    before = {k: [p.detach().clone() for p in ps] for k, ps in groups.items()}
    losses, _ = model.loss(batch)
    expected = {}
    for key, params in groups.items():  # each optimiser: the gradient of its own loss only
        grads = torch.autograd.grad(losses[key], params, retain_graph=True)
        expected[key] = [p0 - 0.1 * g for p0, g in zip(before[key], grads, strict=False)]
    values, metrics = trainer.train_step(batch)
    assert len(values) == 4 and "d_real" in metrics  # loss g, loss d, grad norm g, grad norm d
    for key, params in groups.items():
        for p, e in zip(params, expected[key], strict=False):
            assert torch.allclose(p, e, atol=1e-6), key


def test_step_batches_are_a_function_of_seed_and_step():
    a = StepBatchSampler(10, 4, seed=3, start_step=1)
    b = StepBatchSampler(10, 4, seed=3, start_step=3)
    it = iter(a)
    batches = [next(it) for _ in range(5)]
    assert batches[2] == next(iter(b))
    first_epoch = [i for batch in batches[:2] for i, _ in batch] + [i for i, _ in batches[2][:2]]
    assert sorted(first_epoch) == list(range(10))  # no repeats within an epoch
    halves = [StepBatchSampler(10, 4, 3, 1, rank=r, world=2).batch(1) for r in (0, 1)]
    assert halves[0] + halves[1] == a.batch(1)
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(10, 5, 3, 1, rank=0, world=2)


def _png_data(root, seq_len=12):
    frames = {
        s: moving_square(6, seq_len, image_size=16, seed=i)["frames"] for i, s in enumerate(("train", "test"))
    }
    write_png_dataset(root, frames)
    return root


def _train_args(data, out, *flags):
    """``worldmodel train`` of the tiny SVG-LP preset on ``data`` into ``out``, then ``flags``."""
    return ["train", "svg-lp", "--preset", "tiny", "--data", str(data), "--out", str(out), *flags]


def test_cli_train_and_refusals(tmp_path, capsys):
    data = _png_data(tmp_path / "data")
    out = tmp_path / "run"
    args = _train_args(
        data,
        out,
        "--steps",
        "2",
        "--set",
        "z_dim=4",
        "--set",
        "betas=0.5,0.999",
        "--sample-every",
        "2",
        "--no-progress",
    )
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "zero actions" in err
    ckpt = read(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["z_dim"] == 4 and ckpt["config"]["betas"] == [0.5, 0.999]
    assert main(args) == 2  # the run exists: refuse without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*args[:-1], "--steps", "3", "--resume", "--no-progress"]) == 0
    assert read(out / "checkpoints" / "last.pt")["step"] == 3
    assert (
        main(["train", "svg-lp", "--data", str(data), "--out", str(tmp_path / "r2"), "--set", "nope=1"]) == 2
    )
    assert "nope" in capsys.readouterr().err


def _cli(data, out, *extra):
    return [
        sys.executable,
        "-m",
        "worldmodel",
        *_train_args(
            data,
            out,
            "--steps",
            "12",
            "--log-every",
            "1",
            "--ckpt-every",
            "4",
            "--sample-every",
            "0",
            "--no-progress",
            *extra,
        ),
    ]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}  # a resumed run's later lines win


def test_kill9_then_resume_matches_uninterrupted_run(tmp_path):
    data = _png_data(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(data, tmp_path / "a"), check=True, env=env, cwd=REPO, capture_output=True)
    proc = subprocess.Popen(
        _cli(data, tmp_path / "b"), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "b" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = read(ckpt)["step"]
    assert killed_at < 12, "the run finished before it could be killed"
    subprocess.run(_cli(data, tmp_path / "b", "--resume"), check=True, env=env, cwd=REPO, capture_output=True)
    assert read(ckpt)["step"] == 12
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")
    a = read(tmp_path / "a" / "checkpoints" / "last.pt")["weights"]
    b = read(ckpt)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_head_on_data_without_states_is_a_one_line_error(tmp_path, capsys):
    data = _png_data(tmp_path / "data")
    out = tmp_path / "run"
    args = _train_args(data, out, "--steps", "2")
    assert main([*args, "--set", "state_head=true", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "state_head" in err and "records no states" in err and "Traceback" not in err
    assert not (out / "checkpoints").exists()  # refused before anything was written
