"""The BAIR robot pushing dataset (``softmotion30_44k``) read straight from its TFRecords.

One ``tf.train.Example`` per trajectory with, for each step ``i`` (0..29):
``{i}/image_aux1/encoded`` (raw 64·64·3 uint8 RGB bytes, not JPEG), ``{i}/image_main/encoded``
(second camera, unused), ``{i}/action`` (float[4]) and ``{i}/endeffector_pos`` (float[3]).
Like every public model we use camera ``image_aux1``; actions become ``actions`` and end-effector
positions ``states``. Files hold 256 trajectories each; their record offsets are indexed once at
open (12-byte header reads), so any trajectory is one seek away. No TensorFlow needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from worldmodel.data.tfrecord import decode_example, index_records, read_record
from worldmodel.data.windows import WindowDataset, fingerprint_of
from worldmodel.errors import DataError

ROOT_NAME = "softmotion30_44k"
CAMERA = "image_aux1"
SPLIT_NAMES = ("train", "test", "val")


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def _records_in(folder: Path) -> list[Path]:
    return sorted((f for f in folder.glob("*.tfrecords") if f.is_file()), key=_natural_key)


def find_bair(path: Path, split: str) -> Path | None:
    """The folder of ``split``'s ``*.tfrecords`` if ``path`` looks like a BAIR download, else None."""
    if (path / ROOT_NAME).is_dir():
        base = path / ROOT_NAME
    elif path.name == ROOT_NAME or any(_records_in(path / s) for s in SPLIT_NAMES if (path / s).is_dir()):
        base = path
    elif _records_in(path):  # a split folder itself
        if path.name in SPLIT_NAMES and path.name != split:
            raise ValueError(
                f"{path} is the {path.name!r} split but split={split!r} was asked for; "
                f"pass split={path.name!r} or the parent folder"
            )
        return path
    else:
        return None
    folder = base / split
    if not folder.is_dir():
        have = sorted(d.name for d in base.iterdir() if d.is_dir())
        raise DataError(f"{folder}: BAIR split folder not found (found: {have or 'no folders'})")
    if not _records_in(folder):
        raise DataError(f"{folder}: no .tfrecords files in this BAIR split folder")
    return folder


class BairDataset(WindowDataset):
    """Windows over BAIR TFRecords: ``frames`` (camera ``image_aux1``), ``actions``, ``states``."""

    format_name = "bair"

    def __init__(
        self,
        folder: str | os.PathLike,
        seq_len: int = 12,
        *,
        split: str = "train",
        random_offset: bool | None = None,
        image_size: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.files = _records_in(self.folder)
        if not self.files:
            raise DataError(f"{self.folder}: no .tfrecords files")
        self.index: list[tuple[int, int, int]] = []  # (file number, data offset, data length)
        self._file_start: list[int] = []  # index of each file's first record
        for n, f in enumerate(self.files):
            self._file_start.append(len(self.index))
            records = index_records(f)
            if not records:
                raise DataError(f"{f}: TFRecord file holds no records (empty file)")
            self.index.extend((n, off, length) for off, length in records)
        self._handles: dict[int, BinaryIO] = {}
        self._pid = -1
        steps, size, action_dim, state_dim = self._probe()
        self.action_dim, self.state_dim = action_dim, state_dim
        super().__init__(
            seq_len,
            split=split,
            random_offset=random_offset,
            image_size=image_size,
            native_size=size,
            episode_length=steps,
            where=str(self.folder),
        )
        self.fingerprint = fingerprint_of(
            {"format": "bair", "split": split, "files": [[f.name, f.stat().st_size] for f in self.files]}
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, -1
        return state

    def __len__(self) -> int:
        return len(self.index)

    def _where(self, i: int) -> str:
        n, _, _ = self.index[i]
        return f"{self.files[n]} record {i - self._first_of(n)}"

    def _first_of(self, n: int) -> int:
        return self._file_start[n]

    def _record(self, i: int) -> bytes:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        n, offset, length = self.index[i]
        f = self._handles.get(n)
        if f is None:
            f = self._handles[n] = open(self.files[n], "rb")
        return read_record(f, self.files[n], i - self._first_of(n), offset, length)

    def _decode(self, i: int, keys: list[str] | None) -> dict:
        data = self._record(i)
        try:
            return decode_example(data, keys)
        except ValueError as err:
            raise DataError(f"{self._where(i)}: malformed tf.train.Example ({err})") from None

    def _probe(self) -> tuple[int, int, int, int]:
        """(steps, image size, action dim, state dim) from the first record."""
        ex = self._decode(0, None)
        steps = 0
        while f"{steps}/{CAMERA}/encoded" in ex:
            steps += 1
        if steps == 0:
            raise DataError(
                f"{self._where(0)}: no '0/{CAMERA}/encoded' feature; not a BAIR softmotion record "
                f"(keys: {sorted(ex)[:6]}...)"
            )
        nbytes = len(ex[f"0/{CAMERA}/encoded"][0])
        size = round((nbytes / 3) ** 0.5)
        if size * size * 3 != nbytes:
            raise DataError(
                f"{self._where(0)}: '0/{CAMERA}/encoded' has {nbytes} bytes, not a square RGB image"
            )
        return steps, size, len(ex.get("0/action", [])), len(ex.get("0/endeffector_pos", []))

    def _read(self, i: int, start: int, stop: int) -> dict[str, np.ndarray]:
        t_len, size = self.episode_length, self.native_size
        keys = [
            f"{t}/{k}" for t in range(start, stop) for k in (f"{CAMERA}/encoded", "action", "endeffector_pos")
        ]
        ex = self._decode(i, [*keys, f"{t_len - 1}/action", f"{t_len}/action"])
        if f"{t_len - 1}/action" not in ex or f"{t_len}/action" in ex:
            raise DataError(
                f"{self._where(i)}: trajectory length differs from the first record's {t_len} steps"
            )
        frames = np.empty((stop - start, size, size, 3), dtype=np.uint8)
        actions = np.empty((stop - start, self.action_dim), dtype=np.float32)
        states = np.empty((stop - start, self.state_dim), dtype=np.float32)
        for j, t in enumerate(range(start, stop)):
            image = ex.get(f"{t}/{CAMERA}/encoded")
            if not image or len(image[0]) != size * size * 3:
                got = len(image[0]) if image else 0
                raise DataError(
                    f"{self._where(i)}: wrong image size in '{t}/{CAMERA}/encoded': {got} bytes, "
                    f"expected {size}x{size}x3 = {size * size * 3}"
                )
            frames[j] = np.frombuffer(image[0], dtype=np.uint8).reshape(size, size, 3)
            for name, out, dim in (
                ("action", actions, self.action_dim),
                ("endeffector_pos", states, self.state_dim),
            ):
                value = ex.get(f"{t}/{name}")
                if value is None or len(value) != dim or not isinstance(value, np.ndarray):
                    raise DataError(f"{self._where(i)}: '{t}/{name}' should be float[{dim}], got {value!r}")
                out[j] = value
        return {"frames": frames, "actions": actions, "states": states}
