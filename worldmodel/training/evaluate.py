"""Score a world model as in the SVG evaluation protocol (reference §2.5).

For each test sequence: condition on ``n_past`` ground-truth frames (and the actions between
them), draw ``samples`` rollouts of ``n_future`` frames driven by the ground-truth actions, and
score every future frame against the truth with PSNR and SSIM (``metrics.py``; conditioning
frames are never scored). Reported per future step, averaged over sequences:

- best-of-N: per sequence, the sample with the highest mean SSIM over time (its PSNR and SSIM);
- mean-of-N: the average over all samples;
- the copy-last-frame baseline: the last context frame repeated, scored the same way;
- ``bpp``, for models with an exact likelihood (a ``bits_per_dim(frames, actions, n_past, *,
  generator)`` method returning ``(B, n_future)``, e.g. VideoFlow): bits per dimension of each
  future frame given the true past.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from worldmodel.data.batch import frames_to_float, frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.training.metrics import psnr, ssim


@dataclasses.dataclass
class EvalResult:
    """Per-step curves ``(n_future,)`` averaged over sequences, and example videos."""

    psnr: list[float]
    """Best-of-N sample (chosen by mean SSIM): PSNR per future step."""
    ssim: list[float]
    """Best-of-N sample: SSIM per future step."""
    mean_of_n: dict[str, list[float]]
    """``psnr`` and ``ssim`` per step averaged over the N samples."""
    baseline: dict[str, list[float]]
    """Copy-last-frame: ``psnr`` and ``ssim`` per step."""
    sequences: int
    samples: int
    videos: dict[str, np.ndarray]
    """uint8 ``(V, n_past + n_future, H, W, 3)``: ``truth``, ``best`` and ``random`` (a random
    sample) for the first ``V`` sequences, context frames included."""
    bpp: list[float] | None = None
    """Bits per dimension per future step (models with a likelihood; ``None`` otherwise)."""

    def to_json(self, **info: Any) -> dict[str, Any]:
        """The report: per-step lists, their means, mean-of-N, the baseline, plus ``info``."""

        def block(p: list[float], s: list[float]) -> dict[str, Any]:
            return {"psnr": p, "ssim": s, "psnr_mean": float(np.mean(p)), "ssim_mean": float(np.mean(s))}

        return {
            **block(self.psnr, self.ssim),
            "mean_of_n": block(self.mean_of_n["psnr"], self.mean_of_n["ssim"]),
            "baseline": block(self.baseline["psnr"], self.baseline["ssim"]),
            "sequences": self.sequences,
            "samples": self.samples,
            **({"bpp": self.bpp, "bpp_mean": float(np.mean(self.bpp))} if self.bpp is not None else {}),
            **info,
        }


@torch.no_grad()
def evaluate(
    model: LatentDynamics,
    dataset: Dataset,
    *,
    n_past: int = 2,
    n_future: int = 28,
    samples: int = 100,
    sequences: int | None = None,
    max_rollouts: int = 512,
    video_sequences: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Best-of-N / mean-of-N PSNR and SSIM per future step, and the copy-last baseline.

    Args:
        model: in eval mode on its device.
        dataset: items with ``frames`` uint8 ``(T, H, W, 3)`` and ``actions`` ``(T, A)``,
            ``T >= n_past + n_future`` (fixed offsets, e.g. ``open_dataset(split="test",
            seq_len=n_past + n_future)``).
        n_past: context frames.
        n_future: scored frames.
        samples: rollouts per sequence (N).
        sequences: score the first this many sequences (default all).
        max_rollouts: most rollouts in one batched call (sequences × samples).
        video_sequences: how many sequences keep their frames for example videos.
        seed: seeds the model's sampling and the choice of the "random" sample (the same seed and
            ``max_rollouts`` give the same numbers; another batching draws other samples).
        temperature: scales the model's sampling noise (1: as trained; 0: the mean).
        progress: called with the number of sequences finished after each batch.
    """
    if n_past < 1 or n_future < 1 or samples < 1:
        raise ValueError(f"need n_past, n_future, samples >= 1, got {n_past}, {n_future}, {samples}")
    total = len(dataset) if sequences is None else min(sequences, len(dataset))
    if total < 1:
        raise ValueError("the evaluation dataset is empty")
    device = model.device
    gen = torch.Generator(device).manual_seed(seed)
    bits_per_dim = getattr(model, "bits_per_dim", None)
    bpp_gen = torch.Generator(device).manual_seed(seed + 1)  # dequantisation noise
    pick = torch.Generator().manual_seed(seed)
    per_batch = max(1, max_rollouts // samples)
    subset = torch.utils.data.Subset(dataset, range(total))
    keys = ("bp", "bs", "mp", "ms", "cp", "cs", "bpp")
    sums = {k: torch.zeros(n_future, dtype=torch.float64) for k in keys}
    videos: dict[str, list[Tensor]] = {"truth": [], "best": [], "random": []}
    done = 0
    for batch in DataLoader(subset, batch_size=per_batch, shuffle=False):
        frames = batch["frames"][:, : n_past + n_future].to(device)
        actions = batch["actions"][:, : n_past + n_future].to(device)
        b = frames.shape[0]
        truth = frames_to_float(frames[:, n_past:])  # (B, F, 3, H, W)
        pred = _rollouts(model, frames, actions, n_past, n_future, samples, gen, temperature)  # (B,N,F,3,H,W)
        if bits_per_dim is not None:
            sums["bpp"] += bits_per_dim(frames, actions, n_past, generator=bpp_gen).double().cpu().sum(0)
        p = psnr(pred, truth[:, None]).double().cpu()  # (B, N, F)
        s = ssim(pred, truth[:, None]).double().cpu()
        best = s.mean(-1).argmax(-1)  # (B,)
        rows = torch.arange(b)
        sums["bp"] += p[rows, best].sum(0)
        sums["bs"] += s[rows, best].sum(0)
        sums["mp"] += p.mean(1).sum(0)
        sums["ms"] += s.mean(1).sum(0)
        last = frames_to_float(frames[:, n_past - 1 : n_past]).expand_as(truth)
        sums["cp"] += psnr(last, truth).double().cpu().sum(0)
        sums["cs"] += ssim(last, truth).double().cpu().sum(0)
        keep = min(b, video_sequences - len(videos["truth"]))
        if keep > 0:
            other = torch.randint(samples, (keep,), generator=pick)
            context = frames[:keep, :n_past].cpu()
            videos["truth"] += list(frames[:keep].cpu())
            videos["best"] += list(
                torch.cat([context, frames_to_uint8(pred[rows[:keep], best[:keep]]).cpu()], 1)
            )
            videos["random"] += list(torch.cat([context, frames_to_uint8(pred[rows[:keep], other]).cpu()], 1))
        done += b
        if progress is not None:
            progress(done)
    mean = {k: (v / done).tolist() for k, v in sums.items()}
    return EvalResult(
        psnr=mean["bp"],
        ssim=mean["bs"],
        mean_of_n={"psnr": mean["mp"], "ssim": mean["ms"]},
        baseline={"psnr": mean["cp"], "ssim": mean["cs"]},
        sequences=done,
        samples=samples,
        videos={k: torch.stack(v).numpy() for k, v in videos.items() if v},
        bpp=mean["bpp"] if bits_per_dim is not None else None,
    )


def _rollouts(
    model: LatentDynamics,
    frames: Tensor,
    actions: Tensor,
    n_past: int,
    n_future: int,
    samples: int,
    gen,
    temperature: float = 1.0,
) -> Tensor:
    """``samples`` rollouts per sequence: float ``(B, N, n_future, 3, H, W)``."""
    b = frames.shape[0]
    state = model.initial(frames[:, :n_past], actions[:, : n_past - 1]).repeat_interleave(samples)
    future = actions[:, n_past - 1 : n_past - 1 + n_future].repeat_interleave(samples, dim=0)
    _, pred = model.rollout(state, future, generator=gen, temperature=temperature)
    return pred.float().view(b, samples, *pred.shape[1:])


def comparison_video(videos: dict[str, np.ndarray]) -> np.ndarray:
    """Frames ``(T, H', W', 3)``: one row per sequence, columns truth | best sample | random sample."""
    from worldmodel.video import grid

    truth, best, rand = videos["truth"], videos["best"], videos["random"]
    v = truth.shape[0]
    cells = np.stack([truth, best, rand], axis=1).reshape(v * 3, *truth.shape[1:])
    return grid(cells, ncols=3)
