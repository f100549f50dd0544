"""Reliability of checkpoints and heads: stale or foreign heads are refused, a diverged run never
overwrites a good checkpoint, non-finite models are refused on load, resume applies --lr and
keeps metrics.jsonl one line per step, checkpoint files follow the umask, a full disk loses
nothing."""

from __future__ import annotations

import errno
import json
import os
import types
import warnings

import pytest
import torch
from train_stubs import write_png_dataset

from worldmodel import dynamics
from worldmodel.cli import main
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics.checkpoint import NonFiniteError, checkpoint_dict, model_sha256, read
from worldmodel.dynamics.heads import (
    ObjectHead,
    find_head,
    fit_record,
    head_path_for,
    load_head,
    save_head,
    select_head,
)
from worldmodel.errors import CheckpointError
from worldmodel.training.trainer import TrainConfig, Trainer, TrainingDivergedError

PLAN = ["--population", "4", "--elites", "2", "--horizon", "2", "--iterations", "1", "--max-steps", "2"]
PLAN += ["--episodes", "1", "--oracle-budget", "0", "--device", "cpu", "--threads", "1"]


def _svg(seed=0):
    torch.manual_seed(seed)
    return dynamics.make("svg-lp", preset="tiny", batch_size=4)  # 16 px, BatchNorm


def _data():
    return SyntheticDataset.moving_square(16, 7, image_size=16, seed=0)


def _trainer(out, steps, **kw):
    cfg = TrainConfig(**{"steps": steps, "log_every": 1, "ckpt_every": 2, "sample_every": 0, **kw})
    return Trainer(_svg(), _data(), out, cfg)


def _png_data(root):
    frames = {
        s: moving_square(4, 8, image_size=16, seed=i)["frames"] for i, s in enumerate(("train", "test"))
    }
    write_png_dataset(root, frames)
    return root


# --- heads: stale, foreign, old ----------------------------------------------------------------


def _is_the_file(head, path) -> bool:
    """``head`` holds exactly the weights stored in the head file ``path``."""
    stored = torch.load(path, weights_only=True)["weights"]
    got = head.state_dict()
    return got.keys() == stored.keys() and all(torch.equal(got[k], stored[k]) for k in got)


def test_train_head_records_the_checkpoint_and_a_resumed_run_makes_the_head_stale(tmp_path, capsys):
    """The whole story: train 2 steps, `worldmodel train-head`, the head is used without a word;
    `train --resume` rewrites last.pt, and plan, the dream, agents.train and find_head refuse it."""
    from worldmodel.envs.collect import CollectConfig, collect

    collect(CollectConfig(out=tmp_path / "sim", episodes=4, seq_len=8, seed=0, image_size=16, workers=0))
    run = tmp_path / "run"
    _trainer(run, 2).fit()
    ckpt = run / "checkpoints" / "last.pt"
    args = ["train-head", str(ckpt), "--data", str(tmp_path / "sim"), "--steps", "3", "--device", "cpu"]
    assert main([*args, "--episodes", "3", "--val-episodes", "1"]) == 0
    record = torch.load(head_path_for(ckpt), weights_only=True)["fitted_to"]
    model = dynamics.load(ckpt, device="cpu")
    assert record == {"checkpoint": str(ckpt), "step": 2, "weights_sha256": model_sha256(model)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching head: no warning either
        assert _is_the_file(find_head(ckpt, model=model), head_path_for(ckpt))
        head, source = select_head(ckpt, model)
        assert source == "file" and head.feature_dim == model.feature_dim

    trainer = _trainer(run, 4)  # `worldmodel train --resume`: last.pt moves on to step 4
    trainer.resume()
    trainer.fit()
    assert read(ckpt)["step"] == 4
    stale = r"last\.head\.pt was fitted to .*last\.pt at step 2; .*last\.pt is now at step 4: "
    stale += r"re-run `worldmodel train-head"
    with pytest.raises(CheckpointError, match=stale):
        find_head(ckpt)
    new_model = dynamics.load(ckpt, device="cpu")
    with pytest.raises(CheckpointError, match=stale):
        select_head(ckpt, new_model)
    capsys.readouterr()
    assert main(["plan", str(ckpt), *PLAN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at step 2" in err and "now at step 4" in err
    from worldmodel.envs.dream import DreamEnv

    with pytest.raises(CheckpointError, match=stale):
        DreamEnv(str(ckpt), reward="learned", image_size=16, pool_size=1, device="cpu")
    from worldmodel.rl import dream_head

    with pytest.raises(CheckpointError, match=stale):
        dream_head(types.SimpleNamespace(reward="learned", head=None, checkpoint=str(ckpt)), new_model)
    # The old weights still match (a copy of the checkpoint it was fitted to is fine).
    assert _is_the_file(select_head(ckpt, model)[0], head_path_for(ckpt))


def test_stale_head_named_when_the_weights_change_at_the_same_step(tmp_path):
    model = _svg()
    ckpt = dynamics.save(model, tmp_path / "last.pt", step=3)
    save_head(
        ObjectHead(model.feature_dim, hidden=8), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 3)
    )
    assert _is_the_file(find_head(ckpt), head_path_for(ckpt))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    dynamics.save(model, ckpt, step=3)
    with pytest.raises(CheckpointError, match=r"at step 3; .*last\.pt is now at step 3 with other weights"):
        find_head(ckpt)
    # Against a model alone (the dream's checkpoint=LatentDynamics): the model has other weights.
    with pytest.raises(CheckpointError, match=r"the model it is used with has other weights"):
        load_head(head_path_for(ckpt), model=_svg(seed=1))


def test_head_of_another_feature_size_is_refused_by_plan_and_the_dream(tmp_path, capsys):
    model = _svg()
    ckpt = dynamics.save(model, tmp_path / "last.pt", step=1)
    other_dim = model.feature_dim + 5
    wrong = tmp_path / "other.head.pt"
    save_head(ObjectHead(other_dim, hidden=8), wrong, fitted_to={"step": 9, "weights_sha256": "0" * 64})
    assert main(["plan", str(ckpt), "--head", str(wrong), *PLAN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(wrong) in err and str(ckpt) in err
    assert f"reads {other_dim} features" in err and f"gives {model.feature_dim}" in err
    from worldmodel.envs.dream import DreamEnv

    sizes = rf"other\.head\.pt: the head reads {other_dim} features but the model of .*last\.pt "
    sizes += rf"gives {model.feature_dim}"
    with pytest.raises(CheckpointError, match=sizes):
        DreamEnv(str(ckpt), head=str(wrong), image_size=16, pool_size=1, device="cpu")
    # The side file too, whatever its record says.
    save_head(ObjectHead(other_dim, hidden=8), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 1))
    with pytest.raises(CheckpointError, match=rf"last\.head\.pt: the head reads {other_dim} features"):
        select_head(ckpt, dynamics.load(ckpt, device="cpu"))


def test_head_without_a_record_loads_with_a_warning(tmp_path):
    model = _svg()
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    head = ObjectHead(model.feature_dim, hidden=8)
    torch.nn.init.normal_(head.net[-1].weight)
    save_head(head, head_path_for(ckpt))  # as written before heads recorded their checkpoint
    with pytest.warns(UserWarning, match=r"last\.head\.pt: this head file does not record which checkpoint"):
        found, source = select_head(ckpt, model)
    f, q = torch.randn(2, model.feature_dim), torch.randn(2, 3)
    assert source == "file" and torch.allclose(found(f, q), head(f, q))


def test_a_head_stored_in_the_checkpoint_matches_by_construction(tmp_path):
    from worldmodel.dynamics.checkpoint import atomic_save

    model = _svg()
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    atomic_save(
        {**read(ckpt), "heads": {"object_pos": ObjectHead(model.feature_dim, hidden=8).to_dict()}}, ckpt
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head, source = select_head(ckpt, model)
    assert source == "checkpoint" and head.feature_dim == model.feature_dim


# --- non-finite checkpoints ---------------------------------------------------------------------


def test_divergence_keeps_the_previous_finite_checkpoint_and_exits_non_zero(tmp_path, capsys):
    """`worldmodel train svg-lp --lr 1e6`: the failed forward pass spoils the BatchNorm statistics
    of the last "good" step; nothing is saved over the previous checkpoint."""
    data, run = _png_data(tmp_path / "data"), tmp_path / "run"
    base = ["train", "svg-lp", "--preset", "tiny", "--data", str(data), "--out", str(run), "--no-progress"]
    base += ["--set", "batch_size=4", "--sample-every", "0", "--log-every", "1"]
    assert main([*base, "--steps", "2"]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    rc = main([*base, "--resume", "--steps", "40", "--ckpt-every", "20", "--lr", "1e6"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2
    assert "training diverged at step" in err and "not saved" in err and f"{ckpt} (step 2)" in err
    assert ckpt.read_bytes() == before  # the step-2 checkpoint, untouched
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
    dynamics.load(ckpt, device="cpu")  # finite


def test_save_refuses_and_load_refuses_a_nan_buffer(tmp_path, capsys):
    model = _svg()
    path = dynamics.save(model, tmp_path / "m.pt", step=1)
    before = path.read_bytes()
    name = next(k for k in model.state_dict() if k.endswith("running_var"))
    model.state_dict()[name].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=rf"m\.pt: not written: weights\.{name} holds NaN"):
        dynamics.save(model, path, step=2)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]
    torch.save(checkpoint_dict(model, step=2), path)  # written by something that does not check
    with pytest.raises(CheckpointError, match=rf"m\.pt: weights\.{name} holds NaN or infinite values"):
        dynamics.load(path, device="cpu")
    assert main(["eval", str(path), "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert name in err and "m.pt" in err
    trainer = _trainer(tmp_path / "run", 4)  # resuming from it, too
    optimizers = {k: opt.state_dict() for k, opt in trainer.optimizers.items()}
    torch.save(checkpoint_dict(model, step=2, optimizers=optimizers), path)
    with pytest.raises(CheckpointError, match=name):
        trainer.resume(path)


# --- trainer bookkeeping ------------------------------------------------------------------------


def test_lr_given_on_resume_is_the_lr_that_runs_and_is_recorded(tmp_path):
    _trainer(tmp_path, 2).fit()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    preset = read(ckpt)["optimizers"]["model"]["param_groups"][0]["lr"]
    trainer = _trainer(tmp_path, 4, lr=preset / 7)
    trainer.resume()
    lrs = [g["lr"] for opt in trainer.optimizers.values() for g in opt.param_groups]
    assert lrs and all(lr == preset / 7 for lr in lrs)
    trainer.fit()
    saved = read(ckpt)
    assert saved["extra"]["train_config"]["lr"] == preset / 7
    assert all(g["lr"] == preset / 7 for g in saved["optimizers"]["model"]["param_groups"])
    # Without --lr the restored learning rate stays.
    again = _trainer(tmp_path, 6)
    again.resume()
    assert all(g["lr"] == preset / 7 for g in again.optimizers["model"].param_groups)


def test_metrics_have_each_step_once_after_a_kill_and_resume(tmp_path):
    _trainer(tmp_path, 4).fit()  # checkpoint at step 4
    metrics = tmp_path / "metrics.jsonl"
    # A run killed after logging steps 5 and 6 (and half of 7), before its step-6 checkpoint.
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": 5, "loss": -1.0}) + "\n" + json.dumps({"step": 6, "loss": -1.0}) + "\n")
        f.write('{"step": 7, "lo')
    trainer = _trainer(tmp_path, 8)
    trainer.resume()
    trainer.fit()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all(r["loss"] > 0 for r in rows)  # the dead run's rows are gone


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = dynamics.save(_svg(), tmp_path / "m.pt")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask == plain.stat().st_mode & 0o777


def test_full_disk_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    data, run = _png_data(tmp_path / "data"), tmp_path / "run"
    base = ["train", "svg-lp", "--preset", "tiny", "--data", str(data), "--out", str(run), "--no-progress"]
    base += ["--set", "batch_size=4", "--sample-every", "0"]
    assert main([*base, "--steps", "2"]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        if hasattr(f, "write"):
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert main([*base, "--resume", "--steps", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = err[-1:]
    assert "disk is full" in err[0] and f"the previous {ckpt} survived intact" in err[0]
    assert "step 4 not saved" in err[0] and "holds step 2" in err[0]
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
    # os.fsync failing the same way, through the library call.
    monkeypatch.setattr(torch, "save", real_save)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match=r"disk is full.*survived intact"):
        dynamics.save(_svg(seed=3), ckpt, step=9)
    assert ckpt.read_bytes() == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]


def test_divergence_with_a_finite_state_still_saves_the_last_good_step(tmp_path):
    """Regression guard: the refusal only bites when the state is spoiled."""
    from train_stubs import TinyConfig, TinyPredictor

    torch.manual_seed(0)
    model = TinyPredictor(TinyConfig(n_future=5))  # no BatchNorm: the state stays finite
    model.nan_at_call = 4
    trainer = Trainer(model, _data(), tmp_path, TrainConfig(steps=9, ckpt_every=2, sample_every=0))
    with pytest.raises(TrainingDivergedError, match=r"at step 4: .*last good checkpoint: .*\(step 3\)"):
        trainer.fit()
    assert read(tmp_path / "checkpoints" / "last.pt")["step"] == 3
