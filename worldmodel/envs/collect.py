"""Roll out the scripted pushing policy in the PushTable sim and write a sharded dataset.

The work is cut into shards of ``episodes_per_shard`` consecutive episodes; each worker process
(``spawn`` start method: MuJoCo/EGL contexts do not survive ``fork``) writes whole shards. Episode
``i`` is seeded from ``(seed, i)`` alone, so the bytes on disk do not depend on the number of
workers or the order shards finish in. The manifest is rewritten atomically after every finished
shard; a re-run over the same folder with the same settings skips the shards it lists (after
checking their size and sha256), deletes temporary files left by a killed run and redoes the rest.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.data import shards as sh
from worldmodel.errors import DataError

MOVED_THRESHOLD_M = 0.02  # an object "moved" if it ends up > 2 cm from where it started (at any step)
SPLIT_RULE = {"rule": "episode % 20 == 19 -> test, else train", "test_every": 20, "test_offset": 19}
# The settings that must agree for a re-run to resume a folder.
_RESUME_KEYS = ("episodes", "seq_len", "image_size", "episodes_per_shard", "seed", "env", "policy")


@dataclasses.dataclass
class CollectConfig:
    """What to collect; ``worldmodel collect`` flags map one-to-one onto these fields."""

    out: Path
    """Dataset folder (created; resumed if it holds an unfinished collection with the same settings)."""
    episodes: int
    """Number of episodes (sequences)."""
    seq_len: int = 30
    """Steps per episode (BAIR: 30)."""
    workers: int = 1
    """Worker processes (spawned); 0 runs everything in this process (debugging)."""
    seed: int = 0
    """Master seed; episode i uses seeds derived from (seed, i) only."""
    image_size: int = 64
    """Frame height and width."""
    num_objects: int | None = None
    """Objects per episode; None draws 1..MAX_OBJECTS per episode."""
    push_probability: float = 0.5
    """Share of episodes whose policy deliberately pushes through an object."""
    episodes_per_shard: int | None = None
    """Episodes per shard file; None: ceil(episodes / 32) clamped to [1, 100] (independent of workers)."""

    def __post_init__(self) -> None:
        from worldmodel.envs.scene import MAX_OBJECTS

        for name, low in (("episodes", 1), ("seq_len", 2), ("workers", 0), ("image_size", 8), ("seed", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.num_objects is not None and not 1 <= self.num_objects <= MAX_OBJECTS:
            raise ValueError(f"num_objects must be None or in 1..{MAX_OBJECTS}, got {self.num_objects}")
        if not 0 <= self.push_probability <= 1:
            raise ValueError(f"push_probability must be in [0, 1], got {self.push_probability}")
        if self.episodes_per_shard is not None and self.episodes_per_shard < 1:
            raise ValueError(f"episodes_per_shard must be >= 1, got {self.episodes_per_shard}")

    def shard_size(self) -> int:
        """Episodes per shard after applying the default."""
        if self.episodes_per_shard is not None:
            return int(self.episodes_per_shard)
        return min(100, max(1, -(-self.episodes // 32)))


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """(env seed, policy seed) of one episode: a pure function of the master seed and the index."""
    words = np.random.SeedSequence(seed, spawn_key=(episode,)).generate_state(2, dtype=np.uint32)
    return int(words[0]), int(words[1])


def object_moved(objects: np.ndarray, threshold: float = MOVED_THRESHOLD_M) -> bool:
    """Whether any present object was ever more than ``threshold`` (m) from its first position.

    ``objects``: float32 (T, K, 3), NaN rows for absent objects.
    """
    disp = np.linalg.norm(objects - objects[:1], axis=-1)  # (T, K)
    return bool(np.nanmax(disp, initial=0.0) > threshold) if np.isfinite(disp).any() else False


# ------------------------------------------------------------------------------------ worker side

# One thread per worker process. LP_NUM_THREADS: Mesa's software rasteriser (llvmpipe, what EGL
# uses without a GPU) starts a thread per core; with a process per core they only contend
# (measured 58 vs 73 ms per 30-step episode). Values already set by the user win.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "LP_NUM_THREADS": "1",
}

_WORKER: dict[str, Any] = {}


def _init_worker(progress_queue: Any, parent_pid: int) -> None:
    """Worker set-up: one torch thread, a progress channel, the parent's pid to notice a kill.

    The thread-count variables (:data:`WORKER_ENV`) are set by the parent before it spawns us: BLAS
    and OpenMP read them when numpy is imported, before any initializer runs.
    """
    if "torch" in sys.modules:  # never import it here: a second of start-up per worker
        sys.modules["torch"].set_num_threads(1)
    _WORKER.update(queue=progress_queue, parent=parent_pid)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int, period: float = 0.5) -> None:
    """Watchdog: end this worker once the collecting process is gone (e.g. kill -9).

    An idle pool worker would otherwise wait on its task queue forever: its siblings keep the
    queue's pipe open, so it never sees end-of-file.
    """
    while os.getppid() == parent_pid:
        time.sleep(period)
    os._exit(1)


def sim_rollout_factory(env_kwargs: dict[str, Any], policy_kwargs: dict[str, Any]) -> Callable:
    """A function ``(env_seed, policy_seed, seq_len) -> episode dict`` on one PushTable env."""
    from worldmodel.envs.policy import RandomPushPolicy, rollout
    from worldmodel.envs.push_table import PushTableEnv

    env = PushTableEnv(**env_kwargs)

    def run(env_seed: int, policy_seed: int, seq_len: int) -> dict[str, np.ndarray]:
        policy = RandomPushPolicy(seed=policy_seed, **policy_kwargs)
        return rollout(env, policy, seq_len=seq_len, seed=env_seed)

    return run


def _rollout_fn(task: dict[str, Any]) -> Callable:
    """The per-process cached rollout function for this task's settings."""
    key = repr((task["factory"], task["env"], task["policy"]))
    if _WORKER.get("key") != key:
        module, name = task["factory"].split(":")
        _WORKER["fn"] = getattr(importlib.import_module(module), name)(task["env"], task["policy"])
        _WORKER["key"] = key
    return _WORKER["fn"]


def collect_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Roll out the episodes of one shard and write it; its manifest entry."""
    fn = _rollout_fn(task)
    first, count, index = task["first_episode"], task["episodes"], task["index"]
    writer = sh.ShardWriter(Path(task["out"]) / sh.shard_name(index))
    moved = pushed = 0
    try:
        for episode in range(first, first + count):
            parent = _WORKER.get("parent")
            if parent is not None and os.getppid() != parent:
                os._exit(1)  # the collecting process was killed: stop, leave the temp file
            env_seed, policy_seed = episode_seeds(task["seed"], episode)
            ep = fn(env_seed, policy_seed, task["seq_len"])
            _check_episode(ep, task, episode)
            moved += object_moved(ep["objects"])
            pushed += bool(ep.get("pushed", False))
            writer.add(sh.encode_episode(episode, env_seed, ep))
            if (q := _WORKER.get("queue")) is not None:
                q.put(1)
            elif (cb := _WORKER.get("callback")) is not None:
                cb(1)
    except BaseException:
        writer.abort()
        raise
    entry = writer.finish()
    entry.update(index=index, first_episode=first, episodes=count, moved=moved, pushed=pushed)
    return entry


def _check_episode(ep: dict[str, np.ndarray], task: dict[str, Any], episode: int) -> None:
    t, size = task["seq_len"], task["env"]["image_size"]
    expected = {
        "frames": ((t, size, size, 3), np.uint8),
        "actions": ((t, 4), np.float32),
        "states": ((t, 3), np.float32),
    }
    for name, (shape, dtype) in expected.items():
        arr = ep.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            got = None if arr is None else f"{arr.dtype} {arr.shape}"
            raise RuntimeError(
                f"rollout of episode {episode} returned {name}={got}, expected {dtype} {shape}"
            )


# ------------------------------------------------------------------------------------ main side


def _settings(cfg: CollectConfig) -> dict[str, Any]:
    return {
        "episodes": cfg.episodes,
        "seq_len": cfg.seq_len,
        "image_size": cfg.image_size,
        "episodes_per_shard": cfg.shard_size(),
        "seed": cfg.seed,
        "env": {"image_size": cfg.image_size, "num_objects": cfg.num_objects},
        "policy": {"name": "RandomPushPolicy", "push_probability": cfg.push_probability},
    }


def _sim_description(env_kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The sim's full config (for the manifest) and MAX_OBJECTS, from a throw-away env."""
    from worldmodel.envs.push_table import MAX_OBJECTS, PushTableEnv

    env = PushTableEnv(**env_kwargs)
    try:
        config = env.config
        sim = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(vars(config))
    finally:
        env.close()
    return sim, int(MAX_OBJECTS)


def _new_manifest(cfg: CollectConfig, sim: dict[str, Any], max_objects: int) -> dict[str, Any]:
    s = _settings(cfg)
    t, size = cfg.seq_len, cfg.image_size
    return {
        "format": sh.FORMAT_NAME,
        "version": sh.FORMAT_VERSION,
        "complete": False,
        **s,
        "num_shards": -(-cfg.episodes // s["episodes_per_shard"]),
        "action_dim": 4,
        "state_dim": 3,
        "max_objects": max_objects,
        "sim": sim,
        "seeding": "episode i: np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(2) -> "
        "(env seed, policy seed)",
        "split": dict(SPLIT_RULE),
        "arrays": {
            "frames": ["|u1", [t, size, size, 3]],
            "actions": ["<f4", [t, 4]],
            "states": ["<f4", [t, 3]],
            "objects": ["<f4", [t, max_objects, 3]],
            "goal": ["<f4", [3]],
            "target": ["<i8", []],
            "num_objects": ["<i8", []],
            "pushed": ["|b1", []],
        },
        "moved_threshold_m": MOVED_THRESHOLD_M,
        "moved_share": None,
        "pushed_share": None,
        "shards": [],
    }


def _prepare(cfg: CollectConfig, sim_info: Callable) -> tuple[dict[str, Any], set[int]]:
    """Create or resume the folder: the manifest to continue from and the shard indices already done."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.tmp-*"):  # left by a killed run: never trusted
        stale.unlink(missing_ok=True)
    if (out / sh.MANIFEST).exists():
        manifest = sh.load_manifest(out)
        want = _settings(cfg)
        diff = [k for k in _RESUME_KEYS if manifest.get(k) != want[k]]
        if diff:
            raise DataError(
                f"{out / sh.MANIFEST}: folder holds a collection with different settings "
                f"({', '.join(f'{k}: {manifest.get(k)!r} vs {want[k]!r}' for k in diff)}); "
                "use another --out or the same settings to resume"
            )
        done = set()
        kept = []
        for entry in manifest["shards"]:
            path = out / entry["file"]
            if (
                path.exists()
                and path.stat().st_size == entry["bytes"]
                and sh.file_sha256(path) == entry["sha256"]
            ):
                done.add(entry["index"])
                kept.append(entry)
        manifest["shards"] = kept
        return manifest, done
    if any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty and has no {sh.MANIFEST}; choose an empty or new --out")
    sim, max_objects = sim_info(_settings(cfg)["env"])
    return _new_manifest(cfg, sim, max_objects), set()


def _finalise(manifest: dict[str, Any]) -> None:
    manifest["shards"].sort(key=lambda e: e["index"])
    n = sum(e["episodes"] for e in manifest["shards"])
    if n:
        manifest["moved_share"] = round(sum(e["moved"] for e in manifest["shards"]) / n, 6)
        manifest["pushed_share"] = round(sum(e["pushed"] for e in manifest["shards"]) / n, 6)
    manifest["complete"] = len(manifest["shards"]) == manifest["num_shards"]


def collect(
    cfg: CollectConfig,
    progress: Callable[[int], None] | None = None,
    *,
    _factory: str = "worldmodel.envs.collect:sim_rollout_factory",
    _sim_info: Callable | None = None,
) -> dict[str, Any]:
    """Collect (or finish collecting) a dataset; returns a summary dict.

    Args:
        cfg: what to collect.
        progress: called with the number of newly finished episodes (drive a progress bar with it).

    Returns:
        ``{"out", "episodes", "shards", "new_episodes", "skipped_shards", "seconds",
        "episodes_per_second", "moved_share", "pushed_share"}``; ``episodes_per_second`` counts the
        episodes rolled out by this call.
    """
    if cfg.episodes < 1 or cfg.seq_len < 1 or cfg.workers < 0 or cfg.shard_size() < 1:
        raise ValueError(f"episodes, seq_len and episodes_per_shard must be >= 1 and workers >= 0, got {cfg}")
    if not 0.0 <= cfg.push_probability <= 1.0:
        raise ValueError(f"push_probability must be in [0, 1], got {cfg.push_probability}")
    start = time.perf_counter()
    manifest, done = _prepare(cfg, _sim_info or _sim_description)
    out = Path(cfg.out)
    k = manifest["episodes_per_shard"]
    tasks = [
        {
            "out": str(out),
            "index": i,
            "first_episode": i * k,
            "episodes": min(k, cfg.episodes - i * k),
            "seq_len": cfg.seq_len,
            "seed": cfg.seed,
            "env": manifest["env"],
            "policy": _policy_kwargs(manifest),
            "factory": _factory,
        }
        for i in range(manifest["num_shards"])
        if i not in done
    ]
    sh.write_json_atomic(out / sh.MANIFEST, manifest)
    if progress is not None and done:
        progress(sum(e["episodes"] for e in manifest["shards"]))

    def on_done(entry: dict[str, Any]) -> None:
        manifest["shards"].append(entry)
        _finalise(manifest)
        sh.write_json_atomic(out / sh.MANIFEST, manifest)

    if tasks:
        if cfg.workers == 0:
            _run_inline(tasks, progress, on_done)
        else:
            _run_pool(tasks, cfg.workers, progress, on_done)
    _finalise(manifest)
    sh.write_json_atomic(out / sh.MANIFEST, manifest)
    seconds = time.perf_counter() - start
    new = sum(t["episodes"] for t in tasks)
    return {
        "out": str(out),
        "episodes": cfg.episodes,
        "shards": manifest["num_shards"],
        "new_episodes": new,
        "skipped_shards": len(done),
        "seconds": seconds,
        "episodes_per_second": new / seconds if new else 0.0,
        "moved_share": manifest["moved_share"],
        "pushed_share": manifest["pushed_share"],
    }


def append_episodes(
    root: str | os.PathLike, episodes: list[tuple[int, dict[str, np.ndarray]]], **extra: Any
) -> dict[str, Any]:
    """Append recorded episodes (``(env seed, rollout dict)`` each, the arrays ``rollout`` records,
    e.g. a planning agent's) to the finished collection in ``root`` as one new shard
    (``shards.append_shard``: atomic, finished shards untouched).

    The shard's entry counts ``moved`` and ``pushed`` episodes as ``collect`` does, plus ``extra``
    (say where the episodes came from); the manifest's ``moved_share`` / ``pushed_share`` are
    recomputed over every shard. Returns the new entry.
    """
    manifest = sh.load_manifest(root)
    task = {"seq_len": manifest["seq_len"], "env": {"image_size": manifest["image_size"]}}
    for k, (_, ep) in enumerate(episodes):
        _check_episode(ep, task, manifest["episodes"] + k)
    moved = sum(object_moved(ep["objects"]) for _, ep in episodes)
    pushed = sum(bool(ep.get("pushed", False)) for _, ep in episodes)
    return sh.append_shard(root, episodes, {"moved": moved, "pushed": pushed, **extra}, update=_finalise)


def _policy_kwargs(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest["policy"].items() if k != "name"}


def _run_inline(tasks: list[dict], progress: Callable | None, on_done: Callable) -> None:
    saved = dict(_WORKER)
    _WORKER.clear()
    _WORKER["callback"] = progress
    try:
        for task in tasks:
            on_done(collect_shard(task))
    finally:
        _WORKER.clear()
        _WORKER.update(saved)


def _run_pool(tasks: list[dict], workers: int, progress: Callable | None, on_done: Callable) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    workers = min(workers, len(tasks))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(q, os.getpid())
    ) as pool:
        added = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
        os.environ.update(added)  # inherited by the workers, spawned on the first submit
        try:
            pending: set[Future] = {pool.submit(collect_shard, t) for t in tasks}
        finally:
            for k in added:
                os.environ.pop(k, None)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, progress)
                for fut in finished:
                    on_done(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            _drain(q, progress)


def _drain(q: Any, progress: Callable | None) -> None:
    n = 0
    while True:
        try:
            n += q.get_nowait()
        except queue_mod.Empty:
            break
    if n and progress is not None:
        progress(n)
