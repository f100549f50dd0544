"""Grids of frame sequences, MP4/GIF writing (moviepy) and TensorBoard videos, shared by ``show``,
training, eval and the agent scripts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from worldmodel.files import atomic_path


def grid(frames: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile ``N`` sequences into one: uint8 ``(N, T, H, W, 3)`` → ``(T, H', W', 3)``.

    Sequences fill a ``ceil(N / ncols) × ncols`` grid row by row, separated (and framed) by ``pad``
    pixels of ``pad_value``; empty cells stay ``pad_value``. Accepts torch tensors too.
    """
    frames = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected (N, T, H, W, 3), got shape {frames.shape}")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    n, t, h, w, _ = frames.shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    out = np.full((t, nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), pad_value, dtype=frames.dtype)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[:, y : y + h, x : x + w] = frames[i]
    return out


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames as ``.mp4`` (H.264) or ``.gif``; returns the path.

    Written through ``worldmodel.files.atomic_path``, so an interrupted write never leaves a half
    file at ``path``. MP4 frames are padded to even sizes (needed by yuv420p).
    """
    from moviepy import ImageSequenceClip

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".gif"):
        raise ValueError(f"{path}: video must end in .mp4 or .gif")
    frames = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames: expected non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if ext == ".mp4" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    # moviepy sums n float durations (n * 0.1 -> 0.7999...) and writes int(duration * fps) frames,
    # dropping the last one; half a frame of slack gives exactly n.
    clip = ImageSequenceClip(list(frames), fps=fps).with_duration((len(frames) + 0.5) / fps)
    try:
        with atomic_path(path, fsync=False) as tmp:
            if ext == ".gif":
                clip.write_gif(str(tmp), fps=fps, logger=None)
            else:
                clip.write_videofile(
                    str(tmp),
                    fps=fps,
                    codec="libx264",
                    audio=False,
                    logger=None,
                    ffmpeg_params=["-pix_fmt", "yuv420p"],
                )
    finally:
        clip.close()
    return path


def add_tensorboard_video(writer, tag: str, frames: np.ndarray, step: int, fps: float = 4.0) -> None:
    """Log uint8 ``(T, H, W, 3)`` frames to TensorBoard as a video: an animated GIF in an image
    summary, which is what ``SummaryWriter.add_video`` writes (``add_video`` itself encodes through
    ``moviepy.editor``, a module moviepy 2 removed). Shown in the Images tab, like ``add_video``'s.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (SB3's TensorBoard output holds one).
        tag: e.g. ``samples/video`` or ``real/video``.
        frames: uint8 ``(T, H, W, 3)`` (a torch tensor too).
        step: the global step.
        fps: playback speed.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    frames = np.asarray(frames.cpu() if hasattr(frames, "cpu") else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames: expected non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _t, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def gif_bytes(frames: np.ndarray, fps: float = 4.0) -> bytes:
    """uint8 ``(T, H, W, 3)`` frames as an animated, looping GIF file in memory (PIL: an adaptive
    palette per frame, so frames of more than 256 colours are quantised; identical consecutive
    frames are merged into one longer one)."""
    import io

    from PIL import Image

    images = [Image.fromarray(f) for f in np.asarray(frames)]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
    return buf.getvalue()
