"""The reader of collected shard datasets, and ``open_dataset``, which detects a folder's format.

The windows themselves (``WindowDataset``: random or fixed offsets, resizing, the item keys) are in
``windows.py``, the base of every reader; ``bair.py`` and ``png.py`` hold the other two readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from worldmodel.data import shards as sh
from worldmodel.data.bair import BairDataset, find_bair
from worldmodel.data.png import PngDataset, find_png
from worldmodel.data.windows import WindowDataset, fingerprint_of
from worldmodel.errors import DataError


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
            split=split,
            random_offset=random_offset,
            image_size=image_size,
            native_size=manifest["image_size"],
            episode_length=manifest["seq_len"],
            where=str(self.root),
        )
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
