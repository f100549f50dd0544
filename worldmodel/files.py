"""Writing files so that readers never see half of one: the project's one atomic writer.

Everything the project writes (checkpoints, head files, manifests and shards, reports, videos, agent
runs) goes to a temporary name in the same folder and is renamed over the final name once complete
(``atomic_path``, or ``commit`` for a file written over a longer time, such as a shard). A kill or a
full disk therefore leaves the previous file whole and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path`` that keeps its suffix (writers such as SB3's ``save``,
    NumPy's ``savez`` and moviepy pick or append the format from it): ``.STEM.tmp-PID-RANDOM.SUFFIX``
    (unique, so two writers of one file never share a temporary)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success ``commit`` it over ``path``,
    on any error remove it (``path`` stays as it was). Parents are created.

    A full disk is an ``OSError`` (``ENOSPC``) whose message says so and that the previous file
    survived."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    existed = path.exists()
    try:
        yield tmp
        commit(tmp, path, fsync=fsync)
    except OSError as err:
        if not disk_full(err):
            raise
        kept = f"the previous {path} survived intact" if existed else f"no {path} was written"
        raise OSError(
            err.errno,
            f"{path}: the disk is full ({err.strerror or err}); {kept} and no temporary file was left: "
            "free some space and try again",
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = True) -> Path:
    """Give the finished ``tmp`` the mode ``open()`` would have given it (``0o666 & ~umask``; a
    temporary file may have been made private), flush it to disk (``fsync``), rename it over
    ``path`` and make the rename durable."""
    tmp, path = Path(tmp), Path(path)
    os.chmod(tmp, 0o666 & ~umask())
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (``atomic_path``); ``fsync`` also flushes it to disk
    before the rename (for files that must survive a power cut, such as a dataset manifest)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False, fsync: bool = False
) -> Path:
    """``write_text_atomic`` of ``obj`` as JSON with a final newline."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", fsync=fsync)


def disk_full(err: OSError) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full."""
    return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` swaps it for a
    moment, during which another thread's new file would get mode 0o666)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
