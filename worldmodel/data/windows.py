"""Fixed-length windows over sequence datasets: the base class of every reader.

Every dataset is a ``torch.utils.data.Dataset`` with one item per sequence of the split: ``ds[i]``
is a window of ``seq_len`` consecutive steps of sequence ``i`` (see ``batch.py`` for the keys,
dtypes and time alignment). The window starts at a random offset drawn from torch's global RNG
when ``random_offset`` is true (the default for ``split="train"``; a ``DataLoader`` seeds that RNG
per worker, so a seeded loader generator makes it reproducible) and at step 0 otherwise. Files are
opened lazily in the process that reads them, so the datasets pickle cleanly into ``DataLoader``
workers. The readers (``dataset.ShardDataset``, ``bair.BairDataset``, ``png.PngDataset``) build on
it; ``worldmodel.data.open_dataset`` picks one by the folder's format.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` → uint8 ``(T, size, size, 3)``: area averaging down, bilinear up."""
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    if size < frames.shape[1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    else:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class WindowDataset(Dataset):
    """Base class: subclasses provide ``_length(i)`` and ``_read(i, start, stop) -> dict of arrays``.

    Attributes:
        seq_len: window length ``T`` (context + future).
        split: the split opened (``"train"``, ``"test"``, ...).
        random_offset: random start (training) or start 0 (evaluation); a reader given None starts
            at random in the ``"train"`` split only.
        has_actions: whether items carry ``actions`` and ``states`` (PNG folders do not).
        spec: ``dict(format, image_size, action_dim, state_dim, seq_len, episodes, episode_length)``.
        fingerprint: stable hash of what was opened (manifest or file list with sizes).
    """

    format_name = "?"
    has_actions = True
    action_dim = 0
    state_dim = 0

    def __init__(
        self,
        seq_len: int,
        *,
        split: str,
        random_offset: bool | None,
        image_size: int | None,
        native_size: int,
        episode_length: int,
        where: str,
    ) -> None:
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        if seq_len > episode_length:
            raise ValueError(
                f"seq_len={seq_len} is longer than the episodes of {where} (episode length {episode_length})"
            )
        self.seq_len = seq_len
        self.split = split
        self.random_offset = split == "train" if random_offset is None else bool(random_offset)
        self.native_size = native_size
        self.image_size = image_size or native_size
        self.episode_length = episode_length
        self.fingerprint = getattr(self, "fingerprint", "")

    @property
    def spec(self) -> dict[str, Any]:
        """What a model needs to know about this data."""
        return {
            "format": self.format_name,
            "image_size": self.image_size,
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "seq_len": self.seq_len,
            "episodes": len(self),
            "episode_length": self.episode_length,
        }

    def _length(self, i: int) -> int:
        return self.episode_length

    def _read(self, i: int, start: int, stop: int) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _where(self, i: int) -> str:
        return f"sequence {i}"

    def whole_episode(self, i: int) -> dict[str, np.ndarray]:
        """Sequence ``i``'s arrays over all its steps (not a window), at the native frame size."""
        return self._read(i, 0, self._length(i))

    def window_start(self, length: int) -> int:
        """Start step of a window in a sequence of ``length`` steps."""
        if self.random_offset and length > self.seq_len:
            return int(torch.randint(0, length - self.seq_len + 1, ()).item())
        return 0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} sequences")
        index %= n
        length = self._length(index)
        if self.seq_len > length:
            raise ValueError(
                f"seq_len={self.seq_len} is longer than {self._where(index)} (episode length {length})"
            )
        start = self.window_start(length)
        arrays = self._read(index, start, start + self.seq_len)
        # ascontiguousarray turns 0-d arrays into 1-d ones; reshape keeps per-episode scalars 0-d.
        item = {k: torch.from_numpy(np.ascontiguousarray(v)).reshape(np.shape(v)) for k, v in arrays.items()}
        if self.image_size != self.native_size:
            item["frames"] = resize_frames(item["frames"], self.image_size)
        return item


def fingerprint_of(obj: Any) -> str:
    """Short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class ZeroActions(Dataset):
    """Adds all-zero ``actions`` ``(T, A)`` to items of a frames-only dataset (PNG folders), so
    action-conditioned models train and evaluate on it as if every action were "stand still"."""

    def __init__(self, dataset: Dataset, action_dim: int) -> None:
        self.dataset, self.action_dim = dataset, action_dim
        self.fingerprint = getattr(dataset, "fingerprint", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = dict(self.dataset[index])
        item["actions"] = torch.zeros(item["frames"].shape[0], self.action_dim)
        return item
