"""VGAN throughput: training frames/s, and sampling by ``step`` vs by ``rollout`` (generator calls
and steps/s), measured in one run.

    python benchmarks/vgan_throughput.py [--preset tiny] [--batch 64] [--horizon 28] [--threads 1]

Training: ``loss`` + both backward passes (each on its own parameters, as the trainer does) + both
Adam steps on moving-square data, after warm-up. Sampling: an ``H``-step rollout of ``--batch``
rows from ``initial``, once by calling ``step`` ``H`` times (one generator call per step) and once
by ``rollout`` (one call per clip segment, ``ceil(H / (clip_len − 1))``). The last line is the
headline figure: rollout's speed-up over stepping and the ratio of generator calls.
"""

from __future__ import annotations

import argparse
import time

import torch

from worldmodel.data.synthetic import moving_square
from worldmodel.dynamics import make, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_frames_per_s(model, data, steps: int, warmup: int = 2) -> float:
    opts = model.optimizers()
    params = {k: [p for g in o.param_groups for p in g["params"]] for k, o in opts.items()}
    model.train()

    def one() -> None:
        losses, _ = model.loss(data)
        for i, key in enumerate(opts):
            opts[key].zero_grad(set_to_none=True)
            losses[key].backward(inputs=params[key], retain_graph=i < len(opts) - 1)
        for opt in opts.values():
            opt.step()

    for _ in range(warmup):
        one()
    _sync(model.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(model.device)
    frames = data["frames"].shape[0] * model.config.clip_len
    return steps * frames / (time.perf_counter() - t0)


def _sampling(model, frames, actions, repeats: int) -> tuple[float, float, int, int]:
    """(step steps/s, rollout steps/s, generator calls by step, by rollout)."""
    calls = {"n": 0}
    handle = model.generator.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    b, horizon = actions.shape[:2]
    model.eval()
    with torch.no_grad():
        state = model.initial(frames, actions[:, :0])
        noise = torch.randn(b, horizon, model.noise_dim, device=model.device)

        def by_step() -> None:
            s = state
            for t in range(horizon):
                s = model.step(s, actions[:, t], noise=noise[:, t])

        def by_rollout() -> None:
            model.rollout(state, actions, noise=noise)

        timings = []
        counts = []
        for fn in (by_step, by_rollout):
            fn()  # warm-up
            calls["n"] = 0
            _sync(model.device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            _sync(model.device)
            timings.append(repeats * b * horizon / (time.perf_counter() - t0))
            counts.append(calls["n"] // repeats)
    handle.remove()
    return timings[0], timings[1], counts[0], counts[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=64, help="rows in the sampling batch")
    p.add_argument("--train-batch", type=int, default=None, help="default: the preset's batch_size")
    p.add_argument("--horizon", type=int, default=28, help="rollout length H")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--repeats", type=int, default=3, help="timed rollouts per mode")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (tiny nets run best on one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = make("vgan", preset=args.preset).to(device)
    c = model.config
    square = max(3, c.image_size // 8)
    tb = args.train_batch or c.batch_size
    train = moving_square(tb, c.seq_len, image_size=c.image_size, square=square, seed=0)
    train = {k: v.to(device) for k, v in train.items()}
    fps = _train_frames_per_s(model, train, args.steps)
    print(f"vgan {args.preset} ({c.image_size} px, clip {c.clip_len}, batch {tb}) on {device}")
    print(f"training: {fps:.0f} frames/s")

    test = moving_square(args.batch, args.horizon + 1, image_size=c.image_size, square=square, seed=1)
    frames, actions = test["frames"][:, :1].to(device), test["actions"][:, : args.horizon].to(device)
    step_sps, roll_sps, step_calls, roll_calls = _sampling(model, frames, actions, args.repeats)
    print(
        f"sampling {args.batch} rows × H={args.horizon}: step {step_sps:.0f} row-steps/s "
        f"({step_calls} generator calls), rollout {roll_sps:.0f} row-steps/s ({roll_calls} calls)"
    )
    print(
        f"rollout vs step: {roll_sps / step_sps:.1f}x faster, "
        f"{step_calls / roll_calls:.1f}x fewer generator calls"
    )


if __name__ == "__main__":
    main()
