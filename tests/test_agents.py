"""agents/: the training and evaluation scripts end to end (subprocesses, tiny model, tiny budgets).

Each script runs as a user runs it (``python -m agents.X``) on a tiny SVG checkpoint with an
untrained object head. The checks: the files a run writes (config, SB3 zip, TensorBoard events,
videos, ``eval.jsonl``), that the periodic evaluation really ran in the real sim (its figures equal
an independent real-sim evaluation of the saved policy, episode for episode), resume continues the
step counter, latent observations work in the real sim, and bad input gives one line, not a
traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg, object_moving_svg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import worldmodel
from agents import evaluate as evaluate_script
from agents import train as train_script
from worldmodel import dynamics
from worldmodel.dynamics.heads import fit_record, head_path_for, save_head
from worldmodel.envs.latent import LatentObservation
from worldmodel.rl import (
    EVAL_SEED,
    RunConfig,
    algo_class,
    evaluate_real,
    load_agent,
    make_eval_env,
)

REPO = Path(__file__).resolve().parents[1]
TINY_PPO = ["--n-steps", "32", "--batch-size", "32", "--n-epochs", "1"]
SMALL = ["--num-envs", "2", "--pool-size", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def model():
    return noisy_tiny_svg(64)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    path = dynamics.save(model, tmp_path_factory.mktemp("wm") / "last.pt")
    save_head(identity_head(model), head_path_for(path), fitted_to=fit_record(model, path, 0))
    return path


def script(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def eval_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]


def assert_real_eval_matches(run: Path, row: dict, episodes: int) -> None:
    """The logged real evaluation equals a fresh real-sim evaluation of the saved policy."""
    cfg = RunConfig.load(run)
    env = make_eval_env(cfg)
    agent = load_agent(cfg, run / "checkpoints" / "last.zip", env, device="cpu")
    try:
        summary, _ = evaluate_real(agent, env, episodes, seed=EVAL_SEED)
    finally:
        env.close()
    assert row["episodes"] == episodes
    assert row["real_final_distance"] == pytest.approx(summary["final_distance"], rel=1e-6)
    assert row["real_success_rate"] == summary["success_rate"]
    assert 0.0 < summary["final_distance"] < 0.7  # metres on the table: a real-sim figure


def test_train_in_dream_resume_and_evaluate(ckpt, tmp_path):
    run = tmp_path / "ppo"
    common = [
        "--horizon",
        "16",
        "--eval-every",
        "64",
        "--eval-episodes",
        "2",
        "--video-episodes",
        "1",
        *TINY_PPO,
        *SMALL,
    ]
    ok(
        script(
            "agents.train", "--algo", "ppo", "--checkpoint", ckpt, "--timesteps", 64, "--out", run, *common
        )
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["checkpoint"] == str(ckpt.resolve())
    assert (cfg["algo"], cfg["env"], cfg["obs"], cfg["reward"]) == ("ppo", "dream", "pixels", "learned")
    assert (run / "checkpoints" / "last.zip").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = eval_rows(run)
    assert [r["timesteps"] for r in rows] == [64]
    assert (run / rows[0]["video"]).stat().st_size > 0
    assert rows[0]["dream_episodes"] == 4  # 32 steps per env, horizon 16: two dream episodes each
    assert_real_eval_matches(run, rows[-1], 2)
    tags = scalars(run)
    assert [s for s, _ in tags["real/success_rate"]] == [64]
    assert {"real/final_distance", "dream/success_rate", "rollout/ep_rew_mean", "train/value_loss"} <= set(
        tags
    )

    # Resume: same counter, same curves, one more evaluation.
    out = ok(script("agents.train", "--out", run, "--resume", "--timesteps", 128, "--no-progress"))
    assert "resuming" in out.stdout
    assert [r["timesteps"] for r in eval_rows(run)] == [64, 128]
    # The scripts never SB3-load it, but SB3 itself still can (last.zip is model.save's).
    assert algo_class("ppo").load(run / "checkpoints" / "last.zip").num_timesteps == 128
    assert [s for s, _ in scalars(run)["real/success_rate"]] == [64, 128]

    # agents.evaluate rebuilds everything from RUN: same seeds and policy as the last evaluation.
    ok(script("agents.evaluate", run, "--episodes", 2, "--json", tmp_path / "ev.json", "--video-episodes", 1))
    result = json.loads((tmp_path / "ev.json").read_text())
    assert result["episodes"] == 2 and len(result["per_episode"]) == 2
    assert result["final_distance"] == pytest.approx(eval_rows(run)[-1]["real_final_distance"], rel=1e-6)
    assert result["success_rate"] == eval_rows(run)[-1]["real_success_rate"]
    # the video goes beside the JSON, never into the training run
    assert (tmp_path / "ev.mp4").stat().st_size > 0 and not (run / "videos" / "evaluate.mp4").exists()


def test_latent_sac_goal_image_end_to_end(ckpt, model, tmp_path):
    run = tmp_path / "sac"
    args = ["--algo", "sac", "--checkpoint", ckpt, "--obs", "latent", "--reward", "goal-image"]
    args += ["--timesteps", 48, "--learning-starts", 16, "--batch-size", 16, "--buffer-size", 200]
    args += ["--eval-every", 0, "--eval-episodes", 1, "--video-episodes", 0, "--out", run, *SMALL]
    ok(script("agents.train", *args))
    cfg = RunConfig.load(run)
    env = make_eval_env(cfg, model)
    agent = load_agent(cfg, run / "checkpoints" / "last.zip", env, device="cpu")
    env.close()
    assert agent.observation_space.shape == (model.feature_dim,)
    assert type(agent.policy).__name__ == "SACPolicy"  # MlpPolicy
    assert agent.num_timesteps == 48
    assert (run / "checkpoints" / "replay_buffer.npz").is_file()
    assert not (run / "checkpoints" / "replay_buffer.pkl").exists()
    rows = eval_rows(run)
    assert [r["timesteps"] for r in rows] == [48]
    assert_real_eval_matches(run, rows[0], 1)
    out = tmp_path / "ev.json"
    assert (
        evaluate_script.run([str(run), "--episodes", "1", "--json", str(out), "--video-episodes", "0"]) == 0
    )
    assert json.loads(out.read_text())["final_distance"] == pytest.approx(rows[0]["real_final_distance"])


def test_train_real_then_evaluate(tmp_path):
    run = tmp_path / "real"
    # 64 steps per env: each env ends one real episode (TimeLimit 50) before the final evaluation.
    args = ["--algo", "ppo", "--timesteps", 128, "--vec", "dummy", "--num-envs", 2, *TINY_PPO]
    args += ["--eval-episodes", 1, "--video-episodes", 1, "--device", "cpu", "--no-progress", "--out", run]
    ok(script("agents.train_real", *args))
    cfg = RunConfig.load(run)
    assert (cfg.env, cfg.obs, cfg.checkpoint) == ("real", "pixels", None)
    rows = eval_rows(run)
    assert rows[-1]["timesteps"] == 128 and rows[-1]["train_env_episodes"] == 2
    assert {"real/success_rate", "train_env/success_rate", "rollout/ep_rew_mean"} <= set(scalars(run))
    assert_real_eval_matches(run, rows[-1], 1)
    out = tmp_path / "ev.json"
    assert (
        evaluate_script.run([str(run), "--episodes", "1", "--json", str(out), "--video-episodes", "0"]) == 0
    )
    assert json.loads(out.read_text())["episodes"] == 1


def test_latent_observation_is_the_models_reading_of_real_frames(model):
    """Each observation = features(initial(last `window` real frames, the actions between them)),
    the first frame repeated with the rest action (no motion, fingers open) at the reset."""
    window = 4
    env = LatentObservation(gym.make(worldmodel.PUSH_TABLE_ID, render_mode="rgb_array"), model, window=window)
    assert env.observation_space == gym.spaces.Box(-10.0, 10.0, (model.feature_dim,), np.float32)
    k = model.config.n_past

    def expect(frames, actions):
        with torch.no_grad():
            x = torch.from_numpy(np.stack(frames)[None])
            a = torch.from_numpy(np.stack(actions)[None].astype(np.float32))
            return model.features(model.initial(x, a))[0].clamp(-10, 10).numpy()

    obs, _ = env.reset(seed=3)
    frames = [env.render()] * k
    actions = [np.array([0, 0, 0, -1], np.float32)] * (k - 1)
    np.testing.assert_allclose(obs, expect(frames, actions), atol=1e-5)
    rng = np.random.default_rng(0)
    seen = [obs]
    for _ in range(window + 2):  # past the window: old frames drop out
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        obs, _, _, _, _ = env.step(a)
        frames, actions = [*frames, env.render()][-window:], [*actions, a][-(window - 1) :]
        np.testing.assert_allclose(obs, expect(frames, actions), atol=1e-5)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        seen.append(obs)
    assert np.ptp(np.stack(seen), axis=0).max() > 1e-3  # the arm moved: the features follow the frames
    env.close()


def test_latent_task_observation_appends_the_true_arm_and_the_goal(model):
    env = LatentObservation(gym.make(worldmodel.PUSH_TABLE_ID, task="reach"), model, task_obs=True)
    plain = LatentObservation(gym.make(worldmodel.PUSH_TABLE_ID, task="reach"), model)
    f = model.feature_dim
    assert env.observation_space.shape == (f + 6,)
    obs, info = env.reset(seed=2)
    ref, _ = plain.reset(seed=2)
    np.testing.assert_allclose(obs[:f], ref, atol=1e-6)
    np.testing.assert_allclose(obs[f:], np.concatenate([info["ee_pos"], info["goal_pos"]]), atol=1e-6)
    a = np.array([1.0, 0.0, 0.0, -1.0], np.float32)
    obs, _, _, _, info = env.step(a)
    np.testing.assert_allclose(obs[f : f + 3], info["ee_pos"], atol=1e-6)  # proprioception, updated
    env.close()
    plain.close()


def test_latent_task_observation_carries_the_target_as_the_dream_does():
    """With a head that integrates the objects (here: 1 cm in x per action), the real env's task
    observation ends with the target carried from its position at the reset along the executed
    actions, as the dream carries it; a reset starts it from the sim's target again."""
    m = object_moving_svg(0.01)
    env = LatentObservation(gym.make(worldmodel.PUSH_TABLE_ID, task="push"), m, task_obs=True)
    f = m.feature_dim
    assert env.observation_space.shape == (f + 9,)
    obs, info = env.reset(seed=3)
    start = info["target_pos"].copy()
    np.testing.assert_allclose(obs[f:], np.concatenate([info["ee_pos"], info["goal_pos"], start]), atol=1e-6)
    for t in (1, 2):
        obs, _, _, _, info = env.step(np.array([0.3, -0.2, 0.0, -1.0], np.float32))
        np.testing.assert_allclose(obs[-3:], start + np.array([0.01 * t, 0.0, 0.0]), atol=1e-5)
        np.testing.assert_allclose(obs[f : f + 3], info["ee_pos"], atol=1e-6)
    obs, info = env.reset(seed=4)
    np.testing.assert_allclose(obs[-3:], info["target_pos"], atol=1e-6)
    env.close()


def test_latent_observation_encodes_with_the_dreams_dtype(model):
    """A bf16 dream's latent policy reads real frames through the same bf16 copy of the model."""
    envs = {
        dt: LatentObservation(gym.make(worldmodel.PUSH_TABLE_ID), model, dtype=dt)
        for dt in ("float32", "bfloat16")
    }
    assert envs["bfloat16"].model.encoder.stages[0][0].weight.dtype == torch.bfloat16
    assert envs["float32"].model.encoder.stages[0][0].weight.dtype == torch.float32
    obs = {dt: env.reset(seed=5)[0] for dt, env in envs.items()}
    assert np.abs(obs["bfloat16"] - obs["float32"]).max() < 2e-2
    for env in envs.values():
        env.close()


def test_bad_input_is_one_line(ckpt, tmp_path, capsys):
    proc = script(
        "agents.train",
        "--algo",
        "ppo",
        "--checkpoint",
        tmp_path / "nope.pt",
        "--timesteps",
        8,
        "--out",
        tmp_path / "r",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"agents.train: error: {tmp_path / 'nope.pt'}: world-model checkpoint not found"
    ]
    assert not (tmp_path / "r").exists()

    def error(main, argv) -> str:
        from agents.common import cli

        with pytest.raises(SystemExit) as exc:
            cli("x", main, argv)
        assert exc.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "unknown algorithm 'dqn'" in error(
        train_script.run,
        ["--algo", "dqn", "--checkpoint", str(ckpt), "--timesteps", "8", "--out", str(tmp_path / "a")],
    )
    assert "--n-steps applies to ppo" in error(
        train_script.run,
        [
            "--algo",
            "sac",
            "--checkpoint",
            str(ckpt),
            "--timesteps",
            "8",
            "--n-steps",
            "4",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    (tmp_path / "empty").mkdir()
    assert "not a run folder" in error(evaluate_script.run, [str(tmp_path / "empty")])
    bare = tmp_path / "bare" / "last.pt"
    bare.parent.mkdir()
    bare.write_bytes(ckpt.read_bytes())  # no head beside it
    assert "train-head" in error(
        train_script.run,
        ["--algo", "ppo", "--checkpoint", str(bare), "--timesteps", "8", "--out", str(tmp_path / "c")],
    )
    assert not (tmp_path / "c").exists()  # nothing written for a run that could not start


def test_every_flag_is_explained_and_random_baseline_runs(tmp_path):
    from agents import train_real

    for module in (train_script, train_real, evaluate_script):
        parser = module.build_parser()
        for action in parser._actions:
            assert action.help and len(action.help) > 10, (module.__name__, action.dest)
    out = tmp_path / "random.json"
    assert evaluate_script.run(["--random", "--episodes", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["policy"] == "random" and result["episodes"] == 2
    assert 0.0 < result["final_distance"] < 0.7


def test_evaluate_takes_the_task(tmp_path):
    out = tmp_path / "reach.json"
    assert evaluate_script.run(["--random", "--task", "reach", "--episodes", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "reach" and result["episodes"] == 2
    assert all(row["length"] == 30 for row in result["per_episode"])  # the reach budget
    lo, hi = result["ci95"]
    assert result["successes"] == round(2 * result["success_rate"]) and lo <= result["success_rate"] <= hi
    with pytest.raises(SystemExit):  # argparse: one line naming the choices
        evaluate_script.run(["--random", "--task", "juggle"])
