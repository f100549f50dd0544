"""VideoFlow throughput: training frames/s (with and without gradient checkpointing), likelihood
scoring frames/s, and sampling steps/s (one row and a batch of rows).

    python benchmarks/videoflow_throughput.py [--preset tiny] [--steps 10] [--threads 1] [--device cpu]

Training goes through ``Trainer.train_step`` (loss, backward, NaN check, optimiser step) on
moving-square windows of the preset's length, after the data-dependent init and warm-up steps;
frames/s counts every frame of the window (context frames are encoded too, only targets are
scored). Sampling rolls out ``--horizon`` steps from a context (each step: temporal priors at
every level + the inverse flow); ``row-steps/s`` = rows × steps / s. Ratios are from one run; the
last line is the headline figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.dynamics import make, resolve_device
from worldmodel.training.batches import to_device
from worldmodel.training.trainer import TrainConfig, Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_frames_per_s(args, device: torch.device, checkpointing: bool) -> float:
    torch.manual_seed(0)
    model = make("videoflow", preset=args.preset, checkpointing=checkpointing)
    c = model.config
    data = SyntheticDataset.moving_square(256, c.seq_len, image_size=c.image_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, data, out, TrainConfig(sample_every=0, device=str(device), amp="none"))
        batch = to_device(next(trainer._batches(1)), trainer.device)
        for _ in range(args.warmup):
            trainer.train_step(batch)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(batch)
        _sync(device)
        elapsed = time.perf_counter() - t0
    return args.steps * batch["frames"].shape[0] * batch["frames"].shape[1] / elapsed


@torch.no_grad()
def _sampling(args, device: torch.device, rows: int) -> float:
    torch.manual_seed(0)
    model = make("videoflow", preset=args.preset).to(device)
    c = model.config
    data = moving_square(rows, c.n_past + args.horizon, image_size=c.image_size, seed=1)
    model.train().loss({k: v.to(device) for k, v in data.items() if k in ("frames", "actions")})  # init
    model.eval()
    frames, actions = data["frames"].to(device), data["actions"].to(device)
    state = model.initial(frames[:, : c.n_past], actions[:, : c.n_past - 1])
    future = actions[:, c.n_past - 1 : c.n_past - 1 + args.horizon]
    gen = torch.Generator(device).manual_seed(0)
    model.rollout(state, future[:, :2], generator=gen)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    model.rollout(state, future, generator=gen)
    _sync(device)
    return rows * args.horizon / (time.perf_counter() - t0)


@torch.no_grad()
def _scoring_frames_per_s(args, device: torch.device) -> float:
    torch.manual_seed(0)
    model = make("videoflow", preset=args.preset).to(device)
    c = model.config
    data = moving_square(64, c.n_past + 10, image_size=c.image_size, seed=2)
    frames, actions = data["frames"].to(device), data["actions"].to(device)
    model.train().loss({"frames": frames[:16, : c.seq_len], "actions": actions[:16, : c.seq_len]})
    model.eval()
    model.bits_per_dim(frames[:4], actions[:4], c.n_past)
    _sync(device)
    t0 = time.perf_counter()
    model.bits_per_dim(frames, actions, c.n_past)
    _sync(device)
    return frames.shape[0] * 10 / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--horizon", type=int, default=10, help="sampled steps per rollout")
    p.add_argument("--rows", type=int, default=64, help="rows of the batched rollout")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    plain = _train_frames_per_s(args, device, checkpointing=False)
    ckpt = _train_frames_per_s(args, device, checkpointing=True)
    scoring = _scoring_frames_per_s(args, device)
    one = _sampling(args, device, rows=1)
    many = _sampling(args, device, rows=args.rows)
    print(f"videoflow {args.preset} on {device} ({args.threads} thread(s))")
    print(
        f"  training:  {plain:.0f} frames/s; gradient checkpointing {ckpt:.0f} frames/s ({ckpt / plain:.2f}x)"
    )
    print(f"  scoring (bits_per_dim, {args.preset} model, 10 target frames): {scoring:.0f} frames/s")
    print(
        f"  sampling:  1 row {one:.1f} steps/s; {args.rows} rows {many:.0f} row-steps/s ({many / one:.1f}×)"
    )
    print(
        f"videoflow {args.preset}: training {plain:.0f} frames/s, sampling {one:.1f} steps/s "
        f"(1 row) / {many:.0f} row-steps/s ({args.rows} rows)"
    )


if __name__ == "__main__":
    main()
