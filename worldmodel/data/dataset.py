"""Fixed-length windows over sequence datasets, and ``open_dataset`` that detects the format.

Every dataset here is a ``torch.utils.data.Dataset`` with one item per sequence of the split:
``ds[i]`` is a window of ``seq_len`` consecutive steps of sequence ``i`` (see ``batch.py`` for the
keys, dtypes and time alignment). The window starts at a random offset drawn from torch's global
RNG when ``random_offset`` is true (the default for ``split="train"``; a ``DataLoader`` seeds that
RNG per worker, so a seeded loader generator makes it reproducible) and at step 0 otherwise.
Files are opened lazily in the process that reads them, so the datasets pickle cleanly into
``DataLoader`` workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from worldmodel.data import shards as sh
from worldmodel.errors import DataError


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
        random_offset: random start (training) or start 0 (evaluation).
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
        random_offset: bool,
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
        self.random_offset = bool(random_offset)
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


class ShardDataset(WindowDataset):
    """Windows over a collected dataset (``manifest.json`` + shard files); see ``shards.py``."""

    format_name = "worldmodel-shards"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        seq_len: int = 12,
        *,
        random_offset: bool | None = None,
        image_size: int | None = None,
    ) -> None:
        self.root = Path(root)
        manifest = sh.load_manifest(self.root)
        path = self.root / sh.MANIFEST
        if not manifest["complete"]:
            raise DataError(
                f"{path}: collection is unfinished ({len(manifest['shards'])} of "
                f"{manifest['num_shards']} shards); re-run `worldmodel collect` with the same "
                "settings to finish it"
            )
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all' for {path}, got {split!r}")
        super().__init__(
            seq_len,
            split == "train" if random_offset is None else random_offset,
            image_size,
            manifest["image_size"],
            manifest["seq_len"],
            str(self.root),
        )
        self.split = split
        self.manifest = manifest
        self.action_dim, self.state_dim = manifest["action_dim"], manifest["state_dim"]
        self.readers = [sh.ShardReader(self.root, e) for e in manifest["shards"]]
        # (reader index, record index) of each episode of the split, in episode order.
        self.index = [
            (r, k)
            for r, e in enumerate(manifest["shards"])
            for k in range(e["episodes"])
            if split == "all" or sh.split_of(e["first_episode"] + k, manifest["split"]) == split
        ]
        if not self.index:
            rule = manifest["split"].get("rule", manifest["split"])
            raise DataError(
                f"{path}: split {split!r} holds no episodes ({manifest['episodes']} episodes, "
                f"split rule: {rule})"
            )
        for reader in self.readers:  # size + magic of every shard now: truncation fails at open
            sh.ShardReader.open_checked(reader.path, reader.entry).close()
        self.fingerprint = fingerprint_of(
            {
                "split": split,
                "manifest": {k: v for k, v in manifest.items() if k != "shards"},
                "shards": [e["sha256"] for e in manifest["shards"]],
            }
        )

    def __len__(self) -> int:
        return len(self.index)

    def _where(self, i: int) -> str:
        r, k = self.index[i]
        return f"{self.readers[r].path} episode {self.readers[r].entry['first_episode'] + k}"

    def episode_number(self, i: int) -> int:
        """Global episode number of item ``i``."""
        r, k = self.index[i]
        return self.readers[r].entry["first_episode"] + k

    def _read(self, i: int, start: int, stop: int) -> dict[str, np.ndarray]:
        r, k = self.index[i]
        ep = self.readers[r].read(k)
        if "arrays" in self.manifest:
            sh.check_record(ep, self.manifest["arrays"], self._where(i))
        frames = ep["frames"]
        if frames.shape[1:] != (self.native_size, self.native_size, 3) or len(frames) != self.episode_length:
            raise DataError(
                f"{self._where(i)}: frames have shape {frames.shape}, manifest says "
                f"({self.episode_length}, {self.native_size}, {self.native_size}, 3)"
            )
        return {
            "frames": frames[start:stop],
            "actions": ep["actions"][start:stop],
            "states": ep["states"][start:stop],
            "objects": ep["objects"][start:stop],
            # Per-episode task (no time axis): what the push-to-goal reward is computed from.
            "goal": np.asarray(ep["goal"], np.float32).reshape(3),
            "target": np.asarray(ep["target"], np.int64).reshape(()),
            "num_objects": np.asarray(ep["num_objects"], np.int64).reshape(()),
        }


def _is_shard_root(p: Path) -> bool:
    return (p / sh.MANIFEST).is_file()


def open_dataset(
    path: str | os.PathLike,
    split: str = "train",
    seq_len: int = 12,
    *,
    random_offset: bool | None = None,
    image_size: int | None = None,
) -> WindowDataset:
    """Open a dataset folder, detecting its format.

    Args:
        path: a collected dataset (folder with ``manifest.json``); a BAIR download (the folder holding
            ``softmotion30_44k/``, that folder, or its ``train``/``test`` folder); or an SVG-style PNG
            tree (``processed_data/{train,test}/<traj>/<k>/<t>.png``, or its parent).
        split: ``"train"`` or ``"test"`` (collected data also accepts ``"all"``; BAIR any subfolder
            name such as ``"val"``).
        seq_len: window length ``T`` = context + future frames.
        random_offset: random window start; defaults to ``split == "train"``; otherwise windows start
            at step 0.
        image_size: output frame size; ``None`` keeps the stored size, another value resizes (area
            averaging down, bilinear up).

    Returns:
        A ``Dataset`` whose items are ``dict(frames=uint8 (T,H,W,3), actions=float32 (T,4),
        states=float32 (T,S)[, objects=float32 (T,4,3), goal=float32 (3,), target=int64 (),
        num_objects=int64 ()])`` (the bracketed keys for collected sim data only). PNG folders
        carry frames only (``ds.has_actions`` is False).

    Raises:
        DataError: missing path, empty or unrecognised folder, corrupt/truncated/inconsistent files.
        ValueError: ``seq_len`` longer than the episodes, bad ``split``.
    """
    from worldmodel.data.bair import BairDataset, find_bair
    from worldmodel.data.png import PngDataset, find_png

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if not p.is_dir():
        raise DataError(f"{p}: expected a dataset folder, found a file")
    kw = {"random_offset": random_offset, "image_size": image_size}
    if _is_shard_root(p):
        return ShardDataset(p, split, seq_len, **kw)
    bair = find_bair(p, split)
    if bair is not None:
        return BairDataset(bair, seq_len, split=split, **kw)
    png = find_png(p)
    if png is not None:
        return PngDataset(png, split, seq_len, **kw)
    if not any(p.iterdir()):
        raise DataError(f"{p}: folder is empty")
    raise DataError(
        f"{p}: not a recognised dataset: expected {sh.MANIFEST} (worldmodel collect), "
        "softmotion30_44k/{train,test}/*.tfrecords (BAIR) or "
        "processed_data/{train,test}/<traj>/<k>/<t>.png (SVG PNG folders)"
    )
