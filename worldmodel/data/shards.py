"""The on-disk format of collected datasets: a JSON manifest and shard files of checksummed records.

Layout of a dataset folder::

    DIR/manifest.json          format, version, counts, dims, sim + policy settings, seed, split rule,
                               one entry per finished shard (file, episodes, size, sha256, record index)
    DIR/shard-00000.wms        episodes [0, K), then shard-00001.wms holds [K, 2K), ...

A finished collection can grow (``append_shard``, e.g. the episodes of an online model-based RL
loop): each append adds one shard of any size after the last episode and rewrites the manifest
atomically with ``"layout": "appended"`` (shard ``i`` then holds the episodes after shard
``i - 1``'s; without the key the layout is ``"fixed"``, K per shard). Finished shard files are
never written again.

A shard file is the 8-byte magic ``WMSHARD1`` followed by one record per episode, framed like a
TFRecord but with zlib's CRC-32 (fast in C)::

    uint64 length | uint32 crc32(length bytes) | payload[length] | uint32 crc32(payload)

and a payload is ``uint32 n | n bytes of JSON header | raw little-endian array bytes``; the header
names each array (``name, dtype, shape, offset, nbytes``) plus the episode number and its seed.
Records are located by offsets stored in the manifest, so reading one episode is one seek and one
read: nothing ever loads a whole shard. Truncation (file shorter than the manifest says) is found
when a reader opens a shard, bit flips when the record's CRC is checked on every read; both raise
:class:`DataError` naming the shard file and the episode.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from worldmodel import files
from worldmodel.errors import DataError

FORMAT_NAME = "worldmodel-shards"
FORMAT_VERSION = 1
MAGIC = b"WMSHARD1"
MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.wms"


def encode_episode(episode: int, seed: int, arrays: dict[str, np.ndarray]) -> bytes:
    """One episode's record payload (see the module docstring). Arrays are stored little-endian."""
    specs, blobs, offset = [], [], 0
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        blob = arr.tobytes()
        specs.append([name, arr.dtype.str, list(arr.shape), offset, len(blob)])
        blobs.append(blob)
        offset += len(blob)
    header = json.dumps({"episode": episode, "seed": seed, "arrays": specs}, sort_keys=True).encode()
    return struct.pack("<I", len(header)) + header + b"".join(blobs)


def frame(payload: bytes) -> bytes:
    """Length header, its CRC, the payload and the payload's CRC."""
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload + struct.pack("<I", zlib.crc32(payload))


class ShardWriter:
    """Writes a shard to a temporary name (``files.temp_path``); :meth:`finish` commits it into place.

    Returns the shard's manifest entry (file, size, sha256, per-record ``[offset, length, crc32]``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = files.temp_path(self.path)
        self._f = open(self.tmp, "wb")
        self._sha = hashlib.sha256()
        self._pos = 0
        self.records: list[list[int]] = []
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self._sha.update(data)
        self._pos += len(data)

    def add(self, payload: bytes) -> None:
        """Append one record."""
        self.records.append([self._pos + 12, len(payload), zlib.crc32(payload)])
        self._write(frame(payload))

    def finish(self) -> dict[str, Any]:
        """Flush, fsync, rename to the final name; the manifest entry of this shard."""
        self._f.close()
        files.commit(self.tmp, self.path)  # fsync, the usual mode, rename
        return {
            "file": self.path.name,
            "bytes": self._pos,
            "sha256": self._sha.hexdigest(),
            "records": self.records,
        }

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self._f.close()
        self.tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_record(f: BinaryIO, path: Path, episode: int, offset: int, length: int, crc: int) -> bytes:
    """One record's payload, every check done; errors name the shard file and the episode."""
    f.seek(offset - 12)
    blob = f.read(length + 16)
    where = f"{path}: episode {episode} (record at byte {offset - 12})"
    if len(blob) != length + 16:
        raise DataError(f"{where}: truncated shard: record cut short ({len(blob)} of {length + 16} bytes)")
    head, payload = blob[:8], blob[12 : 12 + length]
    (declared,) = struct.unpack("<Q", head)
    (head_crc,) = struct.unpack("<I", blob[8:12])
    (data_crc,) = struct.unpack("<I", blob[12 + length :])
    if zlib.crc32(head) != head_crc or declared != length:
        raise DataError(
            f"{where}: corrupt shard: record length header is damaged or disagrees with the "
            f"manifest ({declared} vs {length} bytes)"
        )
    actual = zlib.crc32(payload)
    if actual != data_crc or actual != crc:
        raise DataError(
            f"{where}: corrupt shard: CRC-32 mismatch (stored {data_crc:#010x}, manifest "
            f"{crc:#010x}, data {actual:#010x})"
        )
    return payload


def decode_episode(payload: bytes, path: Path, episode: int) -> dict[str, np.ndarray]:
    """Arrays of one record payload (copies, writable)."""
    where = f"{path}: episode {episode}"
    try:
        (n,) = struct.unpack("<I", payload[:4])
        header = json.loads(payload[4 : 4 + n])
        base = 4 + n
        out = {}
        for name, dtype, shape, offset, nbytes in header["arrays"]:
            if base + offset + nbytes > len(payload):
                raise ValueError(f"array {name!r} runs past the end of the record")
            arr = np.frombuffer(
                payload, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=base + offset
            )
            out[name] = arr.reshape(shape).copy()
    except (ValueError, KeyError, TypeError, struct.error) as err:
        raise DataError(f"{where}: malformed record: {err}") from None
    if header.get("episode") != episode:
        raise DataError(f"{where}: record holds episode {header.get('episode')}, manifest says {episode}")
    return out


# ------------------------------------------------------------------------------------- manifest


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write a manifest: sorted keys, synced to disk before the rename (never half-written)."""
    files.write_json_atomic(path, obj, indent=1, sort_keys=True, fsync=True)


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``root/manifest.json``; :class:`DataError` on anything inconsistent."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: manifest is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(
            f"{path}: not a {FORMAT_NAME} manifest (format={manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{path}: manifest is not a JSON object"
        )
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {manifest.get('version')!r} is not supported "
            f"(this reader knows version {FORMAT_VERSION})"
        )
    check_manifest(manifest, path)
    return manifest


_REQUIRED = (
    "episodes",
    "seq_len",
    "image_size",
    "action_dim",
    "state_dim",
    "max_objects",
    "episodes_per_shard",
    "num_shards",
    "shards",
    "split",
    "complete",
)


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Internal consistency: counts, shard coverage, record counts."""
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise DataError(f"{path}: inconsistent manifest: missing keys {missing}")
    n, k, s = manifest["episodes"], manifest["episodes_per_shard"], manifest["num_shards"]
    layout = manifest.get("layout", "fixed")
    if layout == "appended":
        _check_appended(manifest, path)
        return
    if layout != "fixed":
        raise DataError(f"{path}: inconsistent manifest: unknown shard layout {layout!r}")
    if not (isinstance(n, int) and isinstance(k, int) and n > 0 and k > 0 and s == -(-n // k)):
        raise DataError(
            f"{path}: inconsistent manifest: episodes={n}, episodes_per_shard={k}, num_shards={s}"
        )
    seen = set()
    for entry in manifest["shards"]:
        i = entry.get("index")
        first, count = entry.get("first_episode"), entry.get("episodes")
        if not isinstance(i, int) or not 0 <= i < s or i in seen:
            raise DataError(f"{path}: inconsistent manifest: bad or duplicate shard index {i!r}")
        seen.add(i)
        if first != i * k or count != min(k, n - i * k) or len(entry.get("records", [])) != count:
            raise DataError(
                f"{path}: inconsistent manifest: shard {entry.get('file')} should hold episodes "
                f"[{i * k}, {min(n, (i + 1) * k)}) with one record each"
            )
        if entry.get("file") != shard_name(i):
            raise DataError(
                f"{path}: inconsistent manifest: shard {i} is named {entry.get('file')!r}, "
                f"expected {shard_name(i)!r}"
            )
    _check_split(manifest["split"], path)
    _check_arrays(manifest.get("arrays", {}), path)
    if manifest["complete"] and len(seen) != s:
        raise DataError(f"{path}: inconsistent manifest: marked complete but lists {len(seen)} of {s} shards")


def _check_appended(manifest: dict[str, Any], path: Path) -> None:
    """The ``appended`` layout (``append_shard``): complete, and shard ``i`` (named ``shard_name(i)``)
    holds the ``episodes`` (>= 1) after shard ``i - 1``'s, so the shards cover ``[0, episodes)``
    in order; the collection's shards keep their ``episodes_per_shard`` and appended ones hold
    whatever each append gave."""
    n, s, shards = manifest["episodes"], manifest["num_shards"], manifest["shards"]
    if not manifest["complete"] or not isinstance(n, int) or not isinstance(s, int) or len(shards) != s:
        raise DataError(
            f"{path}: inconsistent manifest: an appended dataset must be complete and list all "
            f"{s} shards (lists {len(shards)}, complete={manifest['complete']})"
        )
    first = 0
    for i, entry in enumerate(sorted(shards, key=lambda e: e.get("index", -1))):
        count = entry.get("episodes")
        if (
            entry.get("index") != i
            or entry.get("file") != shard_name(i)
            or entry.get("first_episode") != first
            or not isinstance(count, int)
            or count < 1
            or len(entry.get("records", [])) != count
        ):
            raise DataError(
                f"{path}: inconsistent manifest: shard {entry.get('file')} (index {entry.get('index')!r}) "
                f"should be {shard_name(i)} holding episodes from {first} on, one record each"
            )
        first += count
    if first != n:
        raise DataError(f"{path}: inconsistent manifest: the shards hold {first} episodes, manifest says {n}")
    _check_split(manifest["split"], path)
    _check_arrays(manifest.get("arrays", {}), path)


def append_shard(
    root: str | os.PathLike,
    episodes: list[tuple[int, dict[str, np.ndarray]]],
    extra: dict[str, Any] | None = None,
    update: Any = None,
) -> dict[str, Any]:
    """Append ``episodes`` (``(seed, arrays)`` each, arrays as the manifest's ``arrays`` say) to the
    complete dataset in ``root`` as one new shard, numbered after the last episode.

    The shard is written to a temporary name and renamed into place, then the manifest (its
    ``episodes``, ``num_shards`` and ``shards`` grown, ``layout`` set to ``"appended"``,
    ``update(manifest)`` applied when given) replaces the old one atomically: the manifest is the
    record of what the dataset holds, so a kill before its rename leaves the dataset as it was
    (a shard file it does not list is overwritten by the next append). Finished shards are never
    opened for writing. Returns the new shard's manifest entry (with ``extra`` merged in).
    """
    root = Path(root)
    manifest = load_manifest(root)
    path = root / MANIFEST
    if not manifest["complete"]:
        raise DataError(f"{path}: collection is unfinished; finish it before appending episodes")
    if not episodes:
        raise ValueError(f"{path}: append_shard needs at least one episode")
    index, first = manifest["num_shards"], manifest["episodes"]
    for k, (_, arrays) in enumerate(episodes):
        if "arrays" in manifest:
            check_record(arrays, manifest["arrays"], f"{path}: appended episode {first + k}")
    writer = ShardWriter(root / shard_name(index))
    try:
        for k, (seed, arrays) in enumerate(episodes):
            writer.add(encode_episode(first + k, int(seed), arrays))
    except BaseException:
        writer.abort()
        raise
    entry = writer.finish()
    entry.update(index=index, first_episode=first, episodes=len(episodes), **(extra or {}))
    manifest["shards"].append(entry)
    manifest.update(episodes=first + len(episodes), num_shards=index + 1, layout="appended")
    if update is not None:
        update(manifest)
    check_manifest(manifest, path)
    write_json_atomic(path, manifest)
    return entry


def _check_split(split: Any, path: Path) -> None:
    every = split.get("test_every") if isinstance(split, dict) else None
    offset = split.get("test_offset") if isinstance(split, dict) else None
    if not (isinstance(every, int) and isinstance(offset, int) and every >= 1 and 0 <= offset < every):
        raise DataError(
            f"{path}: inconsistent manifest: split needs whole numbers test_every >= 1 and "
            f"0 <= test_offset < test_every, got {split!r}"
        )


def _check_arrays(arrays: Any, path: Path) -> None:
    """``arrays``: ``{name: [dtype, shape]}``, what every record must hold."""
    ok = isinstance(arrays, dict)
    for spec in arrays.values() if ok else ():
        try:
            dtype, shape = spec
            np.dtype(dtype)
            ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise DataError(f"{path}: inconsistent manifest: arrays must map names to [dtype, shape]")


def check_record(arrays: dict[str, np.ndarray], expected: dict[str, Any], where: str) -> None:
    """The arrays of one record against the manifest's ``arrays``: same names, dtypes and shapes."""
    if set(arrays) != set(expected):
        raise DataError(f"{where}: record holds arrays {sorted(arrays)}, manifest says {sorted(expected)}")
    for name, (dtype, shape) in expected.items():
        arr = arrays[name]
        stored = list(arr.shape)
        if not shape and stored == [1]:  # encode_episode writes per-episode scalars as 1 element
            stored = []
        if arr.dtype != np.dtype(dtype) or stored != list(shape):
            raise DataError(
                f"{where}: array {name!r} is {arr.dtype.str} {list(arr.shape)}, manifest says "
                f"{dtype} {list(shape)}"
            )


def split_of(episode: int, split: dict[str, Any]) -> str:
    """``"test"`` or ``"train"`` by the manifest's rule ``episode % test_every == test_offset``."""
    return "test" if episode % split["test_every"] == split["test_offset"] else "train"


class ShardReader:
    """Random access to the episodes of one shard; opens its file lazily (fork/spawn safe, picklable)."""

    def __init__(self, root: Path, entry: dict[str, Any]) -> None:
        self.path = Path(root) / entry["file"]
        self.entry = entry
        self._f: BinaryIO | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "entry": self.entry, "_f": None, "_pid": -1}

    def _file(self) -> BinaryIO:
        if self._f is None or self._pid != os.getpid():
            self._f = self.open_checked(self.path, self.entry)
            self._pid = os.getpid()
        return self._f

    @staticmethod
    def open_checked(path: Path, entry: dict[str, Any]) -> BinaryIO:
        """Open a shard, checking its magic and that its size matches the manifest."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise DataError(f"{path}: shard file listed in the manifest is missing") from None
        size = os.fstat(f.fileno()).st_size
        if size != entry["bytes"]:
            f.close()
            kind = "truncated" if size < entry["bytes"] else "oversized"
            raise DataError(f"{path}: {kind} shard: {size} bytes, manifest says {entry['bytes']}")
        if f.read(len(MAGIC)) != MAGIC:
            f.close()
            raise DataError(f"{path}: not a worldmodel shard (bad magic bytes)")
        return f

    def read(self, k: int) -> dict[str, np.ndarray]:
        """Arrays of the shard's ``k``-th episode."""
        episode = self.entry["first_episode"] + k
        offset, length, crc = self.entry["records"][k]
        payload = read_record(self._file(), self.path, episode, offset, length, crc)
        return decode_episode(payload, self.path, episode)

    def close(self) -> None:
        """Close the file if open."""
        if self._f is not None:
            self._f.close()
            self._f = None
