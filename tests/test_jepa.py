"""The decoder-free latent world model (``jepa``): SIGReg, collapse, prediction, the detached
decoder, and the places it must run (dream with latent observations, MPC on its state head,
checkpoints). The shared interface is checked by test_dynamics_contract.py (it covers every
built-in model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dream_fixtures import drive_until_done
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.vec_env import DummyVecEnv
from test_learned_planning import TOLERANCE, SquareWorld
from train_stubs import fit

from worldmodel import dynamics
from worldmodel.data.synthetic import moving_square
from worldmodel.dynamics.jepa import sigreg
from worldmodel.envs import DreamVecEnv
from worldmodel.envs.push_table import PushTableEnv
from worldmodel.envs.task import TaskSpec
from worldmodel.planning import CEM, CEMConfig, MPCAgent, RandomAgent, run_episodes
from worldmodel.planning.objectives import LearnedReward

STEPS = 300  # about 8 s on one CPU thread for the tiny preset


def _data(n: int, t: int, seed: int) -> dict[str, torch.Tensor]:
    """Moving-square sequences with the square also recorded as the one object (for state heads)."""
    d = moving_square(n, t, image_size=16, seed=seed)
    objects = torch.full((n, t, 4, 3), float("nan"))
    objects[:, :, 0] = d["states"]
    return {**d, "objects": objects}


def _train(steps: int = STEPS, **overrides):
    torch.manual_seed(0)
    model = dynamics.make("jepa", preset="tiny", **overrides)
    return fit(model, _data(256, model.config.seq_len, seed=0), steps)


@pytest.fixture(scope="module")
def trained():
    return _train()


@pytest.fixture(scope="module")
def with_head():
    """Trained with a state head (the square is both the "arm" and the object), 8-frame windows."""
    return _train(200, state_head=True, n_future=6)


@pytest.fixture(scope="module")
def held_out():
    return _data(64, 7, seed=1)


def _latents(model, data) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(data["frames"])  # (N, T, D)


# --- SIGReg -----------------------------------------------------------------------------------
def _knots(knots: int = 17):
    t = torch.linspace(0.0, 3.0, knots)
    return t, torch.exp(-0.5 * t.square())


def test_sigreg_of_a_collapsed_batch_is_its_closed_form():
    """All latents equal (zero): every projection is 0, its characteristic function is 1, so the
    statistic is ``2 N ∫ (1 - e^{-t²/2})² e^{-t²/2} dt`` whatever the directions."""
    t, g = _knots()
    n = 24
    want = 2 * n * torch.trapezoid((1 - g).square() * g, t)
    got = sigreg(torch.zeros(3, n, 8), projections=16, knots=17)
    torch.testing.assert_close(got, want)


def test_sigreg_of_gaussian_latents_is_the_sampling_floor():
    """For N(0, I) latents the statistic's expectation is ``2 ∫ (1 - e^{-t²}) e^{-t²/2} dt`` (the
    empirical characteristic function's variance is ``(1 - |φ(t)|²) / N``), whatever ``N``; a
    collapsed or stretched batch scores far above it."""
    t, g = _knots()
    floor = float(2 * torch.trapezoid((1 - g.square()) * g, t))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 256, 12, generator=gen)
    got = float(sigreg(z, projections=128, knots=17, generator=gen))
    assert got == pytest.approx(floor, rel=0.1)
    assert float(sigreg(3 * z, projections=128, knots=17, generator=gen)) > 20 * floor
    assert float(sigreg(0.1 * z, projections=128, knots=17, generator=gen)) > 20 * floor


# --- training ----------------------------------------------------------------------------------
def _spread(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per-dimension std ``(D,)`` of a latent batch ``(N, D)`` and its rank: the principal
    directions with a standard deviation above 0.1."""
    centred = z - z.mean(0)
    sv = torch.linalg.svdvals(centred) / (len(z) - 1) ** 0.5
    return z.std(0), int((sv > 0.1).sum())


def test_the_latent_does_not_collapse_and_does_without_sigreg(trained, held_out):
    std, rank = _spread(_latents(trained, held_out).flatten(0, 1))
    assert std.min() > 0.2, std  # measured: min 0.30, mean 0.80 (N(0, 1) would be 1)
    # Principal directions with std > 0.1: measured 11 of 32 (5 above 1), where the data has 3
    # factors (x, y, colour).
    assert rank >= 8, rank
    # The same training without the regulariser: the prediction loss alone shrinks the latent.
    bare = _train(sigreg_weight=0.0)
    std0, rank0 = _spread(_latents(bare, held_out).flatten(0, 1))
    assert std0.max() < 0.1 and rank0 == 0, (std0, rank0)  # measured: max std 0.021, rank 0


def test_the_predictor_beats_copying_the_last_latent(trained, held_out):
    z = _latents(trained, held_out)
    k = trained.config.n_past
    frames, actions = held_out["frames"], held_out["actions"]
    with torch.no_grad():
        state = trained.initial(frames[:, :k], actions[:, : k - 1])
        one = trained.features(trained.step(state, actions[:, k - 1]))
        _, ahead = trained.rollout(state, actions[:, k - 1 : -1], decode=False)  # frames k..T-1
    err = (one - z[:, k]).pow(2).sum(1).mean()
    copy = (z[:, k - 1] - z[:, k]).pow(2).sum(1).mean()
    assert err < 0.5 * copy, (err, copy)  # measured: 0.30 of copy
    # Open loop, every step of the rest of the window: closer than "the last context latent stays".
    err_h = (ahead - z[:, k:]).pow(2).sum(-1).mean(0)
    copy_h = (z[:, k - 1 : k] - z[:, k:]).pow(2).sum(-1).mean(0)
    assert (err_h < copy_h).all(), (err_h, copy_h)
    torch.testing.assert_close(ahead[:, 0], one)


def test_the_decoder_learns_from_detached_latents_only():
    """Trained with and without the decoder from the same seed, encoder and predictor end equal:
    the decoder's pixel loss passes no gradient to them. The decoder itself does learn."""
    batch = {k: v[:8] for k, v in _data(8, 7, seed=2).items()}

    def run(decoder: bool):
        torch.manual_seed(0)
        model = dynamics.make("jepa", preset="tiny", decoder=decoder)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        opt = model.optimizers()["model"]
        torch.manual_seed(1)  # the same SIGReg directions in both runs
        for _ in range(3):
            loss, metrics = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model, start, metrics

    with_dec, start, metrics = run(True)
    without, _, _ = run(False)
    body = without.state_dict()
    assert body and all(k.startswith(("encoder.", "predictor.")) for k in body)
    for k, v in body.items():
        assert torch.equal(with_dec.state_dict()[k], v), k
        assert not torch.equal(start[k], v), k  # they did train
    moved = [
        k
        for k, v in with_dec.state_dict().items()
        if k.startswith("decoder.") and not torch.equal(start[k], v)
    ]
    assert moved and "recon" in metrics
    # One backward of the decoder's own loss leaves the encoder and predictor without gradients.
    with_dec.zero_grad(set_to_none=True)
    with torch.no_grad():
        codes = with_dec.encode(batch["frames"]).flatten(0, 1)
    x = batch["frames"].flatten(0, 1).permute(0, 3, 1, 2).float() / 255
    (with_dec.decoder(codes) - x).pow(2).mean().backward()
    assert all(p.grad is None for n, p in with_dec.named_parameters() if not n.startswith("decoder."))


# --- where it runs -----------------------------------------------------------------------------
def test_decode_without_a_decoder_is_a_clear_error_and_latent_dreams_never_decode():
    torch.manual_seed(0)
    model = dynamics.make("jepa", preset="tiny", decoder=False, state_head=True).eval()
    assert model.decoder is None
    frames = torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="no decoder"):
        model.decode(model.initial(frames, torch.zeros(1, 1, 4)))
    with pytest.raises(ValueError, match="no decoder"):
        DreamVecEnv(
            model, 2, reward="goal-image", pool_size=2, horizon=3, image_size=16, device="cpu"
        ).reset()
    vec = DreamVecEnv(
        model, 2, reward="learned", obs="latent", pool_size=2, horizon=3, image_size=16, device="cpu"
    )
    vec.seed(0)
    obs = vec.reset()
    for _ in range(3):
        obs, reward, _, _ = vec.step(np.zeros((2, 4), np.float32))
    assert obs.shape == (2, model.feature_dim) and np.isfinite(obs).all() and np.isfinite(reward).all()


def _dream(model, seed: int):
    """Four steps of a 3-env latent dream rewarded by the model's own state head."""
    opts = {"reward": "learned", "obs": "latent", "pool_size": 4, "horizon": 5, "image_size": 16}
    vec = DreamVecEnv(model, 3, device="cpu", **opts)
    vec.seed(seed)
    out = [vec.reset()]
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 3, 4)).astype(np.float32)
    rewards = []
    for a in actions:
        obs, reward, _, _ = vec.step(a)
        out.append(obs)
        rewards.append(reward)
    return np.stack(out), np.stack(rewards), vec


def test_runs_in_the_batched_dream_with_latent_observations(with_head):
    trained = with_head
    obs, rewards, vec = _dream(trained, seed=3)
    assert vec.observation_space.shape == (trained.feature_dim,)
    assert obs.shape == (5, 3, trained.feature_dim) and obs.dtype == np.float32
    # Latent observations are the model's own features: the reset ones are the initial state's.
    pool = vec.core.pool_state
    first = trained.features(pool).numpy()
    assert all(np.abs(first - row).max(1).min() < 1e-5 for row in obs[0])
    assert obs.std(0).mean() > 0.05  # the actions move the dreamed latent
    again, rewards2, _ = _dream(trained, seed=3)
    np.testing.assert_array_equal(obs, again)
    np.testing.assert_array_equal(rewards, rewards2)


def test_mpc_on_its_state_head_plans_reach_and_random_does_not(with_head):
    """test_learned_planning's moving-square reach task, planned on the jepa's own state head."""
    venv = DummyVecEnv([SquareWorld for _ in range(4)])
    planner = CEM(CEMConfig.cem(population=64, elites=8, horizon=4, iterations=2), 4)
    objective = LearnedReward(with_head.state_head, task=TaskSpec(name="reach", reach_tolerance=TOLERANCE))
    learned = run_episodes(MPCAgent(with_head, planner, objective, 1, seed=0), venv, 8, seed=0)
    random = run_episodes(RandomAgent(4, seed=0), venv, 8, seed=0)
    venv.close()
    assert learned["episodes"] == random["episodes"] == 8
    assert learned["success_rate"] >= 0.75  # measured: 8/8 (random: 0/8)
    assert learned["ci95"][0] > random["ci95"][1]
    assert learned["final_distance"] < 0.25 * random["final_distance"]  # measured: 0.019 vs 0.475


def test_mpc_runs_a_model_without_decoder_in_the_real_sim():
    model = _train(0, decoder=False, state_head=True)  # untrained: this checks the plumbing
    venv = DummyVecEnv([lambda: TimeLimit(PushTableEnv(image_size=16), max_episode_steps=3)])
    planner = CEM(CEMConfig(population=8, elites=2, iterations=1, horizon=3), action_dim=4)
    agent = MPCAgent(model, planner, LearnedReward(model.state_head, task="push"), seed=0)
    drive_until_done(agent, venv)


def test_checkpoint_round_trip_keeps_the_decoder_choice_and_the_rollout(trained, tmp_path, held_out):
    frames, actions = held_out["frames"][:4], held_out["actions"][:4]
    for model in (trained, dynamics.make("jepa", preset="tiny", decoder=False, history=2).eval()):
        path = dynamics.save(model, tmp_path / "m.pt", step=7)
        loaded = dynamics.load(path, device="cpu")
        assert loaded.config == model.config and (loaded.decoder is None) == (model.decoder is None)
        with torch.no_grad():
            outs = [
                m.rollout(m.initial(frames[:, :2], actions[:, :1]), actions[:, 1:5], decode=False)[1]
                for m in (model, loaded)
            ]
        assert torch.equal(outs[0], outs[1])
        if model.decoder is not None:
            s = model.initial(frames[:, :2], actions[:, :1])
            assert torch.equal(model.decode(s), loaded.decode(s))


def test_history_pads_a_short_context_as_standing_still():
    """With ``history=3`` a one-frame context is that frame three times with zero actions between."""
    torch.manual_seed(0)
    model = dynamics.make("jepa", preset="tiny", history=3).eval()
    frames = torch.randint(
        0, 256, (2, 1, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        state = model.initial(frames, torch.zeros(2, 0, 4))
        padded = model.initial(frames.expand(-1, 3, -1, -1, -1), torch.zeros(2, 2, 4))
    assert state["z"].shape == (2, 3, model.config.latent_dim) and state["past"].shape == (2, 2, 4)
    torch.testing.assert_close(state["z"], padded["z"])
    assert torch.equal(state["past"], padded["past"])


def test_config_checks_and_presets():
    paper = dynamics.build_config("jepa", "paper")
    assert (paper.image_size, paper.latent_dim, paper.history, paper.sigreg_weight) == (64, 192, 3, 0.09)
    assert (paper.sigreg_projections, paper.sigreg_knots, paper.batch_size) == (1024, 17, 128)
    for bad in (
        {"image_size": 24},
        {"predictor_layers": 1},
        {"sigreg_weight": -1.0},
        {"predictor_dropout": 1.0},
    ):
        with pytest.raises(ValueError):
            dynamics.build_config("jepa", "tiny", **bad)
    model = dynamics.make("jepa", preset="tiny", image_size=32)
    frames = torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)
    with torch.no_grad():
        assert model.decode(model.initial(frames, torch.zeros(1, 1, 4))).shape == (1, 3, 32, 32)
