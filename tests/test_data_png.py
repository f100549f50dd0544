"""SVG-style PNG folders: processed_data/{train,test}/<traj>/<k>/<t>.png, frames only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from worldmodel.data import open_dataset
from worldmodel.errors import DataError


def write_png_tree(
    root,
    steps=5,
    size=16,
    layout=None,
):
    layout = layout or {"train": {"traj_0_to_255": 3, "traj_256_to_511": 2}, "test": {"traj_0_to_255": 2}}
    rng = np.random.default_rng(0)
    truth = {}
    for split, trajs in layout.items():
        truth[split] = []
        for traj, count in trajs.items():
            for k in range(1, count + 1):  # SVG numbers trajectories from 1
                folder = root / "processed_data" / split / traj / str(k)
                folder.mkdir(parents=True)
                frames = rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8)
                for t in range(steps):
                    Image.fromarray(frames[t]).save(folder / f"{t}.png")
                truth[split].append(frames)
    return truth


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    return root, write_png_tree(root)


@pytest.mark.parametrize("where", ["", "processed_data"])
def test_reads_frames_only(png, where):
    root, truth = png
    ds = open_dataset(root / where, split="train", seq_len=5)
    assert len(ds) == 5 and not ds.has_actions
    assert ds.spec["format"] == "png" and ds.spec["image_size"] == 16 and ds.spec["episode_length"] == 5
    for i in range(5):
        item = ds[i]
        assert set(item) == {"frames"} and item["frames"].dtype == torch.uint8
        np.testing.assert_array_equal(item["frames"].numpy(), truth["train"][i])
    test = open_dataset(root, split="test", seq_len=3)
    assert len(test) == 2 and not test.random_offset
    np.testing.assert_array_equal(test[1]["frames"].numpy(), truth["test"][1][:3])


def test_resize_and_loader(png):
    root, _ = png
    ds = open_dataset(root, seq_len=4, image_size=8)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)))
    assert batch["frames"].shape == (5, 4, 8, 8, 3)


def test_wrong_image_size(tmp_path):
    write_png_tree(tmp_path, layout={"train": {"traj_0_to_255": 2}})
    bad = tmp_path / "processed_data" / "train" / "traj_0_to_255" / "2" / "3.png"
    Image.fromarray(np.zeros((16, 12, 3), np.uint8)).save(bad)
    ds = open_dataset(tmp_path, seq_len=5, random_offset=False)
    ds[0]
    with pytest.raises(DataError, match=r"2/3\.png: wrong image size 12x16, expected 16x16"):
        ds[1]


def test_missing_frame_and_corrupt_png(tmp_path):
    write_png_tree(tmp_path, layout={"train": {"traj_0_to_255": 2}})
    (tmp_path / "processed_data" / "train" / "traj_0_to_255" / "1" / "2.png").unlink()
    (tmp_path / "processed_data" / "train" / "traj_0_to_255" / "2" / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"traj_0_to_255/1: frames are not numbered 0\.\.4 \(missing \[2\]\)"):
        open_dataset(tmp_path, seq_len=2)
    (tmp_path / "processed_data" / "train" / "traj_0_to_255" / "1").rename(tmp_path / "gone")
    with pytest.raises(DataError, match=r"2/0\.png: corrupt or unreadable PNG"):
        open_dataset(tmp_path, seq_len=2, random_offset=False)


def test_empty_split(tmp_path):
    (tmp_path / "processed_data" / "train").mkdir(parents=True)
    (tmp_path / "processed_data" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train: no <traj>/<k>/ sequence folders"):
        open_dataset(tmp_path)
