"""Batched model step: the model as trained vs its inference copies (``dynamics/inference.py``).

    python benchmarks/inference_copy.py [--model svg-lp] [--preset tiny] [--rows 256] [--rounds 5]

One ``step`` of ``--rows`` rows (the dream's and the planner's inner call) with the model's 2-D
weights channels-last (what the dream did before the copies), with ``for_inference(model)`` and,
where the model has a bf16 path, ``for_inference(model, dtype="bfloat16")``. The variants
alternate in ``--rounds`` rounds (the CPU's speed drifts on a shared VM); medians are printed,
with the largest frame difference from the plain model after one step. The last line is the
float32 copy's speed-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldmodel.dynamics import make, resolve_device
from worldmodel.dynamics.inference import for_inference
from worldmodel.perf import keep_freed_memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="svg-lp")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    keep_freed_memory()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = make(args.model, preset=args.preset, image_size=args.image_size).to(device).eval()
    plain = make(args.model, preset=args.preset, image_size=args.image_size).to(device).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        for q in plain.parameters():
            if q.dim() == 4:
                q.data = q.data.contiguous(memory_format=torch.channels_last)
    variants = {"plain (channels-last)": plain, "for_inference float32": for_inference(model)}
    if model.inference_half_modules():
        variants["for_inference bfloat16"] = for_inference(model, dtype="bfloat16")
    b, t0, s = args.rows, model.config.n_past, args.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, t0, s, s, 3), dtype=torch.uint8, generator=g).to(device)
    actions = (torch.rand(b, max(t0 - 1, 0), 4, generator=g) * 2 - 1).to(device)
    action = (torch.rand(b, 4, generator=g) * 2 - 1).to(device)
    noise = torch.randn(b, model.noise_dim, generator=g).to(device) if model.noise_dim else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        # A gather, as the dream's reset does: states laid out as they are in a rollout.
        states = {k: m.initial(frames, actions)[torch.arange(b, device=device)] for k, m in variants.items()}
        first = {k: m.decode(m.step(states[k], action, noise=noise)) for k, m in variants.items()}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, m in variants.items():
                sync()
                t = time.perf_counter()
                for _ in range(args.steps):
                    m.step(states[k], action, noise=noise)
                sync()
                times[k].append((time.perf_counter() - t) / args.steps * 1000)
    print(f"{args.model}:{args.preset} {s} px, {b} rows, device={device}, threads={torch.get_num_threads()}")
    base = float(np.median(times["plain (channels-last)"]))
    ref = first["plain (channels-last)"]
    for k, v in times.items():
        ms = float(np.median(v))
        err = (first[k] - ref).abs().max().item()
        print(f"  {k:24s} {ms:8.2f} ms/step  {base / ms:5.2f}x  max |frame diff| {err:.1e}")
    fast = float(np.median(times["for_inference float32"]))
    print(f"for_inference float32 vs plain: {base / fast:.2f}x")


if __name__ == "__main__":
    main()
