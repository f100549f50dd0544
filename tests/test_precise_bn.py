"""Precise BatchNorm: statistics recomputed with the weights they are used with."""

import torch
from torch import nn

from worldmodel.training.precise_bn import batch_norms, recompute_bn


class _Net(nn.Module):
    """A linear layer and a BatchNorm; ``loss`` draws noise, as the stochastic models do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn = nn.Linear(3, 2), nn.BatchNorm1d(2)

    def loss(self, batch):
        y = self.bn(self.lin(batch["x"]) + 0.0 * torch.randn(1))
        return y.pow(2).mean(), {}


def test_the_statistics_become_the_average_over_the_batches_and_nothing_else_changes():
    torch.manual_seed(0)
    net = _Net().eval()
    net.bn.running_mean.fill_(50.0)  # stale averages, as of other weights
    net.bn.running_var.fill_(9.0)
    net.bn.num_batches_tracked.fill_(7)
    batches = [{"x": torch.randn(8, 3) * (i + 1) + i} for i in range(4)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num" not in k}
    rng = torch.get_rng_state()
    assert recompute_bn(net, batches) == 4
    with torch.no_grad():
        h = [net.lin(b["x"]) for b in batches]
    mean = torch.stack([x.mean(0) for x in h]).mean(0)
    var = torch.stack([x.var(0, unbiased=True) for x in h]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, mean)
    torch.testing.assert_close(net.bn.running_var, var)
    assert int(net.bn.num_batches_tracked) == 7 and net.bn.momentum == 0.1
    assert not net.training  # the mode it had
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random stream is untouched
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())


def test_no_batch_or_no_batchnorm_leaves_everything_as_it_was():
    net = _Net()
    net.bn.running_mean.fill_(3.0)
    assert recompute_bn(net, []) == 0
    assert torch.equal(net.bn.running_mean, torch.full((2,), 3.0))
    assert batch_norms(nn.Linear(2, 2)) == [] and recompute_bn(nn.Linear(2, 2), [{"x": None}]) == 0


def test_the_trainer_saves_the_statistics_of_the_saved_weights(tmp_path):
    from worldmodel import dynamics
    from worldmodel.data.synthetic import SyntheticDataset
    from worldmodel.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny", image_size=16)
    data = SyntheticDataset.moving_square(16, model.config.seq_len, image_size=16, seed=0)
    cfg = TrainConfig(steps=3, batch_size=4, ckpt_every=3, sample_every=0, eval_every=0, bn_batches=2)
    trainer = Trainer(model, data, tmp_path, cfg)
    trainer.fit()
    saved = torch.load(trainer.checkpoint_path, weights_only=True)["weights"]
    again = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running" in k}
    assert again and all(torch.equal(saved[k], v) for k, v in again.items())
    # the same draw for the same step: the statistics of these weights, not a running average
    for m in batch_norms(trainer.model):
        m.running_mean.add_(1.0)
    assert trainer.recompute_bn() == 2
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in again.items())


def test_kept_statistics_are_put_back():
    from worldmodel.training.precise_bn import bn_kept

    net = _Net()
    net.bn.running_mean.fill_(3.0)
    with bn_kept(net):
        recompute_bn(net, [{"x": torch.randn(8, 3)}])
        assert not torch.equal(net.bn.running_mean, torch.full((2,), 3.0))
    assert torch.equal(net.bn.running_mean, torch.full((2,), 3.0))
    with bn_kept(net, restore=False):
        recompute_bn(net, [{"x": torch.randn(8, 3)}])
    assert not torch.equal(net.bn.running_mean, torch.full((2,), 3.0))
