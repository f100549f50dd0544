"""`worldmodel collect` / `show` with the real MuJoCo sim: round trip, determinism, resume, video.

Small settings (32x32 frames, short episodes) keep these to a few seconds each.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fake_sim import children_of, wait_gone
from test_data_shards import wait_for_shards

import worldmodel.envs.policy as policy_mod
from worldmodel.cli import main
from worldmodel.data import open_dataset
from worldmodel.envs.collect import episode_seeds, object_moved

SMALL = [
    "--episodes",
    "6",
    "--seq-len",
    "8",
    "--image-size",
    "32",
    "--episodes-per-shard",
    "2",
    "--no-progress",
]


def cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    assert cli("collect", "--out", out, "--workers", "1", *SMALL) == 0
    return out


def test_round_trip_matches_a_direct_rollout(collected):
    from worldmodel.envs.push_table import PushTableEnv

    manifest = json.loads((collected / "manifest.json").read_text())
    assert manifest["complete"] and manifest["episodes"] == 6 and manifest["num_shards"] == 3
    assert manifest["sim"]["image_size"] == 32
    ds = open_dataset(collected, split="all", seq_len=8)
    whole = open_dataset(collected, split="all", seq_len=manifest["seq_len"], random_offset=False)
    moved = [object_moved(whole[i]["objects"].numpy()) for i in range(len(whole))]
    assert manifest["moved_share"] == pytest.approx(sum(moved) / len(moved))
    env = PushTableEnv(image_size=32)
    try:
        for i in (0, 5):
            env_seed, policy_seed = episode_seeds(0, i)
            ep = policy_mod.rollout(
                env,
                policy_mod.RandomPushPolicy(seed=policy_seed, push_probability=0.5),
                seq_len=8,
                seed=env_seed,
            )
            item = ds[i]
            np.testing.assert_array_equal(item["frames"].numpy(), ep["frames"])
            np.testing.assert_array_equal(item["actions"].numpy(), ep["actions"])
            np.testing.assert_array_equal(item["states"].numpy(), ep["states"])
            np.testing.assert_array_equal(item["objects"].numpy(), ep["objects"])
            np.testing.assert_array_equal(item["goal"].numpy(), np.asarray(ep["goal"], np.float32))
            assert int(item["target"]) == int(ep["target"]) and item["target"].shape == ()
            assert int(item["num_objects"]) == int(np.isfinite(ep["objects"][0]).all(-1).sum())
    finally:
        env.close()


def test_same_bytes_with_two_workers(collected, tmp_path):
    out = tmp_path / "two"
    assert cli("collect", "--out", out, "--workers", "2", *SMALL) == 0
    names = sorted(p.name for p in collected.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(collected, out, names, shallow=False)
    assert not mismatch and not errors


def test_show_writes_mp4_and_gif(collected, tmp_path, capsys):
    assert cli("show", collected, "--out", tmp_path / "clip.mp4", "--num", "4", "--ncols", "2") == 0
    assert cli("show", collected, "--out", tmp_path / "clip.gif", "--num", "3", "--split", "all") == 0
    assert (tmp_path / "clip.mp4").stat().st_size > 1000 and (tmp_path / "clip.gif").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / "clip.gif")
    assert frames.shape[0] == 8 and frames.shape[1:3] == (2 + 1 * 34, 2 + 3 * 34)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli("show", tmp_path / "missing", "--out", tmp_path / "x.mp4") == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    assert cli("show", tmp_path, "--out", tmp_path / "x.avi") == 2


def test_resume_after_kill_9(collected, tmp_path):
    out = tmp_path / "resumed"
    args = [
        sys.executable,
        "-m",
        "worldmodel",
        "collect",
        "--out",
        str(out),
        "--workers",
        "2",
        *SMALL[:-1],
        "--no-progress",
    ]
    args[args.index("--episodes-per-shard") + 1] = "1"  # 6 shards: kill after some
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_shards(out, 1, timeout=120, poll=0.01)
        workers_of_run = children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(json.loads((out / "manifest.json").read_text())["shards"])
    assert len(workers_of_run) >= 2 or not Path("/proc").is_dir()  # two workers (+ resource tracker)
    assert not wait_gone(workers_of_run), "worker processes outlived a kill -9"
    assert (
        cli(
            "collect",
            "--out",
            out,
            "--workers",
            "2",
            *SMALL[:-3],
            "--episodes-per-shard",
            "1",
            "--no-progress",
        )
        == 0
    )
    reference = tmp_path / "reference"
    assert (
        cli(
            "collect",
            "--out",
            reference,
            "--workers",
            "1",
            *SMALL[:-3],
            "--episodes-per-shard",
            "1",
            "--no-progress",
        )
        == 0
    )
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted(p.name for p in out.iterdir()), "no temp or extra files left"
    _, mismatch, errors = filecmp.cmpfiles(reference, out, names, shallow=False)
    assert not mismatch and not errors
    assert 1 <= done < 6, "killed mid-collection"
