"""``worldmodel train-head CKPT --data DIR``: fit the object-position head of Dream-v0's learned reward.

The flags become a ``HeadJob`` and ``worldmodel.training.head_job.fit_head`` runs it.
"""

from __future__ import annotations

import argparse
import sys

from worldmodel.cli.flags import (
    add_common_flags,
    config_from_args,
    int_at_least,
    positive_float,
    positive_int,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel train-head``."""
    p.add_argument("checkpoint", help="world-model checkpoint (e.g. RUN/checkpoints/last.pt); not modified")
    p.add_argument(
        "--data",
        required=True,
        help="collected sim dataset (needs object positions); trains on its train split, "
        "reports on its test split",
    )
    p.add_argument("--steps", type=positive_int, default=2000, help="Adam steps on the head (default 2000)")
    p.add_argument(
        "--out",
        default=None,
        help="head file to write (default: beside the checkpoint, CKPT_STEM.head.pt, where "
        "Dream-v0 finds it)",
    )
    p.add_argument(
        "--episodes",
        type=positive_int,
        default=512,
        help="training episodes used (default 512; features are computed once)",
    )
    p.add_argument(
        "--val-episodes", type=positive_int, default=128, help="held-out episodes scored (default 128)"
    )
    p.add_argument(
        "--seq-len",
        type=int_at_least(2),
        default=None,
        help="window length (default: the data's whole episodes)",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="rows per Adam step (default 256)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    add_common_flags(p, seed="the head's initial weights and batches", device="", json="the metrics")


def run(args: argparse.Namespace) -> int:
    """Parse the flags into a ``HeadJob``, run it (``worldmodel.training.head_job.fit_head``), report."""
    from worldmodel.training.head_job import HeadJob, fit_head

    job = config_from_args(HeadJob, args, progress=True)

    def say(msg: str) -> None:
        print(f"worldmodel train-head: {msg}", file=sys.stderr)

    print_result(fit_head(job, say=say))
    return 0


def print_result(result: dict) -> None:
    """A fitted head's accuracy (train and held out, cm) and its file."""
    for split in ("train", "val"):
        if f"{split}_rmse_xy" in result:
            print(
                f"{split}: target xy RMSE {100 * result[f'{split}_rmse_xy']:.2f} cm "
                f"(predict-the-mean {100 * result[f'{split}_rmse_xy_mean']:.2f} cm, "
                f"object-stays-put {100 * result[f'{split}_rmse_xy_static']:.2f} cm; "
                f"{result[f'{split}_rows']} rows)"
            )
        if f"{split}_ee_rmse_xyz" in result:
            print(
                f"{split}: end-effector xyz RMSE {100 * result[f'{split}_ee_rmse_xyz']:.2f} cm "
                f"(predict-the-mean {100 * result[f'{split}_ee_rmse_xyz_mean']:.2f} cm)"
            )
    print(f"head: {result['head']}")
