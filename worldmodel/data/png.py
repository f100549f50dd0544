"""SVG-style PNG folders: ``processed_data/{train,test}/<traj>/<k>/<t>.png`` (frames only).

This is the layout written by ``edenton/svg``'s ``convert_bair.py``: ``<traj>`` is the TFRecord
file stem, ``<k>`` the trajectory number in it, ``<t>`` the step (0..29). Actions and states were
discarded by that conversion, so items carry ``frames`` only and ``has_actions`` is False.
Beware: that script saved float frames with ``scipy.misc.imsave``, which stretched each frame's
contrast to the full 0..255 range; frames are returned exactly as stored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from worldmodel.data.windows import WindowDataset, fingerprint_of
from worldmodel.errors import DataError

ROOT_NAME = "processed_data"
_FRAME = re.compile(r"^(\d+)\.png$")


def _natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def _subdirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: _natural_key(d.name))


def _looks_like_png_root(path: Path) -> bool:
    for split in ("train", "test"):
        folder = path / split
        if folder.is_dir():
            for traj in _subdirs(folder)[:1]:
                for seq in _subdirs(traj)[:1]:
                    if any(_FRAME.match(f.name) for f in seq.iterdir()):
                        return True
    return False


def find_png(path: Path) -> Path | None:
    """The ``processed_data`` folder if ``path`` is it or holds it, else None."""
    if (path / ROOT_NAME).is_dir():
        return path / ROOT_NAME
    if path.name == ROOT_NAME or _looks_like_png_root(path):
        return path
    return None


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: frame file missing") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unreadable PNG ({err})") from None


class PngDataset(WindowDataset):
    """Windows of ``frames`` over SVG-style PNG sequence folders; no actions or states."""

    format_name = "png"
    has_actions = False

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
        folder = self.root / split
        if not folder.is_dir():
            have = sorted(d.name for d in self.root.iterdir() if d.is_dir()) if self.root.is_dir() else []
            raise DataError(f"{folder}: PNG split folder not found (found: {have or 'no folders'})")
        self.folder = folder
        self.sequences = [seq for traj in _subdirs(folder) for seq in _subdirs(traj)]
        if not self.sequences:
            raise DataError(f"{folder}: no <traj>/<k>/ sequence folders with PNG frames")
        length = self._length(0)
        first = _load_png(self.sequences[0] / "0.png")
        if first.shape[0] != first.shape[1]:
            raise DataError(
                f"{self.sequences[0] / '0.png'}: wrong image size {first.shape[1]}x{first.shape[0]}, "
                "frames must be square"
            )
        super().__init__(
            seq_len,
            split=split,
            random_offset=random_offset,
            image_size=image_size,
            native_size=first.shape[0],
            episode_length=length,
            where=str(folder),
        )
        self.fingerprint = fingerprint_of(
            {
                "format": "png",
                "split": split,
                "sequences": [str(s.relative_to(folder)) for s in self.sequences],
            }
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def _where(self, i: int) -> str:
        return str(self.sequences[i])

    def _length(self, i: int) -> int:
        folder = self.sequences[i]
        steps = sorted(int(m.group(1)) for f in os.listdir(folder) if (m := _FRAME.match(f)))
        if not steps:
            raise DataError(f"{folder}: sequence folder has no <t>.png frames")
        if steps != list(range(len(steps))):
            missing = sorted(set(range(steps[-1] + 1)) - set(steps))
            raise DataError(f"{folder}: frames are not numbered 0..{steps[-1]} (missing {missing[:5]})")
        return len(steps)

    def _read(self, i: int, start: int, stop: int) -> dict[str, np.ndarray]:
        size = self.native_size
        frames = np.empty((stop - start, size, size, 3), dtype=np.uint8)
        for j, t in enumerate(range(start, stop)):
            path = self.sequences[i] / f"{t}.png"
            image = _load_png(path)
            if image.shape != (size, size, 3):
                raise DataError(
                    f"{path}: wrong image size {image.shape[1]}x{image.shape[0]}, "
                    f"expected {size}x{size} like the first frame of the split"
                )
            frames[j] = image
        return {"frames": frames}
