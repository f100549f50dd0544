"""Dream env throughput: DreamVecEnv (one batched model call per step) vs SB3 DummyVecEnv over single
Dream-v0 envs vs the real PushTable sim, in one run.

    python benchmarks/dream_throughput.py [--envs 256] [--preset tiny] [--seconds 15] [--device cpu]
    python benchmarks/dream_throughput.py --device cuda --preset paper --envs 1024 --skip-dummy --skip-sim
    python benchmarks/dream_throughput.py --sweep 1,64,1024 --skip-dummy --skip-sim   # steps/s vs envs

Env steps per second (one env step = one agent transition) with uniform random actions,
``reward="learned"`` (an untrained object head: the cost, not the value, matters here), pixel
observations, ``horizon=50`` so same-step auto-resets are included. Each figure runs for about
``--seconds`` after a warm-up; DreamVecEnv and DummyVecEnv alternate in ``--rounds`` rounds and
the ratio is the median of the per-round ratios. Both dream variants share one model, one
start-context pool and ``--dtype``. Prints the DreamVecEnv / DummyVecEnv ratio last (target: >=
20x on CPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np


def rate(step, n_envs: int, seconds: float, min_calls: int = 3) -> tuple[float, int]:
    """Env steps/s of ``step()`` (which advances ``n_envs`` envs) over about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * n_envs / (time.perf_counter() - start), calls


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, default=256)
    p.add_argument("--model", default="svg-lp")
    p.add_argument("--preset", default="tiny", help="tiny (CPU) or paper")
    p.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of --model/--preset")
    p.add_argument("--seconds", type=float, default=15.0, help="time per measurement (default 15)")
    p.add_argument("--rounds", type=int, default=5, help="alternating DreamVecEnv/DummyVecEnv rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--obs", default="pixels", choices=["pixels", "latent"])
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="DreamConfig.dtype"
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (default: worldmodel.perf.keep_freed_memory(), as the CLIs do)",
    )
    p.add_argument("--skip-dummy", action="store_true")
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument(
        "--sweep",
        default=None,
        metavar="N,N,...",
        help="also DreamVecEnv steps/s (and peak GPU memory) at these env counts, e.g. 1,64,1024",
    )
    p.add_argument("--json", default=None, metavar="FILE")
    return p.parse_args()


def build_core(args: argparse.Namespace):
    import torch

    from worldmodel import dynamics
    from worldmodel.dynamics.heads import ObjectHead
    from worldmodel.envs.dream import DreamConfig, DreamCore

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        model = dynamics.load(args.checkpoint, device=args.device)
    else:
        model = dynamics.make(args.model, preset=args.preset, image_size=64).to(args.device).eval()
    head = ObjectHead(model.feature_dim)
    cfg = DreamConfig(obs=args.obs, pool_size=64, horizon=50, dtype=args.dtype)
    return DreamCore(model, cfg, head=head, device=args.device)


def cycling_stepper(env, actions: np.ndarray, sync: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``step()`` whose ``i``-th call steps the vector ``env`` (seeded 0 and reset here) by
    ``actions[i % K]``, ``actions`` ``(K, n_envs, 4)``; ``sync``, if given, runs after each step."""
    env.seed(0)
    env.reset()
    batches = itertools.cycle(actions)

    def step():
        env.step(next(batches))
        if sync is not None:
            sync()

    return step


def vec_stepper(core, actions: np.ndarray):
    """A warmed-up ``step()`` advancing a ``DreamVecEnv`` of ``actions.shape[1]`` envs."""
    import torch

    from worldmodel.envs.dream_vec import DreamVecEnv

    # CUDA runs asynchronously: wait for each step so that the rate counts its work
    sync = (lambda: torch.cuda.synchronize(core.device)) if core.device.type == "cuda" else None
    step = cycling_stepper(DreamVecEnv(core, actions.shape[1]), actions, sync)
    for _ in range(3):
        step()
    return step


def dummy_stepper(core, actions: np.ndarray):
    """A warmed-up ``step()`` advancing SB3's ``DummyVecEnv`` over single ``Dream-v0`` envs."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from worldmodel.envs.dream import DreamEnv

    dummy = DummyVecEnv([lambda: DreamEnv(core=core) for _ in range(actions.shape[1])])
    step = cycling_stepper(dummy, actions)
    step()
    return step


def interleaved(vec_step, dummy_step, n: int, seconds: float, rounds: int) -> dict[str, float]:
    """Alternate the two envs in ``rounds`` short rounds; medians of the rates and of the per-round
    ratios. On a shared VM the CPU's speed drifts by 1.5x within a minute; back-to-back 15 s
    measurements then compare different machines, alternating ones compare like with like."""
    vec, dummy, ratios = [], [], []
    for r in range(rounds):
        v, _ = rate(vec_step, n, seconds / rounds)
        d, _ = rate(dummy_step, n, seconds / rounds, min_calls=1)
        vec.append(v)
        dummy.append(d)
        ratios.append(v / d)
        print(f"  round {r + 1}/{rounds}: DreamVecEnv {v:8.1f}  DummyVecEnv {d:7.1f}  ratio {v / d:5.1f}x")
    return {
        "dream_vec_steps_per_s": float(np.median(vec)),
        "dummy_vec_steps_per_s": float(np.median(dummy)),
        "dream_vec_vs_dummy": float(np.median(ratios)),
    }


def measure_sim(actions: np.ndarray, seconds: float) -> tuple[float, int]:
    from worldmodel.envs.push_table import PushTableEnv

    sim = PushTableEnv()
    sim.reset(seed=0)
    t = [0]

    def step():
        t[0] += 1
        if t[0] % 50 == 0:
            sim.reset(seed=t[0])
        sim.step(actions[t[0] % len(actions), 0])

    step()
    return rate(step, 1, seconds)


def main() -> None:
    args = parse_args()
    import torch

    from worldmodel.perf import keep_freed_memory

    malloc = "default" if args.default_malloc else f"keep_freed_memory={keep_freed_memory()}"

    core = build_core(args)
    n = args.envs
    actions = np.random.default_rng(0).uniform(-1, 1, (16, n, 4)).astype(np.float32)
    info = (
        f"model={args.checkpoint or args.model + ':' + args.preset} device={core.device} envs={n} "
        f"obs={args.obs} dtype={args.dtype} malloc={malloc} threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()}"
    )
    if core.device.type == "cuda":
        info += f" gpu={torch.cuda.get_device_name(core.device)}"
    print(info, flush=True)
    res: dict[str, float] = {}
    vec_step = vec_stepper(core, actions)
    if args.skip_dummy:
        res["dream_vec_steps_per_s"], _ = rate(vec_step, n, args.seconds)
    else:
        res.update(interleaved(vec_step, dummy_stepper(core, actions), n, 2 * args.seconds, args.rounds))
        print(f"DummyVecEnv({n} x Dream-v0):  {res['dummy_vec_steps_per_s']:10.1f} env steps/s (median)")
    print(f"DreamVecEnv({n}):             {res['dream_vec_steps_per_s']:10.1f} env steps/s", flush=True)
    for k in [int(v) for v in args.sweep.split(",")] if args.sweep else []:
        if core.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(core.device)
        sweep_actions = np.random.default_rng(0).uniform(-1, 1, (16, k, 4)).astype(np.float32)
        res[f"dream_vec_{k}_steps_per_s"], _ = rate(vec_stepper(core, sweep_actions), k, args.seconds)
        mem = ""
        if core.device.type == "cuda":
            mem = f", peak GPU memory {torch.cuda.max_memory_allocated(core.device) / 2**30:.2f} GiB"
        print(f"DreamVecEnv({k}): {res[f'dream_vec_{k}_steps_per_s']:10.1f} env steps/s{mem}", flush=True)
    if not args.skip_sim:
        res["push_table_steps_per_s"], _ = measure_sim(actions, args.seconds)
        print(f"PushTable-v0 (1 sim):          {res['push_table_steps_per_s']:10.1f} env steps/s", flush=True)
        print(f"dream_vec_vs_sim: {res['dream_vec_steps_per_s'] / res['push_table_steps_per_s']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": info, **res}, f, indent=2)
    if "dream_vec_vs_dummy" in res:
        rounds = f"median of {args.rounds} alternating rounds"
        print(f"dream_vec_vs_dummy: {res['dream_vec_vs_dummy']:.1f}x ({rounds})")
    else:
        print(f"dream_vec_steps_per_s: {res['dream_vec_steps_per_s']:.1f}")


if __name__ == "__main__":
    main()
