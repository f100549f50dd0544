"""State heads trained with the world model (``state_head=True``), through the shared interface."""

from __future__ import annotations

import pytest
import torch

from worldmodel import dynamics
from worldmodel.data.synthetic import moving_square


def _batch(model, b: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    c = model.config
    t, size = c.seq_len, c.image_size
    d = moving_square(b, t, image_size=size, seed=seed)
    objects = torch.full((b, t, 4, 3), float("nan"))
    objects[:, :, 0] = d["states"]  # the square is the object the "arm" pushes
    return {**d, "objects": objects}


@pytest.mark.parametrize("name", ["svg-lp", "svg-fp", "svg-det", "videoflow", "vgan"])
def test_every_model_trains_its_state_head_and_keeps_it_in_the_checkpoint(name, tmp_path):
    torch.manual_seed(0)
    model = dynamics.make(name, preset="tiny", state_head=True)
    batch = _batch(model)
    loss, metrics = model.loss(batch)
    total = loss["g"] if isinstance(loss, dict) else loss
    assert {"state_ee_cm", "state_obj_cm"} <= set(metrics)
    total.backward()
    head_grads = [p.grad for p in model.state_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert any(float(g.abs().sum()) > 0 for g in head_grads)
    # The state loss reaches the world model too: it shapes what the latent keeps (after one step:
    # the head's last layers start at zero, "nothing moved", which passes no gradient back yet).
    torch.optim.SGD(model.state_head.parameters(), lr=0.1).step()
    model.zero_grad()
    state_loss, _ = model.state_loss(batch)
    state_loss.backward()
    body = [p for n, p in model.named_parameters() if not n.startswith("state_head")]
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in body)
    if name == "vgan":  # the generator's optimiser owns the head; the discriminator's does not
        opts = model.optimizers()
        owned = {id(p) for group in opts["g"].param_groups for p in group["params"]}
        assert all(id(p) in owned for p in model.state_head.parameters())
    path = dynamics.save(model, tmp_path / "m.pt")
    loaded = dynamics.load(path, device="cpu")
    # The loaded model rebuilds the same head: the same state loss on the same batch and noise.
    model.eval()
    torch.manual_seed(5)
    before = float(model.state_loss(batch)[0].detach())
    torch.manual_seed(5)
    after = float(loaded.state_loss(batch)[0].detach())
    assert after == pytest.approx(before, rel=1e-6)
    for a, b in zip(
        model.state_head.state_dict().values(), loaded.state_head.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_without_the_option_there_is_no_head_and_no_extra_loss():
    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny")
    assert model.state_head is None
    _, metrics = model.loss(_batch(model))
    assert "state_ee_cm" not in metrics
    with pytest.raises(ValueError, match="no state head"):
        model.state_loss(_batch(model))


def test_state_loss_runs_batchnorm_as_the_dream_does():
    """The open-loop rollout of the state loss uses BatchNorm's running statistics and leaves them
    alone: the same numbers in training and in eval mode (with batch statistics the head learned
    features the eval-mode dream never produces)."""
    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny", state_head=True)
    batch = _batch(model)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    torch.manual_seed(1)
    train_loss, _ = model.state_loss(batch)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert all(m.training for m in model.modules())  # the modes are put back
    model.eval()
    torch.manual_seed(1)
    eval_loss, _ = model.state_loss(batch)
    assert float(train_loss.detach()) == pytest.approx(float(eval_loss.detach()), rel=1e-5)


def test_state_head_needs_recorded_states():
    model = dynamics.make("svg-lp", preset="tiny", state_head=True)
    batch = _batch(model)
    del batch["states"]
    with pytest.raises(ValueError, match="records states"):
        model.loss(batch)


def test_query_noise_teaches_the_head_to_find_the_object():
    """Trained with exact queries the head echoes a stale one (the planner's, mid-episode: the
    target's start position); trained with noisy ones it reads the object off the features."""
    from train_stubs import fit

    def squares(n: int, t: int, seed: int) -> dict[str, torch.Tensor]:
        d = moving_square(n, t, image_size=16, seed=seed)
        objects = torch.full((n, t, 4, 3), float("nan"))
        objects[:, :, 0] = d["states"]  # positions in frame widths
        return {**d, "objects": objects}

    errors = {}
    for noise in (0.0, 0.15):
        torch.manual_seed(0)
        model = dynamics.make("jepa", preset="tiny", image_size=16, state_head=True, state_query_noise=noise)
        c = model.config
        fit(model, squares(64, c.seq_len, seed=0), steps=300)
        held = squares(32, c.seq_len, seed=1)
        with torch.no_grad():
            state = model.initial(held["frames"][:, : c.n_past], held["actions"][:, : c.n_past - 1])
            true = held["objects"][:, c.n_past - 1, 0]
            stale = true + torch.tensor([0.15, 0.0, 0.0])  # where the square was, not where it is
            found = model.state_head(model.features(state).float(), stale)
        errors[noise] = float((found - true)[:, :2].norm(dim=-1).mean())
    assert errors[0.0] > 0.5 * 0.15  # mostly the stale query echoed
    assert errors[0.15] < 0.6 * errors[0.0]
    with pytest.raises(ValueError, match="state_query_noise"):
        dynamics.make("jepa", preset="tiny", state_query_noise=-0.1)
