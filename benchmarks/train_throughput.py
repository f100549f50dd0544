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
from worldmodel.training.batches import to_device
from worldmodel.training.trainer import TrainConfig, Trainer


def _size(args) -> dict[str, int]:
    return {"image_size": args.image_size} if args.image_size else {}


def _trainer(args, out, **kw) -> Trainer:
    torch.manual_seed(0)
    model = make(
        args.model, preset=args.preset, **({"image_size": args.image_size} if args.image_size else {})
    )
    cfg = model.config
    data = SyntheticDataset.moving_square(
        256, cfg.seq_len, image_size=cfg.image_size, square=max(3, cfg.image_size // 8)
    )
    tcfg = TrainConfig(batch_size=args.batch_size, sample_every=0, device=args.device, **kw)
    return Trainer(model, data, out, tcfg)


def _frames_per_s(trainer: Trainer, steps: int, warmup: int) -> float:
    batch = to_device(next(trainer._batches(1)), trainer.device)
    for _ in range(warmup):
        trainer.train_step(batch)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    sync()
    return steps * batch["frames"].shape[0] * batch["frames"].shape[1] / (time.perf_counter() - t0)


def _step_flops(trainer: Trainer) -> tuple[float, int]:
    """Model FLOPs of one eager training step (forward + backward; convolutions and matmuls, as
    ``torch.utils.flop_counter`` counts them; the optimiser's elementwise work is not counted),
    and the frames in that step's batch."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = to_device(next(trainer._batches(1)), trainer.device)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch)
    return float(counter.get_total_flops()), batch["frames"].shape[0] * batch["frames"].shape[1]


def _matmul_flops_per_s(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Measured dense-matmul FLOP/s in ``dtype`` on ``device``: the reference peak for MFU."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        calls += 1
        if calls % 8 == 0:
            sync()
    sync()
    return calls * 2 * n**3 / (time.perf_counter() - t0)


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
    p.add_argument("--image-size", type=int, default=None, help="override the preset's frame size")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile mode (slow warm-up)")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = build_config(
        args.model, args.preset, **({"image_size": args.image_size} if args.image_size else {})
    )
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
        step_flops, frames_per_step = _step_flops(_trainer(args, tmp))
    # Model FLOP utilisation: the model's FLOP/s at each mode's speed over the machine's measured
    # dense-matmul FLOP/s in the mode's dtype (a reachable peak; vendor peaks are higher).
    peaks = {dt: _matmul_flops_per_s(device, dt) for dt in (torch.float32, torch.bfloat16)}
    print(
        f"model FLOPs per training step {step_flops / 1e9:.2f} G; measured matmul peak "
        f"fp32 {peaks[torch.float32] / 1e12:.3f} TFLOP/s, bf16 {peaks[torch.bfloat16] / 1e12:.3f} TFLOP/s"
    )
    for name, fps in results.items():
        achieved = fps / frames_per_step * step_flops
        peak = peaks[torch.bfloat16 if modes[name]["amp"] == "bf16" else torch.float32]
        print(f"  MFU {name:32s} {achieved / 1e12:.4f} TFLOP/s = {100 * achieved / peak:.1f}% of matmul peak")
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
