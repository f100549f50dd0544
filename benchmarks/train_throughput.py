"""Training throughput (frames/s) of the trainer's step: eager fp32 vs bf16 autocast vs torch.compile.

    python benchmarks/train_throughput.py [--model svg-lp] [--preset tiny] [--steps 20] [--device auto]

Each mode trains a fresh copy of the model (same seed) on moving-square data of the model's image
size through ``Trainer.train_step`` (loss, backward, gradient norms, NaN check, optimiser step),
after warm-up steps (compilation happens there). Also reports how fast the trainer's own data
pipeline (seeded per-step sampler + DataLoader) yields frames, to compare with what training
consumes. Ratios are measured in one run; the last line is the headline figure.
"""

from __future__ import annotations

import argparse
import time

import torch

from worldmodel.data.synthetic import SyntheticDataset
from worldmodel.dynamics import build_config, make, resolve_device
from worldmodel.training.trainer import TrainConfig, Trainer, _to_device


def _trainer(args, out, **kw) -> Trainer:
    torch.manual_seed(0)
    model = make(args.model, preset=args.preset)
    cfg = model.config
    data = SyntheticDataset.moving_square(
        256, cfg.seq_len, image_size=cfg.image_size, square=max(3, cfg.image_size // 8)
    )
    tcfg = TrainConfig(batch_size=args.batch_size, sample_every=0, device=args.device, **kw)
    return Trainer(model, data, out, tcfg)


def _frames_per_s(trainer: Trainer, steps: int, warmup: int) -> float:
    batch = _to_device(next(trainer._batches(1)), trainer.device)
    for _ in range(warmup):
        trainer.train_step(batch)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    sync()
    return steps * batch["frames"].shape[0] * batch["frames"].shape[1] / (time.perf_counter() - t0)


def _loader_frames_per_s(trainer: Trainer, steps: int) -> float:
    it = trainer._batches(1)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        b = next(it)
        n += b["frames"].shape[0] * b["frames"].shape[1]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="svg-lp")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode (slow warm-up)")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = build_config(args.model, args.preset)
    print(
        f"{args.model} preset={args.preset} image={cfg.image_size} T={cfg.seq_len} "
        f"batch={args.batch_size or cfg.batch_size} device={device} threads={torch.get_num_threads()}"
    )
    modes = {"eager fp32": {"amp": "none"}, "eager bf16 autocast": {"amp": "bf16"}}
    if not args.no_compile:
        modes["compiled fp32"] = {"amp": "none", "compile": True}
        if device.type == "cuda":
            modes["compiled bf16 + channels_last"] = {"amp": "bf16", "compile": True, "channels_last": True}
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in modes.items():
            trainer = _trainer(args, tmp, **kw)
            warmup = args.warmup * (3 if kw.get("compile") else 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            results[name] = _frames_per_s(trainer, args.steps, warmup)
            peak = ""
            if device.type == "cuda":
                peak = f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
            print(f"  {name:32s} {results[name]:10.1f} frames/s{peak}", flush=True)
        loader = _loader_frames_per_s(_trainer(args, tmp), args.steps)
    base = results["eager fp32"]
    print("ratios vs eager fp32: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in results.items()))
    print(
        f"data pipeline (main process, synthetic): {loader:.0f} frames/s = "
        f"{loader / max(results.values()):.1f}x "
        "what the fastest mode consumes"
    )
    best = max(results, key=results.get)
    print(f"train throughput: {results[best]:.1f} frames/s ({best}), {results[best] / base:.2f}x eager fp32")


if __name__ == "__main__":
    main()
