"""``worldmodel collect``: roll out the random pushing policy in the sim and write a sharded dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmodel.cli.flags import (
    add_common_flags,
    config_from_args,
    int_at_least,
    nonneg_int,
    positive_int,
    probability,
)
from worldmodel.files import write_json_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel collect``."""
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="dataset folder; re-running with the same settings resumes an interrupted collection",
    )
    p.add_argument(
        "--episodes", type=positive_int, required=True, help="number of episodes (sequences) to collect"
    )
    p.add_argument(
        "--seq-len", type=int_at_least(2), default=30, help="steps per episode (default 30, as BAIR)"
    )
    p.add_argument(
        "--workers",
        type=nonneg_int,
        default=1,
        help="worker processes, each writing whole shards (default 1; 0 = in this process)",
    )
    add_common_flags(p, seed="what is written: the bytes depend only on it and the settings, not --workers")
    p.add_argument(
        "--image-size", type=int_at_least(8), default=64, help="frame height and width in pixels (default 64)"
    )
    p.add_argument(
        "--num-objects",
        type=positive_int,
        default=None,
        help="objects per episode (default: random 1..4 per episode)",
    )
    p.add_argument(
        "--push-probability",
        type=probability,
        default=0.5,
        help="share of episodes that deliberately push through an object (default 0.5)",
    )
    p.add_argument(
        "--episodes-per-shard",
        type=positive_int,
        default=None,
        help="episodes per shard file (default ceil(episodes/32), at most 100)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_flags(p, json="the summary")


def run(args: argparse.Namespace) -> int:
    """Collect, with a progress bar over episodes, then print a summary."""
    from tqdm import tqdm

    from worldmodel.envs.collect import CollectConfig, collect

    cfg = config_from_args(CollectConfig, args)
    with tqdm(
        total=args.episodes, unit="ep", desc="collect", disable=args.no_progress, dynamic_ncols=True
    ) as bar:
        summary = collect(cfg, progress=bar.update)
    print_summary(summary, args.workers)
    if args.json is not None:
        write_json_atomic(args.json, summary, indent=1)
    return 0


def print_summary(summary: dict, workers: int) -> None:
    """What a collection wrote, how fast, and how much of it moves an object."""
    moved = summary["moved_share"]
    print(f"collected {summary['episodes']} episodes in {summary['shards']} shards -> {summary['out']}")
    print(
        f"  new episodes {summary['new_episodes']} (skipped {summary['skipped_shards']} finished shards), "
        f"time {summary['seconds']:.1f} s, {summary['episodes_per_second']:.2f} episodes/s "
        f"with {workers} worker(s)"
    )
    print(
        f"  moved share (some object moved > 2 cm): {'n/a' if moved is None else f'{moved:.3f}'}, "
        f"pushing episodes: {summary['pushed_share']}"
    )
