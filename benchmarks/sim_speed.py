"""Rendered PushTable steps per second on one CPU core (64x64, 4 objects by default).

    python benchmarks/sim_speed.py [--steps 2000] [--image-size 64] [--num-objects 4] [--no-pin]

Pins the process to one core (Linux), limits thread pools to 1, uses uniform random actions with
resets every 50 steps (reset time included), and prints steps per CPU second, then its figure last:
wall-clock ``sim_steps_per_s: N``.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # LP_NUM_THREADS: Mesa llvmpipe rasteriser threads
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-objects", type=int, default=4)
    parser.add_argument("--episode-len", type=int, default=50)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU core")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from worldmodel.envs.push_table import PushTableEnv

    env = PushTableEnv(image_size=args.image_size, num_objects=args.num_objects)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(args.steps, 4)).astype(np.float32)
    env.reset(seed=0)
    for a in actions[:20]:  # warm-up (GL context, caches)
        env.step(a)
    start, cpu_start = time.perf_counter(), time.process_time()
    for t, a in enumerate(actions):
        if t % args.episode_len == 0:
            env.reset(seed=t)
        env.step(a)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    env.close()
    cfg = env.config
    print(
        f"image_size={args.image_size} num_objects={args.num_objects} steps={args.steps} "
        f"physics={cfg.frame_skip}x{cfg.timestep}s per step, cores=1: {elapsed:.2f}s"
    )
    # CPU time of this process (all its threads, pinned to one core): what one free core would do when
    # other jobs share the machine; the wall-clock figure is printed last.
    print(f"sim_steps_per_cpu_s: {args.steps / cpu:.1f}")
    print(f"sim_steps_per_s: {args.steps / elapsed:.1f}")


if __name__ == "__main__":
    main()
