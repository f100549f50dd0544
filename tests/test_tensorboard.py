"""What people look at: the TensorBoard tags of a model run and of an agent run, read back from the
event files the way TensorBoard reads them (``plugin_event_accumulator``: scalars, images and the
hparams plugin's summaries alike), and the held-out scores equal to the library's own evaluation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.util import tensor_util
from train_stubs import write_png_dataset

from worldmodel.cli import main
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import make
from worldmodel.training.control import control_diagnostics
from worldmodel.training.evaluate import score_predictions
from worldmodel.training.trainer import TrainConfig, Trainer
from worldmodel.video import add_tensorboard_video, gif_bytes

EVAL = {
    "eval/psnr",
    "eval/ssim",
    "eval/psnr_mean_of_n",
    "eval/ssim_mean_of_n",
    "eval/psnr_copy_last",
    "eval/ssim_copy_last",
}
CONTROL = {
    "control/ee_error_cm",
    "control/ee_static_cm",
    "control/target_error_cm",
    "control/target_static_cm",
    "control/rank_learned",
    "control/rank_pixels",
}
HPARAMS = {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


def _events(folder) -> EventAccumulator:
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return ea


def _by_plugin(ea: EventAccumulator) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for tag in ea.Tags()["tensors"]:
        out.setdefault(ea.SummaryMetadata(tag).plugin_data.plugin_name, set()).add(tag)
    return out


def _scalars(ea: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in ea.Tensors(tag)}


def _hparams(ea: EventAccumulator) -> tuple[dict, list[str]]:
    """The session's hparams (name -> number or text) and the experiment's metric tags."""
    content = ea.PluginTagToContent("hparams")
    start = hp_metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
    exp = hp_metadata.parse_experiment_plugin_data(content["_hparams_/experiment"])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return values, [m.name.tag for m in exp.metric_infos]


def _pushes(n: int, t: int, seed: int) -> SyntheticDataset:
    """Moving squares whose records also hold objects: object 0 slides 1 cm per step along x,
    object 1 stays, rows 2-3 absent (NaN), so the control diagnostics have a target that moves."""
    d = moving_square(n, t, image_size=16, seed=seed)
    objects = torch.full((n, t, 4, 3), math.nan)
    objects[:, :, 0] = 0.0
    objects[:, :, 0, 0] = 0.01 * torch.arange(t, dtype=torch.float32)
    objects[:, :, 1] = torch.tensor([0.1, 0.1, 0.0])
    d["objects"] = objects
    return SyntheticDataset(d)


def _svg_with_head():
    torch.manual_seed(0)
    return make("svg-lp", preset="tiny", state_head=True, batch_size=8)


CFG = dict(steps=4, log_every=2, ckpt_every=4, sample_every=4, eval_every=3, eval_sequences=3, eval_samples=2)


def test_model_run_tags_and_held_out_scores(tmp_path):
    model = _svg_with_head()
    train, held_out = _pushes(16, model.config.seq_len, 0), _pushes(5, 16, 1)
    cfg = TrainConfig(**CFG, seed=1)
    trainer = Trainer(model, train, tmp_path / "run", cfg, eval_data=held_out)
    result = trainer.fit()

    ea = _events(tmp_path / "run" / "tb")
    losses = {"loss", "grad_norm", "lr", "frames_per_s"}
    metrics = {f"metrics/{k}" for k in ("loss", "mse", "kld", "state_ee_cm", "state_obj_cm")}
    assert _by_plugin(ea) == {
        "scalars": losses | metrics | EVAL | CONTROL,
        "images": {"samples/grid", "samples/video"},  # the video: an animated GIF, as add_video's
        "hparams": HPARAMS,
    }
    assert sorted(_scalars(ea, "loss")) == [2, 4]
    assert sorted(_scalars(ea, "eval/psnr")) == sorted(_scalars(ea, "control/rank_pixels")) == [3, 4]

    # The last held-out scores are evaluate's and control_diagnostics' on the first 3 held-out
    # sequences with the run's seed (TensorBoard keeps float32; metrics.jsonl the exact float).
    model.eval()
    items = [held_out[i] for i in range(3)]
    c = model.config
    direct = score_predictions(
        model, items, n_past=c.n_past, n_future=c.n_future, samples=2, seed=1
    ).to_json()
    control = control_diagnostics(model, items, ks=(10,), candidates=7, seed=1, context=2, windows="moving")
    expect = {
        "eval/psnr": direct["psnr_mean"],
        "eval/ssim": direct["ssim_mean"],
        "eval/psnr_mean_of_n": direct["mean_of_n"]["psnr_mean"],
        "eval/ssim_mean_of_n": direct["mean_of_n"]["ssim_mean"],
        "eval/psnr_copy_last": direct["baseline"]["psnr_mean"],
        "eval/ssim_copy_last": direct["baseline"]["ssim_mean"],
        **{f"control/{k}": v for k, v in control["per_k"]["10"].items() if "error" in k or "static" in k},
        "control/rank_learned": control["ranking"]["learned"]["rank_score"],
        "control/rank_pixels": control["ranking"]["pixels"]["rank_score"],
    }
    expect = {k: v for k, v in expect.items() if not k.startswith("control/object")}
    assert set(expect) == EVAL | CONTROL
    for tag, value in expect.items():
        assert _scalars(ea, tag)[4] == float(np.float32(value)), tag
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4]
    assert set(rows[1]) == {"step"} | EVAL | CONTROL  # an eval step that is no log step: its own line
    assert {k: rows[2][k] for k in expect} == expect  # the final log line carries the scores too

    # hparams: once, in tb/ itself, the configs with the loss and held-out tags as metrics.
    values, metric_tags = _hparams(ea)
    assert metric_tags == ["loss", *expect]  # the order of the module docstring's list
    assert values["model"] == "svg-lp" and values["model.state_head"] == "true"
    assert values["model.betas"] == "0.9,0.999" and values["model.n_future"] == c.n_future
    assert values["train.steps"] == 4 and values["train.eval_every"] == 3 and values["train.seed"] == 1
    assert values["train.batch_size"] == 8 and values["train.lr"] == pytest.approx(c.lr)  # resolved
    assert all(p.is_file() for p in (tmp_path / "run" / "tb").iterdir())  # no add_hparams subfolder

    # Scoring changes nothing in training: the same run without held-out data, loss for loss.
    plain = Trainer(_svg_with_head(), train, tmp_path / "plain", cfg).fit()
    assert plain.history == result.history
    assert "eval/psnr" not in _by_plugin(_events(tmp_path / "plain" / "tb"))["scalars"]


def test_resume_keeps_one_hparams_entry_and_logs_every_step_once(tmp_path):
    """A run killed after its step-2 checkpoint (it went on to log 3 and 4), then resumed from it:
    TensorBoard shows each step once, with the resumed values, and one hparams session."""
    data = _pushes(16, 7, 0)
    cfg = TrainConfig(steps=4, log_every=1, ckpt_every=2, keep_every=2, sample_every=0, eval_every=0)
    first = Trainer(_svg_with_head(), data, tmp_path, cfg)
    killed = first.fit()
    second = Trainer(_svg_with_head(), data, tmp_path, cfg)
    assert second.resume(tmp_path / "checkpoints" / "step_0000002.pt") == 2
    resumed = second.fit()
    ea = _events(tmp_path / "tb")
    assert [e.step for e in ea.Tensors("loss")] == [1, 2, 3, 4]  # 2 kept; the killed run's 3, 4 purged
    assert [e.step for e in ea.Tensors("_hparams_/session_start_info")] == [0]
    history = {**killed.history, **resumed.history}
    assert {s: float(np.float32(v["loss"])) for s, v in history.items()} == _scalars(ea, "loss")

    # A fresh run in that folder (its checkpoints gone) replaces everything, hparams included.
    for ckpt in (tmp_path / "checkpoints").iterdir():
        ckpt.unlink()
    Trainer(_svg_with_head(), data, tmp_path, dataclasses.replace(cfg, steps=2)).fit()
    ea = _events(tmp_path / "tb")
    assert [e.step for e in ea.Tensors("loss")] == [1, 2]
    assert [e.step for e in ea.Tensors("_hparams_/session_start_info")] == [0]


def test_gif_video_round_trip():
    """The TensorBoard video is an animated GIF of exactly the given frames (few colours: no
    quantisation), at the given speed."""
    rng = np.random.default_rng(0)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0], [20, 30, 250]], np.uint8)
    frames = palette[rng.integers(0, 4, (5, 6, 7))]  # (T=5, H=6, W=7, 3), every frame different
    gif = Image.open(io.BytesIO(gif_bytes(frames, fps=10)))
    decoded = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    np.testing.assert_array_equal(np.stack(decoded), frames)
    assert [f.info["duration"] for f in ImageSequence.Iterator(gif)] == [100] * 5

    class Writer:  # SummaryWriter's one method the helper uses
        def __init__(self):
            self.summaries = []

        def _get_file_writer(self):
            return self

        def add_summary(self, summary, step):
            self.summaries.append((summary, step))

    w = Writer()
    add_tensorboard_video(w, "real/video", torch.from_numpy(frames), 7, fps=10)
    ((summary, step),) = w.summaries
    value = summary.value[0]
    assert (value.tag, step, value.image.height, value.image.width) == ("real/video", 7, 6, 7)
    assert value.image.encoded_image_string == gif_bytes(frames, fps=10)
    with pytest.raises(ValueError, match="uint8"):
        add_tensorboard_video(w, "x", frames.astype(np.float32), 0)


def test_cli_scores_the_test_split(tmp_path, capsys):
    splits = ("train", "test")
    frames = {s: moving_square(4, 12, image_size=16, seed=i)["frames"] for i, s in enumerate(splits)}
    write_png_dataset(tmp_path / "data", frames)
    args = ["train", "svg-lp", "--preset", "tiny", "--data", str(tmp_path / "data"), "--steps", "2"]
    args += ["--sample-every", "0", "--log-every", "2", "--no-progress", "--eval-samples", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--eval-every", "1", "--eval-sequences", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], EVAL <= set(r)) for r in rows] == [(1, True), (2, True)]
    assert main([*args, "--out", str(tmp_path / "b"), "--eval-every", "0"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] and not EVAL & set(rows[0])
    with pytest.raises(SystemExit) as exit_:  # argparse's one line
        main([*args, "--out", str(tmp_path / "c"), "--eval-every", "-1"])
    assert exit_.value.code == 2
    assert "--eval-every" in capsys.readouterr().err


def test_agent_run_logs_real_video_and_hparams(tmp_path):
    """A tiny real-sim PPO run: the real evaluation's episodes as ``real/video`` (the MP4's tiled
    frames, 51 of them at 10 fps), and the run's settings as hparams with the real scores as metrics."""
    from agents import train_real

    run = tmp_path / "ppo"
    args = ["--algo", "ppo", "--timesteps", "64", "--vec", "dummy", "--num-envs", "1", "--n-steps", "64"]
    args += ["--batch-size", "64", "--n-epochs", "1", "--eval-episodes", "1", "--video-episodes", "1"]
    assert train_real.run([*args, "--device", "cpu", "--no-progress", "--out", str(run)]) == 0
    ea = _events(run / "tb")
    tags = _by_plugin(ea)
    real = ["real/success_rate", "real/final_distance"]
    assert tags["images"] == {"real/video"} and tags["hparams"] == HPARAMS
    # 64 steps of one env: one training episode (TimeLimit 50) ended, so SB3 logged its return
    assert {*real, "train_env/success_rate", "rollout/ep_rew_mean", "train/loss"} <= tags["scalars"]
    (event,) = ea.Tensors("real/video")
    width, height, gif = event.tensor_proto.string_val  # the images plugin's (width, height, data)
    assert event.step == 64 and (int(width), int(height)) == (68, 68)  # 64 px + the grid's 2-px frame
    frames = list(ImageSequence.Iterator(Image.open(io.BytesIO(gif))))
    assert sum(f.info["duration"] for f in frames) == 51 * 100  # 50 steps + the reset frame, 10 fps
    values, metric_tags = _hparams(ea)
    assert metric_tags == [*real, "train_env/success_rate", "rollout/ep_rew_mean"]
    assert (values["algo"], values["env"], values["obs"], values["task"]) == ("ppo", "real", "pixels", "push")
    assert values["sb3.n_steps"] == 64 and values["sb3.batch_size"] == 64 and values["sb3.gamma"] == 0.99
    assert values["timesteps"] == 64 and "reward" not in values  # None: the sim's own reward
    row = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert _scalars(ea, "real/success_rate") == {64: row["real_success_rate"]}


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    from train_stubs import TinyConfig, TinyPredictor, join_local_group

    from worldmodel.training import distributed

    join_local_group(rank, world, port)
    try:
        torch.manual_seed(0)
        model = TinyPredictor(TinyConfig(n_future=5))
        data = SyntheticDataset.moving_square(16, 7, image_size=16, seed=2)
        held_out = SyntheticDataset.moving_square(3, 7, image_size=16, seed=3)
        cfg = TrainConfig(steps=2, batch_size=8, log_every=1, sample_every=0, eval_every=1, eval_sequences=2)
        trainer = Trainer(model, data, out_dir, cfg, eval_data=held_out)
        trainer.fit()
        torch.save({"scores": trainer.held_out_metrics()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def test_only_the_main_process_scores_under_ddp(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    main_scores, other = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["scores"] for r in (0, 1))
    assert set(main_scores) == EVAL and other == {}
    ea = _events(tmp_path / "tb")
    assert sorted(_scalars(ea, "eval/psnr")) == [1, 2]
    assert _scalars(ea, "eval/psnr")[2] == float(np.float32(main_scores["eval/psnr"]))  # seeded: same again
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
