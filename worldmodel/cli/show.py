"""``worldmodel show``: a grid video (MP4 or GIF) of some sequences of a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmodel.cli.flags import add_common_flags, positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel show``."""
    p.add_argument("data", type=Path, help="dataset folder (collected shards, BAIR download or PNG folders)")
    p.add_argument("--out", type=Path, required=True, help="video file to write: .mp4 or .gif")
    p.add_argument("--split", default="train", help="split to show (default train)")
    p.add_argument("--num", type=positive_int, default=16, help="number of sequences (default 16)")
    p.add_argument("--ncols", type=positive_int, default=4, help="grid columns (default 4)")
    p.add_argument("--fps", type=positive_float, default=10.0, help="frames per second (default 10)")
    p.add_argument(
        "--seq-len", type=positive_int, default=None, help="steps to show (default: whole episodes)"
    )
    add_common_flags(p, seed="a random pick of the sequences; none: the first --num", seed_default=None)


def run(args: argparse.Namespace) -> int:
    """Read the sequences, tile them and write the video."""
    import numpy as np
    import torch

    from worldmodel.data import open_dataset
    from worldmodel.video import grid, write_video

    probe = open_dataset(args.data, split=args.split, seq_len=1, random_offset=False)
    seq_len = args.seq_len or probe.episode_length
    ds = open_dataset(args.data, split=args.split, seq_len=seq_len, random_offset=False)
    n = min(args.num, len(ds))
    if args.seed is None:
        picks = list(range(n))
    else:
        picks = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[:n].tolist()
    frames = np.stack([ds[i]["frames"].numpy() for i in picks])
    path = write_video(args.out, grid(frames, args.ncols), fps=args.fps)
    print(f"wrote {path}: {n} sequences x {seq_len} frames ({ds.spec['format']}, split {args.split})")
    return 0
