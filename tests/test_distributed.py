"""Data parallel: two gloo processes on halves of a batch get the gradient of the whole batch.

The model has no BatchNorm: BatchNorm normalises with per-process batch statistics (as DDP does
without SyncBatchNorm), so half-batch gradients of a BN model legitimately differ from the
full-batch gradient; the equality tested here is that of the gradient averaging itself.
"""

import os
import socket

import torch
import torch.multiprocessing as mp
from train_stubs import TinyConfig, TinyPredictor, join_local_group

from worldmodel.data.synthetic import SyntheticDataset
from worldmodel.training import distributed
from worldmodel.training.batches import to_device
from worldmodel.training.trainer import TrainConfig, Trainer

CFG = dict(steps=1, batch_size=8, sample_every=0, seed=4)


def _grads_after_one_step(out_dir) -> tuple[dict[str, torch.Tensor], list[float]]:
    torch.manual_seed(0)
    model = TinyPredictor(TinyConfig(n_future=5, noise=0.0))
    data = SyntheticDataset.moving_square(16, 7, image_size=16, seed=2)
    trainer = Trainer(model, data, out_dir, TrainConfig(**CFG))
    batch = to_device(next(trainer._batches(1)), torch.device("cpu"))
    values, _ = trainer.train_step(batch)
    return {n: p.grad.clone() for n, p in model.named_parameters()}, values


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    join_local_group(rank, world, port)
    try:
        grads, values = _grads_after_one_step(out_dir)
        assert distributed.env_info().world_size == world and distributed.active()
        torch.save({"grads": grads, "values": values}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_average_to_the_full_batch_gradient(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single, single_values = _grads_after_one_step(tmp_path / "single")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, g in single.items():
        for r in ranks:  # every process holds the same averaged gradient
            assert torch.allclose(r["grads"][name], g, atol=1e-6, rtol=1e-5), name
    # the logged loss is the mean over processes, i.e. the full-batch loss
    assert abs(ranks[0]["values"][0] - single_values[0]) < 1e-6
    assert ranks[0]["values"] == ranks[1]["values"]
