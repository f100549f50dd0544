"""Score a checkpoint from Python: ``evaluate_checkpoint(EvalJob(...))``, what ``worldmodel eval`` runs.

Per-step PSNR/SSIM (best-of-N, mean-of-N) against copy-last-frame on a dataset split, and bits per
dimension for models with a likelihood (VideoFlow); with a state head and data that records
states, also the control diagnostics (``worldmodel.training.control``): dreamed end effector and
pushed objects vs "nothing moves", and how the planner's objectives rank the recorded actions
among other episodes'. With ``lpips_weights`` / ``fvd_weights`` (local files only:
``worldmodel.training.perceptual`` documents their layouts), also LPIPS and FVD.

``evaluate_checkpoint`` returns the report (the ``eval.json`` layout) and writes the JSON and the
truth | best | random video the job names, each atomically, after ``on_report`` has seen the
report: a side file that cannot be written then loses no figure. Notes for the user (zero actions,
diagnostics skipped) go to ``say``; nothing is printed.

    from worldmodel.training.eval_job import EvalJob, evaluate_checkpoint

    report = evaluate_checkpoint(EvalJob("runs/svg/checkpoints/last.pt", data="data/push",
                                         samples=10, json="eval.json", video="eval.gif"))
    report["psnr_mean"], report["baseline"]["psnr_mean"]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class EvalJob:
    """One scoring run (the flags of ``worldmodel eval``, which documents each)."""

    checkpoint: str | os.PathLike
    data: str | os.PathLike
    """Dataset folder; its ``split`` is scored."""
    samples: int = 100
    """Samples per sequence (best-of-N)."""
    n_past: int = 2
    n_future: int = 28
    sequences: int | None = None
    """Score only the first N sequences of the split (``None``: all)."""
    split: str = "test"
    seed: int = 0
    temperature: float = 1.0
    device: str = "auto"
    max_rollouts: int = 512
    control: bool | None = None
    """Control diagnostics: ``True`` (an error without a head or states), ``False``, or ``None``:
    when the model has a state head or a head file and the data records states."""
    control_ks: tuple[int, ...] = (5, 10, 20)
    """Steps after the context at which the state errors are reported; the ranking uses the largest."""
    control_episodes: int = 64
    control_candidates: int = 31
    lpips_weights: str | os.PathLike | None = None
    fvd_weights: str | os.PathLike | None = None
    fvd_resolution: int | None = None
    """Frame size fed to the I3D (``None``: 224, as the published FVDs need)."""
    json: str | os.PathLike | None = None
    """Write the report here (``None``: not written)."""
    video: str | os.PathLike | None = None
    """Write the truth | best | random sample video here, ``.mp4`` or ``.gif`` (``None``: none)."""
    progress: bool = False
    """A progress bar over the scored sequences."""

    def __post_init__(self) -> None:
        for name in ("samples", "n_past", "n_future", "max_rollouts", "sequences"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if self.control is not False:
            self.control_ks = tuple(int(k) for k in self.control_ks)
            if not self.control_ks or min(self.control_ks) < 1:
                raise ValueError(f"--control-ks: step counts must be >= 1, got {self.control_ks}")
        if self.fvd_resolution is not None and self.fvd_weights is None:
            raise ValueError("--fvd-resolution: needs --fvd-weights")


def evaluate_checkpoint(
    job: EvalJob,
    say: Callable[[str], None] = lambda _: None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load the checkpoint, open the split, score, then write the job's JSON and video.

    ``on_report`` sees the report before any file is written. Bad settings (flags the data or the
    checkpoint contradict, perceptual weights that do not load) raise ``ValueError`` before the
    slow part."""
    from tqdm.auto import tqdm

    from worldmodel.data import open_dataset
    from worldmodel.data.windows import ZeroActions
    from worldmodel.dynamics import load
    from worldmodel.dynamics.checkpoint import read
    from worldmodel.files import write_json_atomic
    from worldmodel.training.evaluate import comparison_video, score_predictions

    ckpt = Path(job.checkpoint)
    model = load(ckpt, device=job.device)
    cfg = model.config
    seq_len = job.n_past + job.n_future
    data = open_dataset(
        job.data, split=job.split, seq_len=seq_len, random_offset=False, image_size=cfg.image_size
    )
    control_plan = _control_plan(job, ckpt, model, data, say)
    lpips_net, i3d = _perceptual_nets(job, model)
    zero_actions = not data.has_actions
    if zero_actions:
        say(f"{job.data} has no actions; rolling out with zero actions")
        data = ZeroActions(data, cfg.action_dim)
    total = len(data) if job.sequences is None else min(job.sequences, len(data))
    bar = tqdm(total=total, desc="eval", unit="seq", dynamic_ncols=True, disable=not job.progress)
    with bar:
        result = score_predictions(
            model,
            data,
            n_past=job.n_past,
            n_future=job.n_future,
            samples=job.samples,
            sequences=job.sequences,
            max_rollouts=job.max_rollouts,
            seed=job.seed,
            temperature=job.temperature,
            progress=lambda done: bar.update(done - bar.n),
            lpips=lpips_net,
            i3d=i3d,
            fvd_resolution=job.fvd_resolution or 224,
        )
    stored = read(ckpt)
    report = result.to_json(
        checkpoint=str(ckpt),
        model=stored["model"],
        step=stored["step"],
        data=str(job.data),
        split=job.split,
        n_past=job.n_past,
        n_future=job.n_future,
        temperature=job.temperature,
        zero_actions=zero_actions,
    )
    if control_plan is not None:
        report["control"] = _run_control(job, model, control_plan)
    if on_report is not None:
        on_report(report)
    # The scores are out before any side file is written: a video that cannot be written (a
    # read-only folder, a full disk) is then an error that loses nothing.
    if job.json:
        write_json_atomic(job.json, report)
    if job.video:
        from worldmodel.video import write_video  # looked up here, when the video is written

        write_video(job.video, comparison_video(result.videos), fps=4)
    return report


def _perceptual_nets(job: EvalJob, model):
    """The LPIPS network and the I3D of ``lpips_weights`` / ``fvd_weights`` (``None`` when not
    asked for) on the model's device, loaded before the slow part so that a bad file fails at once."""
    from worldmodel.training.perceptual import load_i3d, load_lpips

    lpips_net = i3d = None
    if job.lpips_weights is not None:
        try:
            lpips_net = load_lpips(job.lpips_weights, device=model.device)
            lpips_net.check_size(model.config.image_size, model.config.image_size)
        except ValueError as err:
            raise ValueError(f"--lpips-weights: {err}") from None
    if job.fvd_weights is not None:
        try:
            i3d = load_i3d(job.fvd_weights, device=model.device)
        except ValueError as err:
            raise ValueError(f"--fvd-weights: {err}") from None
    return lpips_net, i3d


def _control_plan(job: EvalJob, ckpt: Path, model, data, say: Callable[[str], None]) -> dict | None:
    """What the control diagnostics will run (``None``: skipped), decided before the slow PSNR part
    so that bad settings fail at once. Auto mode (``control=None``) runs them when there is a head
    and the data records states, on the ``control_ks`` that fit the episodes."""
    if job.control is False:
        return None
    explicit = job.control is True
    ks = job.control_ks
    if not data.has_actions:  # PNG folders: no actions, no states
        if explicit:
            raise ValueError(f"--control needs data with recorded actions and states; {job.data} has none")
        return None
    from worldmodel.dynamics.heads import select_head
    from worldmodel.errors import CheckpointError

    try:  # the model's own state head, else the checkpoint's (refused when stale or of another model)
        head, source = select_head(ckpt, model)
    except CheckpointError as err:
        if explicit:
            raise
        say(f"control diagnostics skipped: {err}")
        return None
    source = "model" if source == "model" else "file"
    if head is None:
        if not explicit:
            return None
        raise ValueError(
            f"--control: {ckpt} has no state head and no head file, and the state diagnostics read the "
            "arm and the objects off one (train with --set state_head=true or run `worldmodel train-head`)"
        )
    longest = data.episode_length - job.n_past
    fit = tuple(k for k in ks if k <= longest)
    if fit != ks:
        if explicit:
            raise ValueError(
                f"--control-ks: {job.n_past} context frames + {max(ks)} steps is longer than the "
                f"episodes of {job.data} ({data.episode_length} steps: k <= {longest})"
            )
        what = "skipped" if not fit else f"steps beyond {longest} dropped"
        say(f"episodes too short for --control-ks {','.join(map(str, ks))}: {what}")
        if not fit:
            return None
    return {"ks": fit, "head": head, "head_source": source, "episode_length": data.episode_length}


def _run_control(job: EvalJob, model, plan: dict) -> dict:
    """The diagnostics on the first ``control_episodes`` episodes of the split, each on the window
    where its objects move most (``windows="moving"``)."""
    from worldmodel.data import open_dataset
    from worldmodel.training.control import control_diagnostics

    ks, size = plan["ks"], model.config.image_size
    length = int(plan["episode_length"])  # whole episodes: the window is chosen per episode
    data = open_dataset(job.data, split=job.split, seq_len=length, random_offset=False, image_size=size)
    items = [data[i] for i in range(min(job.control_episodes, len(data)))]
    result = control_diagnostics(
        model,
        items,
        head=plan["head"],
        ks=ks,
        candidates=job.control_candidates,
        seed=job.seed,
        temperature=job.temperature,
        context=job.n_past,
        max_rollouts=job.max_rollouts,
        windows="moving",
    )
    return {**result, "head": plan["head_source"]}
