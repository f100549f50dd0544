"""Sample pictures during training: the model rolled out on a fixed batch, beside the truth.

Every ``sample_every`` steps and at the last the trainer writes ``samples/grid`` (an image: per
sequence, a row of context + prediction over a row of ground truth) and ``samples/video`` (an
animated GIF, TensorBoard's video format: prediction | ground truth) to ``tb/``, and the video as
``RUN/samples/step_XXXXXXX.gif``. Frames have a 1-pixel border: green for ground truth and
context, red for predicted frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from worldmodel.data.batch import frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.training.batches import SeededItems, mix_seed
from worldmodel.video import add_tensorboard_video, write_video


def fixed_batch(dataset: Dataset, n: int, seed: int) -> dict[str, Tensor]:
    """The first ``min(n, len(dataset))`` items of ``dataset``, their windows drawn from ``seed``
    (the same batch at every sample step), stacked."""
    n = min(n, len(dataset))
    items = [SeededItems(dataset)[(i, mix_seed(seed, i, 3))] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@torch.no_grad()
def predict(
    model: LatentDynamics, batch: Mapping[str, Tensor], device: torch.device, seed: int
) -> tuple[Tensor, Tensor]:
    """Ground truth and (context + predicted) frames, uint8 ``(N, T, H, W, 3)`` on the CPU."""
    cfg = model.config
    frames = batch["frames"].to(device)
    actions = batch["actions"].to(device)
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator(device).manual_seed(seed)
        state = model.initial(frames[:, : cfg.n_past], actions[:, : cfg.n_past - 1])
        _, pred = model.rollout(state, actions[:, cfg.n_past - 1 : -1], generator=gen)
    finally:
        model.train(was_training)
    pred = torch.cat([frames[:, : cfg.n_past], frames_to_uint8(pred.float())], dim=1)
    return frames.cpu(), pred.cpu()


def write_samples(writer, out_dir: Path, step: int, gt: Tensor, pred: Tensor, n_past: int) -> Path:
    """``samples/grid`` and ``samples/video`` at ``step`` to ``writer``, and the video as
    ``out_dir/samples/step_XXXXXXX.gif``; returns the GIF's path."""
    frames = _side_by_side(pred, gt, n_past)  # (T, H', W', 3) uint8
    writer.add_image("samples/grid", _strip(pred, gt, n_past), step, dataformats="HWC")
    add_tensorboard_video(writer, "samples/video", frames, step, fps=4)
    path = out_dir / "samples" / f"step_{step:07d}.gif"
    write_video(path, frames.numpy(), fps=4)
    return path


_GREEN = torch.tensor([0, 200, 0], dtype=torch.uint8)
_RED = torch.tensor([220, 0, 0], dtype=torch.uint8)


def _framed(frames: Tensor, n_past: int, predicted: bool) -> Tensor:
    """Pad every frame (N, T, H, W, 3) with a 1-pixel border: green for ground truth and context,
    red for predicted frames."""
    n, t, h, w, _ = frames.shape
    out = torch.empty(n, t, h + 2, w + 2, 3, dtype=torch.uint8)
    out[:] = _GREEN
    if predicted:
        out[:, n_past:] = _RED
    out[:, :, 1:-1, 1:-1] = frames
    return out


def _side_by_side(pred: Tensor, gt: Tensor, n_past: int) -> Tensor:
    """Video frames (T, N*H', 2*W', 3): each row is one sequence, prediction | ground truth."""
    pairs = torch.cat([_framed(pred, n_past, True), _framed(gt, n_past, False)], dim=3)  # (N, T, H', 2W', 3)
    return pairs.permute(1, 0, 2, 3, 4).flatten(1, 2)


def _strip(pred: Tensor, gt: Tensor, n_past: int) -> np.ndarray:
    """One image (2*N*H', T*W', 3): per sequence, a row of context + prediction over a row of
    ground truth."""
    rows = torch.stack([_framed(pred, n_past, True), _framed(gt, n_past, False)], dim=1).flatten(0, 1)
    return rows.permute(0, 2, 1, 3, 4).flatten(0, 1).flatten(1, 2).numpy()  # (2N*H', T*W', 3)
