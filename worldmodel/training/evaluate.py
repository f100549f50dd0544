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
  future frame given the true past;
- with an LPIPS network (``perceptual.LPIPS``): LPIPS per future step, best-of-N being per
  sequence the sample with the *lowest* mean LPIPS (each metric's own best sample, as SAVP and
  SRVP report LPIPS), mean-of-N and the copy-last baseline as above;
- with an I3D (``perceptual.I3D``): FVD between the true windows and one sample per sequence
  (context frames included, ``n_past + n_future`` frames), and the baseline's FVD.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from worldmodel.data.batch import frames_to_float, frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.training.metrics import psnr, ssim
from worldmodel.training.perceptual import I3D, LPIPS, frechet_distance_of, i3d_embeddings, lpips_distances


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
    per_sequence: dict[str, dict[str, list[list[float]]]] | None = None
    """``best``, ``mean_of_n`` and ``baseline`` → ``psnr`` / ``ssim`` per sequence and step
    ``(sequences, n_future)``: the spread behind the means (intervals, paired comparisons)."""
    lpips: list[float] | None = None
    """LPIPS per future step of each sequence's lowest-LPIPS sample (``None`` without an LPIPS
    network; ``mean_of_n`` and ``baseline`` then hold ``lpips`` too)."""
    fvd: float | None = None
    """FVD of one sample per sequence against the true windows (``None`` without an I3D)."""
    fvd_baseline: float | None = None
    """FVD of the copy-last-frame windows."""
    perceptual: dict[str, Any] | None = None
    """How LPIPS and FVD were computed: ``lpips_net``, ``fvd_videos``, ``fvd_frames``,
    ``fvd_resolution`` (the ones that ran)."""

    def to_json(self, **info: Any) -> dict[str, Any]:
        """The report: per-step lists, their means, mean-of-N, the baseline, plus ``info``.

        With LPIPS, each block gains ``lpips`` and ``lpips_mean``; with FVD, the top level gains
        ``fvd`` (one sample per sequence) and ``baseline`` its ``fvd``; ``perceptual`` says how."""

        def block(
            p: list[float], s: list[float], lp: list[float] | None, fvd: float | None
        ) -> dict[str, Any]:
            out = {"psnr": p, "ssim": s, "psnr_mean": float(np.mean(p)), "ssim_mean": float(np.mean(s))}
            if lp is not None:
                out.update(lpips=lp, lpips_mean=float(np.mean(lp)))
            if fvd is not None:
                out["fvd"] = fvd
            return out

        m, b = self.mean_of_n, self.baseline
        return {
            **block(self.psnr, self.ssim, self.lpips, self.fvd),
            "mean_of_n": block(m["psnr"], m["ssim"], m.get("lpips"), None),
            "baseline": block(b["psnr"], b["ssim"], b.get("lpips"), self.fvd_baseline),
            **({"perceptual": self.perceptual} if self.perceptual else {}),
            "sequences": self.sequences,
            "samples": self.samples,
            **({"bpp": self.bpp, "bpp_mean": float(np.mean(self.bpp))} if self.bpp is not None else {}),
            **({"per_sequence": _rounded(self.per_sequence)} if self.per_sequence else {}),
            **info,
        }


@torch.no_grad()
def score_predictions(
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
    lpips: LPIPS | None = None,
    i3d: I3D | None = None,
    fvd_resolution: int = 224,
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
        lpips: an LPIPS network on the model's device (``perceptual.load_lpips``): adds LPIPS.
        i3d: a Kinetics-400 I3D on the model's device (``perceptual.load_i3d``): adds FVD (needs
            at least 2 sequences).
        fvd_resolution: frames are resized to this square size for the I3D (224 as published).
    """
    if n_past < 1 or n_future < 1 or samples < 1:
        raise ValueError(f"need n_past, n_future, samples >= 1, got {n_past}, {n_future}, {samples}")
    total = len(dataset) if sequences is None else min(sequences, len(dataset))
    if total < 1:
        raise ValueError("the evaluation dataset is empty")
    if i3d is not None and total < 2:
        raise ValueError(f"FVD compares distributions and needs at least 2 sequences, got {total}")
    extra = None if lpips is None and i3d is None else _Perceptual(lpips, i3d, n_future, fvd_resolution)
    device = model.device
    gen = torch.Generator(device).manual_seed(seed)
    bits_per_dim = getattr(model, "bits_per_dim", None)
    bpp_gen = torch.Generator(device).manual_seed(seed + 1)  # dequantisation noise
    pick = torch.Generator().manual_seed(seed)
    per_batch = max(1, max_rollouts // samples)
    subset = torch.utils.data.Subset(dataset, range(total))
    keys = ("bp", "bs", "mp", "ms", "cp", "cs", "bpp")
    sums = {k: torch.zeros(n_future, dtype=torch.float64) for k in keys}
    per_seq: dict[str, list[Tensor]] = {k: [] for k in keys[:-1]}  # (B, F) per batch
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
        cp, cs = psnr(last, truth).double().cpu(), ssim(last, truth).double().cpu()
        sums["cp"] += cp.sum(0)
        sums["cs"] += cs.sum(0)
        for k, v in zip(per_seq, (p[rows, best], s[rows, best], p.mean(1), s.mean(1), cp, cs), strict=True):
            per_seq[k].append(v)
        if extra is not None:
            extra.add(frames, truth, pred, last, n_past)
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
    result = EvalResult(
        psnr=mean["bp"],
        ssim=mean["bs"],
        mean_of_n={"psnr": mean["mp"], "ssim": mean["ms"]},
        baseline={"psnr": mean["cp"], "ssim": mean["cs"]},
        sequences=done,
        samples=samples,
        videos={k: torch.stack(v).numpy() for k, v in videos.items() if v},
        bpp=mean["bpp"] if bits_per_dim is not None else None,
        per_sequence={
            block: {"psnr": torch.cat(per_seq[kp]).tolist(), "ssim": torch.cat(per_seq[ks]).tolist()}
            for block, kp, ks in (("best", "bp", "bs"), ("mean_of_n", "mp", "ms"), ("baseline", "cp", "cs"))
        },
    )
    if extra is not None:
        extra.finish(result, done, n_past + n_future)
    return result


class _Perceptual:
    """LPIPS sums and I3D embeddings gathered batch by batch, written into the result at the end."""

    def __init__(self, lpips: LPIPS | None, i3d: I3D | None, n_future: int, resolution: int) -> None:
        self.lpips, self.i3d, self.resolution = lpips, i3d, resolution
        self.batch = 256 if lpips is None or lpips.net_name == "alex" else 64  # VGG's 64² maps are large
        self.sums = {k: torch.zeros(n_future, dtype=torch.float64) for k in ("best", "mean", "copy")}
        self.embeddings: dict[str, list[Tensor]] = {"real": [], "fake": [], "copy": []}

    def add(self, frames: Tensor, truth: Tensor, pred: Tensor, last: Tensor, n_past: int) -> None:
        """``frames`` uint8 ``(B, T, H, W, 3)``; ``truth``, ``last`` float ``(B, F, 3, H, W)``;
        ``pred`` float ``(B, N, F, 3, H, W)``."""
        if self.lpips is not None:
            lp = lpips_distances(self.lpips, pred, truth[:, None].expand_as(pred), batch=self.batch)
            lp = lp.double().cpu()  # (B, N, F)
            best = lp.mean(-1).argmin(-1)  # LPIPS's own best sample: the lowest
            self.sums["best"] += lp[torch.arange(len(lp)), best].sum(0)
            self.sums["mean"] += lp.mean(1).sum(0)
            self.sums["copy"] += (
                lpips_distances(self.lpips, last, truth, batch=self.batch).double().cpu().sum(0)
            )
        if self.i3d is not None:
            context = frames_to_float(frames[:, :n_past])
            # The first sample of each sequence, quantised as a saved video would be.
            fake = torch.cat([context, frames_to_float(frames_to_uint8(pred[:, 0]))], 1)
            for key, video in (
                ("real", frames_to_float(frames)),
                ("fake", fake),
                ("copy", torch.cat([context, last], 1)),
            ):
                self.embeddings[key].append(i3d_embeddings(self.i3d, video, resolution=self.resolution))

    def finish(self, result: EvalResult, done: int, frames: int) -> None:
        info: dict[str, Any] = {}
        if self.lpips is not None:
            mean = {k: (v / done).tolist() for k, v in self.sums.items()}
            result.lpips = mean["best"]
            result.mean_of_n["lpips"] = mean["mean"]
            result.baseline["lpips"] = mean["copy"]
            info["lpips_net"] = self.lpips.net_name
        if self.i3d is not None:
            real, fake, copy = (torch.cat(self.embeddings[k]) for k in ("real", "fake", "copy"))
            result.fvd = frechet_distance_of(real, fake)
            result.fvd_baseline = frechet_distance_of(real, copy)
            info.update(fvd_videos=done, fvd_frames=frames, fvd_resolution=self.resolution)
        result.perceptual = info


def _rounded(per_sequence: dict[str, dict[str, list[list[float]]]]) -> dict[str, Any]:
    """4 decimals (0.1 mdB, 1e-4 SSIM) keep a 128-sequence report small and lose nothing shown."""
    return {
        b: {m: [[round(v, 4) for v in row] for row in rows] for m, rows in d.items()}
        for b, d in per_sequence.items()
    }


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


def evaluate(*args: Any, **kwargs: Any) -> EvalResult:
    """Deprecated name of ``score_predictions`` ("evaluate" named five different things)."""
    warnings.warn("worldmodel.training.evaluate.evaluate is now score_predictions", DeprecationWarning, 2)
    return score_predictions(*args, **kwargs)
