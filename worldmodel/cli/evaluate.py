"""``worldmodel eval CKPT --data DIR``: per-step PSNR/SSIM (best-of-N, mean-of-N) vs copy-last-frame,
and bits per dimension for models with a likelihood (VideoFlow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldmodel.files import write_json_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel eval``."""
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/checkpoints/last.pt)")
    p.add_argument("--data", required=True, help="dataset folder; its test split is scored")
    p.add_argument("--samples", type=int, default=100, help="samples per sequence (best-of-N; default 100)")
    p.add_argument("--n-past", type=int, default=2, help="context frames (default 2)")
    p.add_argument("--n-future", type=int, default=28, help="predicted, scored frames (default 28)")
    p.add_argument("--sequences", type=int, default=None, help="score only the first N test sequences")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (0: the mean; default 1)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--max-rollouts", type=int, default=512, help="rollouts per batched call (default 512)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument(
        "--video",
        default=None,
        metavar="FILE",
        help="truth | best | random sample video (.mp4/.gif; default: beside --json, else "
        "CKPT_eval.gif beside the checkpoint)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, open the test windows, score, report."""
    from tqdm.auto import tqdm

    from worldmodel.data import open_dataset
    from worldmodel.dynamics import load
    from worldmodel.dynamics.checkpoint import read
    from worldmodel.training.evaluate import comparison_video, evaluate
    from worldmodel.training.trainer import ZeroActions
    from worldmodel.video import write_video

    ckpt = Path(args.checkpoint)
    model = load(ckpt, device=args.device)
    cfg = model.config
    seq_len = args.n_past + args.n_future
    data = open_dataset(
        args.data, split=args.split, seq_len=seq_len, random_offset=False, image_size=cfg.image_size
    )
    zero_actions = not data.has_actions
    if zero_actions:
        print(f"worldmodel eval: {args.data} has no actions; rolling out with zero actions", file=sys.stderr)
        data = ZeroActions(data, cfg.action_dim)
    total = len(data) if args.sequences is None else min(args.sequences, len(data))
    with tqdm(total=total, desc="eval", unit="seq", dynamic_ncols=True) as bar:
        result = evaluate(
            model,
            data,
            n_past=args.n_past,
            n_future=args.n_future,
            samples=args.samples,
            sequences=args.sequences,
            max_rollouts=args.max_rollouts,
            seed=args.seed,
            temperature=args.temperature,
            progress=lambda done: bar.update(done - bar.n),
        )
    report = result.to_json(
        checkpoint=str(ckpt),
        model=read(ckpt)["model"],
        step=read(ckpt)["step"],
        data=str(args.data),
        split=args.split,
        n_past=args.n_past,
        n_future=args.n_future,
        temperature=args.temperature,
        zero_actions=zero_actions,
    )
    if args.json:
        write_json_atomic(args.json, report)
    video = (
        Path(args.video)
        if args.video
        else (Path(args.json).with_suffix(".gif") if args.json else ckpt.with_name(f"{ckpt.stem}_eval.gif"))
    )
    write_video(video, comparison_video(result.videos), fps=4)

    base = report["baseline"]
    mean = report["mean_of_n"]
    print(
        f"{report['model']} step {report['step']}: {result.sequences} sequences × {result.samples} samples, "
        f"{args.n_past} context → {args.n_future} future frames" + (" (zero actions)" if zero_actions else "")
    )
    print(f"  best of {result.samples}:  PSNR {report['psnr_mean']:.2f} dB  SSIM {report['ssim_mean']:.4f}")
    print(f"  mean of {result.samples}:  PSNR {mean['psnr_mean']:.2f} dB  SSIM {mean['ssim_mean']:.4f}")
    print(f"  copy last frame: PSNR {base['psnr_mean']:.2f} dB  SSIM {base['ssim_mean']:.4f}")
    if "bpp" in report:
        print(f"  bits per dimension: {report['bpp_mean']:.3f}")
    print(f"  video: {video}" + (f"  report: {args.json}" if args.json else ""))
    return 0
