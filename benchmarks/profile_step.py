"""Where a step's time goes: ``torch.profiler`` tables for the trainer's step and the dream's step.

    python benchmarks/profile_step.py train [--model svg-lp] [--preset tiny] [--image-size 64]
    python benchmarks/profile_step.py dream [--envs 256] [--dtype float32|bfloat16]
    python benchmarks/profile_step.py train --device cuda --amp bf16   # CUDA kernels on a GPU

``train`` profiles ``Trainer.train_step`` (loss, backward, clipping, Adam) on moving-square data
at the demo's size (tiny SVG, 64 px, batch 16); ``dream`` profiles ``DreamVecEnv.step`` (the
batched model step, reward, observation hand-off). Prints the ops by self time (CPU, or CUDA
when on a GPU), then the share of the top op groups, last the step time. ``--trace FILE`` also
writes a Chrome trace.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from worldmodel.perf import keep_freed_memory


def _train_step(args, tmp: str):
    from worldmodel.data.synthetic import SyntheticDataset
    from worldmodel.dynamics import make
    from worldmodel.training.batches import to_device
    from worldmodel.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = make(args.model, preset=args.preset, image_size=args.image_size)
    cfg = model.config
    data = SyntheticDataset.moving_square(
        64, cfg.seq_len, image_size=cfg.image_size, square=max(3, cfg.image_size // 8)
    )
    tcfg = TrainConfig(batch_size=args.batch_size, sample_every=0, device=args.device, amp=args.amp)
    trainer = Trainer(model, data, tmp, tcfg)
    batch = to_device(next(trainer._batches(1)), trainer.device)
    return lambda: trainer.train_step(batch), trainer.device


def _dream_step(args):
    from worldmodel.dynamics import make
    from worldmodel.dynamics.heads import ObjectHead
    from worldmodel.envs.dream import DreamConfig, DreamCore
    from worldmodel.envs.dream_vec import DreamVecEnv

    torch.manual_seed(0)
    model = make(args.model, preset=args.preset, image_size=args.image_size).to(args.device).eval()
    cfg = DreamConfig(pool_size=64, horizon=50, dtype=args.dtype)
    core = DreamCore(model, cfg, head=ObjectHead(model.feature_dim), device=args.device)
    vec = DreamVecEnv(core, args.envs)
    vec.seed(0)
    vec.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (16, args.envs, 4)).astype(np.float32)
    k = [0]

    def step():
        vec.step(actions[k[0] % 16])
        k[0] += 1

    return step, core.device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "dream"])
    p.add_argument("--model", default="svg-lp")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="train: batch size")
    p.add_argument("--amp", default="none", choices=["none", "bf16"], help="train: autocast")
    p.add_argument("--envs", type=int, default=256, help="dream: batch size")
    p.add_argument("--dtype", default="auto", help="dream: DreamConfig.dtype")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rows", type=int, default=20, help="table rows")
    p.add_argument("--trace", default=None, metavar="FILE", help="also write a Chrome trace")
    args = p.parse_args()
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        step, device = _train_step(args, tmp) if args.what == "train" else _dream_step(args)
        cuda = device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for _ in range(3):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        ms = (time.perf_counter() - t) / args.steps * 1000
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            sync()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    print(events.table(sort_by=key, row_limit=args.rows))
    total = sum(getattr(e, key) for e in events)
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:6]
    shares = ", ".join(f"{e.key} {100 * getattr(e, key) / total:.0f}%" for e in top)
    print(f"top self time: {shares}")
    if args.trace:
        prof.export_chrome_trace(args.trace)
    what = f"{args.model}:{args.preset}, {args.image_size} px, device={device}"
    print(f"{args.what} step: {ms:.2f} ms ({what})")


if __name__ == "__main__":
    main()
