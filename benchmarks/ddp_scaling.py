"""Data-parallel scaling of ``worldmodel train`` under ``torchrun``: 1 process vs N processes.

    python benchmarks/ddp_scaling.py DATA [--nproc 2] [--model svg-lp] [--preset tiny] [--steps 60]

Runs ``torchrun --standalone --nproc_per_node=K -m worldmodel train`` for K = 1 and K = ``--nproc``
with the same total batch (``--batch-size`` is over all processes), reads the trainer's logged
``frames_per_s`` (after the first log, which includes start-up) and prints the speed-up last. On a
CPU the processes use the gloo backend and split the cores (``OMP_NUM_THREADS`` = cores / K); on
GPUs each process takes one device (NCCL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def frames_per_s(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["frames_per_s"] for r in rows[1:]] or [rows[-1]["frames_per_s"]]
    return sum(rates) / len(rates)


def train(data: str, out: Path, nproc: int, args: argparse.Namespace) -> float:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "worldmodel", "train", args.model, "--data", data, "--out", str(out), "--preset", args.preset,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--log-every", str(args.steps // 6),
        "--sample-every", "0", "--eval-every", "0", "--ckpt-every", str(args.steps), "--no-progress",
        "--device", args.device,
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return frames_per_s(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a dataset folder (e.g. from worldmodel collect)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--model", default="svg-lp")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = train(args.data, Path(tmp) / "p1", 1, args)
        print(f"1 process:  {one:9.1f} frames/s", flush=True)
        many = train(args.data, Path(tmp) / f"p{args.nproc}", args.nproc, args)
        print(f"{args.nproc} processes: {many:9.1f} frames/s", flush=True)
    print(f"ddp scaling {args.nproc} vs 1 process: {many / one:.2f}x (cpus={os.cpu_count()})")


if __name__ == "__main__":
    main()
