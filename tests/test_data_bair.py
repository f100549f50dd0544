"""BAIR TFRecords read without TensorFlow, on files written here byte by byte.

The writer below is independent of the package: its own varints, its own (slow, bitwise) CRC-32C,
the tf.train.Example schema of softmotion30_44k (``{i}/image_aux1/encoded`` raw 64x64x3 bytes,
``{i}/image_main/encoded``, ``{i}/action`` float[4], ``{i}/endeffector_pos`` float[3]).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from worldmodel.data import open_dataset
from worldmodel.data.crc32c import crc32c, masked_crc32c
from worldmodel.data.tfrecord import decode_example, encode_example
from worldmodel.errors import DataError

STEPS = 6  # BAIR has 30; fewer keep the test fast, the schema is the same


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C from its definition, one bit at a time (test_crc32c checks the backends on it too)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


_TABLE = [crc32c_bitwise(bytes([i])) ^ crc32c_bitwise(b"\0") for i in range(256)]


def crc32c_table(data: bytes) -> int:
    """Byte-at-a-time CRC-32C with a table built from the bitwise definition above."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    crc = crc32c_table(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def ld(field: int, payload: bytes) -> bytes:  # length-delimited field
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def feature_bytes(value: bytes) -> bytes:
    return ld(1, ld(1, value))  # Feature.bytes_list{value}


def feature_floats(values) -> bytes:
    return ld(2, ld(1, struct.pack(f"<{len(values)}f", *values)))  # Feature.float_list{packed value}


def example(features: dict[str, bytes]) -> bytes:
    entries = b"".join(ld(1, ld(1, k.encode()) + ld(2, v)) for k, v in features.items())
    return ld(1, entries)  # Example.features{feature map}


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data))


def trajectory(rng: np.random.Generator, steps: int = STEPS, size: int = 64):
    frames = rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    states = rng.normal(size=(steps, 3)).astype(np.float32)
    feats = {}
    for i in range(steps):
        feats[f"{i}/action"] = feature_floats(actions[i])
        feats[f"{i}/endeffector_pos"] = feature_floats(states[i])
        feats[f"{i}/image_aux1/encoded"] = feature_bytes(frames[i].tobytes())
        feats[f"{i}/image_main/encoded"] = feature_bytes(frames[i, ::-1].tobytes())
    return example(feats), {"frames": frames, "actions": actions, "states": states}


def write_bair(root, counts=None, seed=0):
    """root/softmotion30_44k/{split}/traj_<a>_to_<b>.tfrecords; returns {split: [trajectory arrays]}."""
    counts = counts or {"train": [3, 2], "test": [2]}
    rng = np.random.default_rng(seed)
    truth = {}
    for split, files in counts.items():
        folder = root / "softmotion30_44k" / split
        folder.mkdir(parents=True)
        truth[split] = []
        start = 0
        for n in files:
            blobs = []
            for _ in range(n):
                data, arrays = trajectory(rng)
                blobs.append(record(data))
                truth[split].append(arrays)
            (folder / f"traj_{start}_to_{start + n - 1}.tfrecords").write_bytes(b"".join(blobs))
            start += n
    return truth


@pytest.fixture(scope="module")
def bair(tmp_path_factory):
    root = tmp_path_factory.mktemp("bair")
    return root, write_bair(root)


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    for n in (1, 5, 255, 256, 1000, 12289, 100_003):
        data = os.urandom(n)
        assert crc32c(data) == crc32c_bitwise(data), n
        assert masked_crc32c(data) == masked(data)


def test_example_codec_round_trip():
    data = encode_example({"a": b"xy", "f": np.array([1.5, -2.0], np.float32), "i": np.array([3, -4])})
    out = decode_example(data)
    assert out["a"] == [b"xy"] and out["f"].tolist() == [1.5, -2.0] and out["i"].tolist() == [3, -4]


@pytest.mark.parametrize("where", ["", "softmotion30_44k", "softmotion30_44k/train"])
def test_reads_trajectories(bair, where):
    root, truth = bair
    ds = open_dataset(root / where, split="train", seq_len=STEPS)
    assert len(ds) == 5 and ds.has_actions
    assert ds.spec == {
        "format": "bair",
        "image_size": 64,
        "action_dim": 4,
        "state_dim": 3,
        "seq_len": STEPS,
        "episodes": 5,
        "episode_length": STEPS,
    }
    for i in range(5):  # file order traj_0_to_2, traj_3_to_4; one window covers the whole trajectory
        item = ds[i]
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (STEPS, 64, 64, 3)
        np.testing.assert_array_equal(item["frames"].numpy(), truth["train"][i]["frames"])
        np.testing.assert_array_equal(item["actions"].numpy(), truth["train"][i]["actions"])
        np.testing.assert_array_equal(item["states"].numpy(), truth["train"][i]["states"])


def test_test_split_and_windows(bair):
    root, truth = bair
    ds = open_dataset(root, split="test", seq_len=3)
    assert len(ds) == 2 and not ds.random_offset
    np.testing.assert_array_equal(ds[1]["frames"].numpy(), truth["test"][1]["frames"][:3])
    train = open_dataset(root, split="train", seq_len=3)
    torch.manual_seed(0)
    starts = set()
    for _ in range(30):
        window = train[0]["actions"].numpy()
        starts.add(
            next(s for s in range(4) if np.array_equal(window, truth["train"][0]["actions"][s : s + 3]))
        )
    assert starts == {0, 1, 2, 3}


def test_split_folder_mismatch(bair):
    root, _ = bair
    with pytest.raises(ValueError, match="'test' split but split='train'"):
        open_dataset(root / "softmotion30_44k" / "test", split="train")
    with pytest.raises(DataError, match="BAIR split folder not found"):
        open_dataset(root, split="val")


def test_dataloader_workers(bair):
    root, _ = bair
    ds = open_dataset(root, split="train", seq_len=4)
    loader = DataLoader(
        ds, batch_size=2, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    batches = list(loader)
    assert sum(len(b["frames"]) for b in batches) == 5 and batches[0]["states"].shape == (2, 4, 3)


def test_seq_len_too_long(bair):
    root, _ = bair
    with pytest.raises(ValueError, match=f"seq_len=31 .*episode length {STEPS}"):
        open_dataset(root, seq_len=31)


def _one_file(tmp_path, blob: bytes):
    folder = tmp_path / "softmotion30_44k" / "train"
    folder.mkdir(parents=True)
    path = folder / "traj_0_to_1.tfrecords"
    path.write_bytes(blob)
    return path


def test_data_crc_mismatch(tmp_path):
    rng = np.random.default_rng(1)
    good, bad = record(trajectory(rng)[0]), bytearray(record(trajectory(rng)[0]))
    bad[5000] ^= 0x01
    path = _one_file(tmp_path, good + bytes(bad))
    ds = open_dataset(tmp_path, seq_len=2)
    ds[0]
    with pytest.raises(
        DataError, match=r"traj_0_to_1\.tfrecords: corrupt TFRecord: data CRC mismatch in record 1"
    ):
        ds[1]
    assert path.exists()


def test_length_crc_mismatch(tmp_path):
    blob = bytearray(record(trajectory(np.random.default_rng(2))[0]))
    blob[8] ^= 0xFF
    _one_file(tmp_path, bytes(blob))
    with pytest.raises(
        DataError, match=r"traj_0_to_1\.tfrecords: corrupt TFRecord: length CRC mismatch in record 0"
    ):
        open_dataset(tmp_path, seq_len=2)


def test_truncated_file(tmp_path):
    rng = np.random.default_rng(3)
    blob = record(trajectory(rng)[0]) + record(trajectory(rng)[0])
    _one_file(tmp_path, blob[:-10])
    with pytest.raises(DataError, match=r"traj_0_to_1\.tfrecords: truncated TFRecord: record 1"):
        open_dataset(tmp_path, seq_len=2)


def test_wrong_image_size(tmp_path):
    rng = np.random.default_rng(4)
    good = trajectory(rng)[0]
    small = trajectory(rng, size=32)[0]  # frames 32x32 in a 64x64 dataset
    _one_file(tmp_path, record(good) + record(small))
    ds = open_dataset(tmp_path, seq_len=2)
    with pytest.raises(DataError, match=r"traj_0_to_1\.tfrecords record 1: wrong image size .*3072 bytes"):
        ds[1]


def test_empty_split_folder(tmp_path):
    (tmp_path / "softmotion30_44k" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train: no \.tfrecords files"):
        open_dataset(tmp_path / "softmotion30_44k")


def test_show_on_bair(bair, tmp_path):
    from worldmodel.cli import main

    root, _ = bair
    out = tmp_path / "bair.gif"
    assert main(["show", str(root), "--out", str(out), "--num", "4", "--ncols", "2"]) == 0
    import imageio.v3 as iio

    frames = iio.imread(out)
    assert frames.shape[1:3] == (2 + 2 * 66, 2 + 2 * 66)  # 2x2 grid of 64x64 with 2-pixel gaps
