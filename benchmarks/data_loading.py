"""Data loading speed: windows/s and frames/s through a DataLoader with 0 and 2 workers.

    python benchmarks/data_loading.py [DATA ...] [--seq-len 12] [--batch-size 16] [--epochs 2]

With no DATA it builds two temporary datasets of the same content size (64 sequences x 30 steps,
64x64): collected shards (real sim, ``worldmodel collect``) and a BAIR-format TFRecord file written
with this package's TFRecord writer (CRC-32C checked on every read, as for a real download).
Prints one line per (dataset, workers); the last line is the figure: windows/s for the first
dataset with 2 workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch.utils.data import DataLoader

from worldmodel.data import open_dataset


def make_shards(root: Path, episodes: int) -> Path:
    from worldmodel.envs.collect import CollectConfig, collect

    out = root / "shards"
    collect(CollectConfig(out=out, episodes=episodes, seq_len=30, workers=2, episodes_per_shard=8))
    return out


def make_bair(root: Path, episodes: int) -> Path:
    from bair_records import bair_record

    from worldmodel.data.tfrecord import write_tfrecord

    rng = np.random.default_rng(0)
    folder = root / "bair" / "softmotion30_44k" / "train"
    folder.mkdir(parents=True)
    records = [bair_record(rng) for _ in range(episodes)]
    write_tfrecord(folder / f"traj_0_to_{episodes - 1}.tfrecords", records)
    return root / "bair"


def measure(path: Path, workers: int, args: argparse.Namespace) -> tuple[float, float]:
    ds = open_dataset(path, split="train", seq_len=args.seq_len)
    loader = DataLoader(
        ds,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    next(iter(loader))  # start-up (worker spawn) outside the timing
    windows = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            windows += len(batch["frames"])
    seconds = time.perf_counter() - start
    return windows / seconds, windows * args.seq_len / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="*", type=Path, help="datasets to read (default: build temporary ones)")
    p.add_argument("--seq-len", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--episodes", type=int, default=64, help="size of the temporary datasets")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} seq_len={args.seq_len} "
        f"batch_size={args.batch_size} epochs={args.epochs}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.data or [make_shards(Path(tmp), args.episodes), make_bair(Path(tmp), args.episodes)]
        results = []
        for path in paths:
            for workers in (0, 2):
                wps, fps = measure(path, workers, args)
                name = open_dataset(path, seq_len=1).spec["format"]
                results.append((name, workers, wps))
                print(f"{name} workers={workers}: {wps:.1f} windows/s, {fps:.0f} frames/s", flush=True)
    name, workers, wps = next(r for r in results if r[1] == 2)
    print(f"{name} DataLoader with 2 workers: {wps:.1f} windows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
