"""A NumPy stand-in for the PushTable sim: fast, deterministic episodes for storage tests.

Used through ``collect(..., _factory="data_fake_sim:fake_rollout_factory")``; the spawned workers
import it from ``tests/`` (on ``sys.path`` under pytest, which spawn passes on).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

MAX_OBJECTS = 4


def fake_rollout_factory(env_kwargs, policy_kwargs):
    size = env_kwargs["image_size"]
    delay = float(os.environ.get("WM_FAKE_SIM_DELAY", "0"))

    def run(env_seed, policy_seed, seq_len):
        rng = np.random.default_rng([env_seed, policy_seed])
        if delay:
            time.sleep(delay)
        objects = np.full((seq_len, MAX_OBJECTS, 3), np.nan, np.float32)
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        objects[:, :n] = rng.normal(size=(1, n, 3)).astype(np.float32)
        objects[:, 0, 0] += np.linspace(0, rng.uniform(0, 0.05), seq_len, dtype=np.float32)
        return {
            "frames": rng.integers(0, 256, (seq_len, size, size, 3), dtype=np.uint8),
            "actions": rng.uniform(-1, 1, (seq_len, 4)).astype(np.float32),
            "states": rng.normal(size=(seq_len, 3)).astype(np.float32),
            "objects": objects,
            "goal": rng.normal(size=3).astype(np.float32),
            "target": np.int64(0),
            "num_objects": np.int64(n),
            "pushed": np.bool_(rng.random() < policy_kwargs["push_probability"]),
        }

    return run


def fake_sim_info(env_kwargs):
    return {"fake": True, **env_kwargs}, MAX_OBJECTS


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ..." — comm may hold spaces, so split after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; the ones still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.05)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
