"""``worldmodel train-head CKPT --data DIR``: fit the object-position head of Dream-v0's learned reward."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldmodel.cli.flags import add_common_flags, int_at_least, positive_float, positive_int
from worldmodel.files import write_json_atomic


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


def _items(data, n: int) -> list:
    return [data[i] for i in range(min(n, len(data)))]


def run(args: argparse.Namespace) -> int:
    """Load the model, compute dream features on the data, fit and save the head, report accuracy."""
    import torch
    from tqdm.auto import tqdm

    from worldmodel.data import open_dataset
    from worldmodel.dynamics.checkpoint import model_from, read
    from worldmodel.dynamics.heads import fit_record, head_path_for, save_head, train_object_head
    from worldmodel.errors import DataError

    torch.manual_seed(args.seed)
    ckpt = Path(args.checkpoint)
    saved = read(ckpt)  # read once: the record below describes exactly the weights fitted on
    model = model_from(saved, ckpt, device=args.device)
    fitted_to = fit_record(model, ckpt, saved["step"])
    # Whole episodes by default: objects mostly move late in an episode, and the dream runs long.
    seq_len = args.seq_len or open_dataset(args.data, "train", seq_len=1).spec["episode_length"]
    kw = {"seq_len": seq_len, "random_offset": False, "image_size": model.config.image_size}
    train = _items(open_dataset(args.data, "train", **kw), args.episodes)
    try:
        val = _items(open_dataset(args.data, "test", **kw), args.val_episodes)
    except DataError as err:  # a small collection may have no test episodes: hold out a fifth of train
        cut = max(1, len(train) // 5)
        train, val = train[:-cut], train[-cut:]
        print(f"worldmodel train-head: {err}; holding out {cut} training episodes instead", file=sys.stderr)
    with tqdm(total=args.steps, desc="train-head", unit="step", dynamic_ncols=True) as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")

        head, metrics = train_object_head(
            model,
            train,
            val,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            progress=progress,
        )
    out = Path(args.out) if args.out else head_path_for(ckpt)
    save_head(
        head,
        out,
        model=saved["model"],
        checkpoint=str(ckpt),
        fitted_to=fitted_to,
        data=str(args.data),
        steps=args.steps,
        metrics=metrics,
    )
    if args.json:
        write_json_atomic(args.json, {"checkpoint": str(ckpt), "head": str(out), **metrics})
    for split in ("train", "val"):
        if f"{split}_rmse_xy" in metrics:
            print(
                f"{split}: target xy RMSE {100 * metrics[f'{split}_rmse_xy']:.2f} cm "
                f"(predict-the-mean {100 * metrics[f'{split}_rmse_xy_mean']:.2f} cm, "
                f"object-stays-put {100 * metrics[f'{split}_rmse_xy_static']:.2f} cm; "
                f"{metrics[f'{split}_rows']} rows)"
            )
        if f"{split}_ee_rmse_xyz" in metrics:
            print(
                f"{split}: end-effector xyz RMSE {100 * metrics[f'{split}_ee_rmse_xyz']:.2f} cm "
                f"(predict-the-mean {100 * metrics[f'{split}_ee_rmse_xyz_mean']:.2f} cm)"
            )
    print(f"head: {out}")
    return 0
