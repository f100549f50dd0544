"""Object-position head: learns positions from dream features better than the mean; storage; CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel import dynamics
from worldmodel.dynamics.heads import (
    ObjectHead,
    find_head,
    head_path_for,
    load_head,
    save_head,
    train_object_head,
)
from worldmodel.errors import CheckpointError


@pytest.fixture(scope="module")
def sim_items():
    """48 short PushTable episodes at 16 px, one object, every episode scripts a push."""
    from worldmodel.data.policy import RandomPushPolicy, rollout
    from worldmodel.envs.push_table import PushTableEnv

    env = PushTableEnv(image_size=16, num_objects=1)
    items = []
    for i in range(48):
        ep = rollout(env, RandomPushPolicy(i, push_probability=1.0), 10, 1000 + i)
        items.append({k: torch.from_numpy(np.asarray(ep[k])) for k in ("frames", "actions", "objects")})
    env.close()
    return items


def test_head_beats_predicting_the_mean(sim_items):
    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny").eval()  # 16 px
    _, m = train_object_head(model, sim_items[:36], sim_items[36:], steps=150, hidden=64, seed=0)
    assert m["val_rows"] > 0
    # Held-out xy error well below the mean predictor's (objects are spread over ±17 cm).
    assert m["val_rmse_xy"] < 0.5 * m["val_rmse_xy_mean"], m
    assert m["train_rmse_xy"] < 0.5 * m["train_rmse_xy_mean"], m


def test_head_needs_object_positions():
    model = dynamics.make("svg-lp", preset="tiny").eval()
    items = [{"frames": torch.zeros(4, 16, 16, 3, dtype=torch.uint8), "actions": torch.zeros(4, 4)}]
    with pytest.raises(ValueError, match="object positions"):
        train_object_head(model, items, steps=1)


def test_storage_sidecar_and_checkpoint_field(tmp_path):
    model = dynamics.make("svg-lp", preset="tiny")
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    assert find_head(ckpt) is None
    head = ObjectHead(model.feature_dim, hidden=8)
    torch.nn.init.normal_(head.net[-1].weight)
    f, q = torch.randn(3, model.feature_dim), torch.randn(3, 3)
    save_head(head, head_path_for(ckpt), model="svg-lp")
    assert head_path_for(ckpt).name == "last.head.pt"
    assert torch.allclose(find_head(ckpt)(f, q), head(f, q))
    # A "heads" field inside the checkpoint wins over the sidecar, and dynamics.load ignores it.
    from worldmodel.dynamics.checkpoint import atomic_save, read

    other = ObjectHead(model.feature_dim, hidden=8)
    atomic_save({**read(ckpt), "heads": {"object_pos": other.to_dict()}}, ckpt)
    assert torch.allclose(find_head(ckpt)(f, q), other(f, q))
    dynamics.load(ckpt, device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="junk"):
        load_head(tmp_path / "junk.pt")
    torch.save({"kind": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an object-position head"):
        load_head(tmp_path / "other.pt")


def test_cli_train_head(tmp_path):
    from worldmodel.cli import main
    from worldmodel.data.collect import CollectConfig, collect

    collect(CollectConfig(out=str(tmp_path / "data"), episodes=12, seq_len=8, seed=0, image_size=16))
    torch.manual_seed(0)
    ckpt = dynamics.save(dynamics.make("svg-lp", preset="tiny"), tmp_path / "run" / "last.pt")
    rc = main(
        [
            "train-head",
            str(ckpt),
            "--data",
            str(tmp_path / "data"),
            "--steps",
            "20",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "head.json"),
        ]
    )
    assert rc == 0
    assert head_path_for(ckpt).is_file() and (tmp_path / "head.json").is_file()
    assert main(["train-head", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "data")]) == 2
