"""The ``LatentDynamics`` contract, checked on every registered model's ``tiny`` preset.

Nothing here knows a model's internals: only the public interface, the registry and checkpoints.
"""

from __future__ import annotations

import math

import pytest
import torch

from worldmodel.dynamics import LatentDynamics, State, load, make, save
from worldmodel.dynamics.registry import builtin

NAMES = builtin()  # every model the package ships (test-only registrations are not covered)


def _batch(model: LatentDynamics, b: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(
        0, 256, (b, t, c.image_size, c.image_size, c.channels), generator=g, dtype=torch.uint8
    )
    actions = torch.rand(b, t, c.action_dim, generator=g) * 2 - 1
    return {"frames": frames, "actions": actions}


def _model(name: str) -> LatentDynamics:
    torch.manual_seed(0)
    return make(name, preset="tiny")


def _context(model: LatentDynamics, b: int = 2, seed: int = 0):
    data = _batch(model, b, model.config.n_past + 4, seed)
    n = model.config.n_past
    return data["frames"][:, :n], data["actions"][:, : n - 1], data["actions"][:, n - 1 :]


@pytest.fixture(scope="module", params=NAMES)
def trained(request) -> tuple[str, LatentDynamics]:
    """A tiny model after a few optimiser steps (so BatchNorm running stats are not trivial)."""
    model = _model(request.param)
    opts = model.optimizers()
    for step in range(3):
        loss, _ = model.loss(_batch(model, 4, model.config.seq_len, seed=step))
        losses = loss if isinstance(loss, dict) else {k: loss for k in opts}
        for key, opt in opts.items():
            opt.zero_grad()
            params = [p for group in opt.param_groups for p in group["params"]]
            losses[key].backward(inputs=params, retain_graph=True)
            opt.step()
    return request.param, model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_and_reaches_every_parameter(name):
    model = _model(name).train()
    loss, metrics = model.loss(_batch(model, 3, model.config.seq_len))
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values())
    assert all(isinstance(v, float) or (v.dim() == 0 and not v.requires_grad) for v in metrics.values())
    losses = loss if isinstance(loss, dict) else {key: loss for key in model.optimizers()}
    owned = set()
    for key, opt in model.optimizers().items():
        value = losses[key]
        assert value.dim() == 0 and torch.isfinite(value)
        params = [p for group in opt.param_groups for p in group["params"]]
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        for p, gr in zip(params, grads, strict=True):
            assert gr is not None and torch.isfinite(gr).all()
            owned.add(id(p))
    missing = [n for n, p in model.named_parameters() if id(p) not in owned]
    assert not missing, f"parameters with no optimiser / gradient: {missing}"


def test_rollout_shapes_dtypes_and_range(trained):
    _, model = trained
    c = model.config
    frames, ctx_actions, future = _context(model, b=3)
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        assert isinstance(state, State) and len(state) == 3
        for s in (state, model.step(state, future[:, 0], generator=torch.Generator().manual_seed(0))):
            x = model.decode(s)
            assert x.shape == (3, c.channels, c.image_size, c.image_size) and x.is_floating_point()
            assert x.min() >= 0 and x.max() <= 1
            f = model.features(s)
            assert f.shape == (3, model.feature_dim) and f.dtype == torch.float32
        end, xs = model.rollout(state, future, generator=torch.Generator().manual_seed(0))
        assert xs.shape == (3, future.shape[1], c.channels, c.image_size, c.image_size) and len(end) == 3
        _, fs = model.rollout(state, future, decode=False, sample=False)
        assert fs.shape == (3, future.shape[1], model.feature_dim)


def test_batch_of_one(trained):
    _, model = trained
    frames, ctx_actions, future = _context(model, b=1)
    with torch.no_grad():
        _, xs = model.rollout(model.initial(frames, ctx_actions), future[:, :2])
    assert xs.shape[0] == 1 and torch.isfinite(xs).all()


def test_tiled_state_behaves_per_row(trained):
    _, model = trained
    n = 4
    frames, ctx_actions, future = _context(model, b=2)
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        tiled = state.repeat_interleave(n)
        acts = future.repeat_interleave(n, dim=0)
        _, mean_base = model.rollout(state, future[:, :3], sample=False)
        _, mean_tiled = model.rollout(tiled, acts[:, :3], sample=False)
        torch.testing.assert_close(mean_tiled, mean_base.repeat_interleave(n, dim=0), atol=1e-5, rtol=1e-4)
        # A row's prediction does not depend on the other rows.
        _, one = model.rollout(state[1:2], future[1:2, :3], sample=False)
        torch.testing.assert_close(one[0], mean_base[1], atol=1e-5, rtol=1e-4)
        # Sampled candidates of one context are independent draws (for stochastic models).
        _, drawn = model.rollout(tiled, acts[:, :3], generator=torch.Generator().manual_seed(0))
    if model.noise_dim > 0:  # stochastic: the copies of one context get different draws
        rows = drawn.view(2, n, -1)
        assert not torch.allclose(rows[:, 0], rows[:, 1], atol=1e-6), "tiled rows got identical samples"
    else:  # deterministic (svg-det): a sample is the mean
        torch.testing.assert_close(drawn, mean_tiled, atol=1e-5, rtol=1e-4)


def test_seeded_rollouts_are_deterministic(trained):
    _, model = trained
    frames, ctx_actions, future = _context(model)

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            state = model.initial(frames, ctx_actions)
            return model.rollout(state, future, generator=torch.Generator().manual_seed(seed))[1]

    assert torch.equal(run(1), run(1))


def test_temperature_zero_equals_mean(trained):
    _, model = trained
    frames, ctx_actions, future = _context(model)
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        _, cold = model.rollout(state, future, temperature=0.0, generator=torch.Generator().manual_seed(3))
        _, mean = model.rollout(state, future, sample=False)
    torch.testing.assert_close(cold, mean, atol=1e-6, rtol=1e-5)


def test_explicit_noise_is_per_row(trained):
    """``step(noise=...)`` makes row i of a batched step equal a batch-of-one step with noise row i
    (what batched dream envs rely on); a wrong noise shape raises ``ValueError``."""
    _, model = trained
    frames, ctx_actions, future = _context(model, b=3)
    d = model.noise_dim
    if d == 0:  # nothing to hand in: an empty noise is accepted and changes nothing
        with torch.no_grad():
            state = model.initial(frames, ctx_actions)
            _, empty = model.rollout(state, future, noise=torch.zeros(3, future.shape[1], 0))
            _, mean = model.rollout(state, future, sample=False)
            with pytest.raises(ValueError):
                model.step(state, future[:, 0], noise=torch.zeros(3, 1))
        torch.testing.assert_close(empty, mean, atol=1e-5, rtol=1e-4)
        return
    noise = torch.randn(3, future.shape[1], d, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
        _, batched = model.rollout(state, future, noise=noise)
        _, again = model.rollout(state, future, noise=noise, generator=torch.Generator().manual_seed(99))
        _, row = model.rollout(state[2:3], future[2:3], noise=noise[2:3])
        _, other = model.rollout(state, future, noise=-noise)
        with pytest.raises(ValueError):
            model.step(state, future[:, 0], noise=torch.zeros(3, d + 1))
    assert torch.equal(batched, again)  # the generator is not consulted for the noise
    torch.testing.assert_close(row[0], batched[2], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(other, batched, atol=1e-6)


def test_checkpoint_round_trip(trained, tmp_path):
    name, model = trained
    path = save(model, tmp_path / f"{name}.pt", step=3)
    loaded = load(path, device="cpu")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    frames, ctx_actions, future = _context(model)
    with torch.no_grad():
        outs = [
            m.rollout(m.initial(frames, ctx_actions), future, generator=torch.Generator().manual_seed(5))[1]
            for m in (model, loaded)
        ]
    assert torch.equal(outs[0], outs[1])


def test_bad_inputs_raise_value_error(trained):
    _, model = trained
    c = model.config
    frames, ctx_actions, _ = _context(model)
    with pytest.raises(ValueError):  # wrong image size
        wrong = torch.zeros(2, c.n_past, c.image_size * 2, c.image_size * 2, c.channels, dtype=torch.uint8)
        model.initial(wrong, ctx_actions)
    with pytest.raises(ValueError):  # float frames
        model.initial(frames.float(), ctx_actions)
    with pytest.raises(ValueError):  # action_dim mismatch
        model.initial(frames, torch.zeros(2, c.n_past - 1, c.action_dim + 1))
    with torch.no_grad():
        state = model.initial(frames, ctx_actions)
    with pytest.raises(ValueError):  # action_dim mismatch in step
        model.step(state, torch.zeros(2, c.action_dim + 1))
    with pytest.raises(ValueError):  # batch mismatch in step
        model.step(state, torch.zeros(3, c.action_dim))
    with pytest.raises(ValueError):  # NaN action
        model.step(state, torch.full((2, c.action_dim), float("nan")))
    bad = _batch(model, 2, c.seq_len)
    bad["actions"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        model.loss(bad)


def test_unknown_name_and_field_raise():
    with pytest.raises(ValueError):
        make("no-such-model")
    with pytest.raises(ValueError):
        make(NAMES[0], preset="tiny", no_such_field=1)


def test_a_model_must_implement_a_step():
    """``step`` is concrete (it checks, then calls ``_step``), so the class statement itself refuses
    a model that implements neither."""
    with pytest.raises(TypeError, match="NoStep implements neither _step nor step"):

        class NoStep(LatentDynamics):
            pass

    class OwnStep(LatentDynamics):  # a model with its own public step is fine
        def step(self, state, action, **kwargs):
            return state

    assert OwnStep.step is not LatentDynamics.step
