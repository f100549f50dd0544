"""The shard format and the collector's orchestration, on a NumPy stand-in for the sim (fast).

Round trip, determinism across worker counts, resume after kill -9, and every corruption the
reader must name. The same checks with the real MuJoCo sim are in test_data_collect.py.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import data_fake_sim
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from worldmodel.data import open_dataset
from worldmodel.envs.collect import CollectConfig, collect, episode_seeds, object_moved
from worldmodel.errors import DataError

FAKE = {"_factory": "data_fake_sim:fake_rollout_factory", "_sim_info": data_fake_sim.fake_sim_info}
TESTS = Path(__file__).parent


def fake_collect(out: Path, episodes: int = 23, workers: int = 0, **kw) -> dict:
    cfg = CollectConfig(
        out=out,
        episodes=episodes,
        seq_len=kw.pop("seq_len", 10),
        workers=workers,
        image_size=kw.pop("image_size", 16),
        episodes_per_shard=kw.pop("episodes_per_shard", 4),
        **kw,
    )
    return collect(cfg, **FAKE)


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fake") / "data"
    fake_collect(out)
    return out


def test_round_trip(fake_data):
    manifest = json.loads((fake_data / "manifest.json").read_text())
    assert manifest["complete"] and manifest["episodes"] == 23 and manifest["num_shards"] == 6
    assert [e["file"] for e in manifest["shards"]] == [f"shard-{i:05d}.wms" for i in range(6)]
    assert manifest["split"]["test_every"] == 20 and manifest["split"]["test_offset"] == 19

    ds = open_dataset(fake_data, split="all", seq_len=10)
    assert len(ds) == 23 and ds.has_actions
    assert ds.spec == {
        "format": "worldmodel-shards",
        "image_size": 16,
        "action_dim": 4,
        "state_dim": 3,
        "seq_len": 10,
        "episodes": 23,
        "episode_length": 10,
    }
    run = data_fake_sim.fake_rollout_factory({"image_size": 16}, {"push_probability": 0.5})
    moved = 0
    for i in range(23):
        expected = run(*episode_seeds(0, i), 10)
        moved += object_moved(expected["objects"])
        item = ds[i]
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (10, 16, 16, 3)
        np.testing.assert_array_equal(item["frames"].numpy(), expected["frames"])
        np.testing.assert_array_equal(item["actions"].numpy(), expected["actions"])
        np.testing.assert_array_equal(item["states"].numpy(), expected["states"])
        np.testing.assert_array_equal(item["objects"].numpy(), expected["objects"])  # NaN rows compare equal
    assert manifest["moved_share"] == pytest.approx(moved / 23)


def test_split_by_episode_and_windows(fake_data):
    train = open_dataset(fake_data, split="train", seq_len=4)
    test = open_dataset(fake_data, split="test", seq_len=4)
    assert len(train) == 22 and len(test) == 1 and test.episode_number(0) == 19
    assert train.random_offset and not test.random_offset
    full = open_dataset(fake_data, split="test", seq_len=10)[0]["frames"]
    torch.testing.assert_close(test[0]["frames"], full[:4])  # eval windows start at 0
    torch.manual_seed(0)
    starts = set()
    whole = open_dataset(fake_data, split="train", seq_len=10, random_offset=False)[0]["frames"]
    for _ in range(30):
        w = train[0]["frames"]
        starts.add(next(s for s in range(7) if torch.equal(whole[s : s + 4], w)))
    assert len(starts) > 3  # random offsets cover the episode


def test_empty_split_is_an_error(tmp_path):
    fake_collect(tmp_path / "small", episodes=5)
    with pytest.raises(DataError, match=r"split 'test' holds no episodes \(5 episodes"):
        open_dataset(tmp_path / "small", split="test", seq_len=4)


def test_seq_len_longer_than_episode(fake_data):
    with pytest.raises(ValueError, match=r"seq_len=11.*episode length 10"):
        open_dataset(fake_data, seq_len=11)


def test_dataloader_workers_reproducible(fake_data):
    ds = open_dataset(fake_data, split="train", seq_len=5)

    def batches(workers):
        loader = DataLoader(
            ds,
            batch_size=4,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(3),
            persistent_workers=False,
        )
        return [b for b in loader]

    a, b = batches(2), batches(2)
    assert len(a) == 6 and a[0]["frames"].shape == (4, 5, 16, 16, 3) and a[0]["actions"].shape == (4, 5, 4)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x["frames"], y["frames"])
    assert sum(len(x["frames"]) for x in batches(0)) == 22


def test_image_size_resizes(fake_data):
    item = open_dataset(fake_data, seq_len=3, image_size=8)[0]
    assert item["frames"].shape == (3, 8, 8, 3) and item["frames"].dtype == torch.uint8


def test_same_bytes_whatever_the_workers(tmp_path):
    fake_collect(tmp_path / "w1", workers=0)  # in this process
    fake_collect(tmp_path / "w3", workers=3)
    assert same_tree(tmp_path / "w1", tmp_path / "w3")
    fake_collect(tmp_path / "s1", workers=0, seed=1)
    assert not filecmp.cmp(
        tmp_path / "w1" / "shard-00000.wms", tmp_path / "s1" / "shard-00000.wms", shallow=False
    )


def _collect_script(out: Path, workers: int) -> list[str]:
    code = (
        "import sys; from pathlib import Path; import data_fake_sim as f\n"
        "from worldmodel.envs.collect import CollectConfig, collect\n"
        f"collect(CollectConfig(out=Path({str(out)!r}), episodes=23, seq_len=10, workers={workers},"
        " image_size=16, episodes_per_shard=4),"
        " _factory='data_fake_sim:fake_rollout_factory', _sim_info=f.fake_sim_info)\n"
    )
    return [sys.executable, "-c", code]


def wait_for_shards(out: Path, at_least: int, timeout: float, poll: float) -> bool:
    """Whether the collection under way into ``out`` lists ``at_least`` shards in its manifest
    within ``timeout`` seconds, read every ``poll`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(json.loads((out / "manifest.json").read_text())["shards"]) >= at_least:
                return True
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or read mid-write
            pass
        time.sleep(poll)
    return False


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_kill(tmp_path, workers):
    reference = tmp_path / "ref"
    fake_collect(reference)
    out = tmp_path / "killed"
    env = {
        **os.environ,
        "WM_FAKE_SIM_DELAY": "0.05",
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.Popen(_collect_script(out, workers), env=env, cwd=TESTS)
    try:
        if not wait_for_shards(out, 2, timeout=60, poll=0.02):  # some, not all, shards done
            pytest.fail("collection made no progress")
        workers_of_run = data_fake_sim.children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    # Orphaned workers (busy or idle) notice the dead parent and exit on their own.
    assert not data_fake_sim.wait_gone(workers_of_run), "worker processes outlived a kill -9"
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and 2 <= len(manifest["shards"]) < 6
    summary = fake_collect(out, workers=workers)
    assert summary["skipped_shards"] >= 2
    assert not list(out.glob("*.tmp-*"))
    assert same_tree(reference, out)
    assert len(open_dataset(out, split="all", seq_len=10)) == 23


def test_rerun_of_finished_collection_does_nothing(fake_data):
    before = (fake_data / "manifest.json").read_bytes()
    summary = fake_collect(fake_data)
    assert summary["new_episodes"] == 0 and summary["skipped_shards"] == 6
    assert (fake_data / "manifest.json").read_bytes() == before


def test_resume_with_other_settings_refused(fake_data):
    with pytest.raises(DataError, match=r"different settings.*seed"):
        fake_collect(fake_data, seed=5)


def test_nonempty_folder_without_manifest_refused(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="not empty"):
        fake_collect(tmp_path)


# ------------------------------------------------------------------------------ corrupt shards


@pytest.fixture()
def copy_of(fake_data, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(fake_data, out)
    return out


def test_bit_flip_names_shard_and_episode(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    offset, length, _ = manifest["shards"][1]["records"][2]  # episode 6
    path = copy_of / "shard-00001.wms"
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x10
    path.write_bytes(bytes(data))
    ds = open_dataset(copy_of, split="all", seq_len=10)
    ds[5]  # neighbours still fine
    with pytest.raises(DataError, match=r"shard-00001\.wms: episode 6 .*CRC-32 mismatch"):
        ds[6]


def test_truncated_shard_fails_at_open(copy_of):
    path = copy_of / "shard-00002.wms"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard-00002\.wms: truncated shard"):
        open_dataset(copy_of, seq_len=4)


def test_missing_shard(copy_of):
    (copy_of / "shard-00003.wms").unlink()
    with pytest.raises(DataError, match=r"shard-00003\.wms: shard file listed in the manifest is missing"):
        open_dataset(copy_of, seq_len=4)


def test_damaged_record_header(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    offset = manifest["shards"][0]["records"][1][0]
    path = copy_of / "shard-00000.wms"
    data = bytearray(path.read_bytes())
    data[offset - 12] ^= 0x01  # length field
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard-00000\.wms: episode 1 .*length header"):
        open_dataset(copy_of, split="all", seq_len=4)[1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(num_shards=5), "inconsistent manifest: episodes=23"),
        (lambda m: m["shards"][2].update(first_episode=9), "shard-00002.wms should hold episodes"),
        (lambda m: m["shards"][1].update(index=0), "duplicate shard index"),
        (lambda m: m.pop("seq_len"), "missing keys"),
        (lambda m: m.update(version=99), "format version 99"),
        (lambda m: m.update(complete=False), "unfinished"),
        (lambda m: m["shards"].pop(), "marked complete but lists 5 of 6"),
    ],
)
def test_inconsistent_manifest(copy_of, edit, message):
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=message) as info:
        open_dataset(copy_of, seq_len=4)
    assert "manifest.json" in str(info.value)


def test_manifest_not_json(copy_of):
    (copy_of / "manifest.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"manifest\.json: manifest is not valid JSON"):
        open_dataset(copy_of, seq_len=4)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(DataError, match="nope: no such file or folder"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder is empty"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a recognised dataset"):
        open_dataset(tmp_path / "other")
