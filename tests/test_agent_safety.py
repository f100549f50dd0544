"""agents/: a run folder is data, never code; bad flags leave no run folder behind.

Loading (``agents.evaluate RUN``, ``agents.train --resume``) goes through ``load_agent``, which
rebuilds the agent from ``config.json`` and takes only tensors (``torch.load(weights_only=True)``)
and counters (plain JSON) from ``last.zip``; SAC's replay buffer is an ``.npz`` read without
pickle. The payloads here would create a marker file if anything unpickled them (each is first
shown to be live on a control marker). Runs are made in this process (tiny, seeded, CPU).
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg
from stable_baselines3.common.logger import Logger
from test_agents import SMALL, TINY_PPO

from agents import evaluate as evaluate_script
from agents import train as train_script
from agents import train_real as train_real_script
from agents.common import cli
from worldmodel import dynamics
from worldmodel.dynamics.heads import fit_record, head_path_for, save_head
from worldmodel.rl import (
    RunConfig,
    algo_class,
    build_agent,
    checkpoint_path,
    load_agent,
    load_replay_buffer,
    make_eval_env,
    make_real_env,
    replay_buffer_path,
    save_agent,
)

PPO_ARGS = ["--horizon", "16", "--eval-every", "0", "--eval-episodes", "1", "--video-episodes", "0"]


class Touch:
    """Unpickling this creates ``path``: the stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = noisy_tiny_svg(64)
    path = dynamics.save(model, tmp_path_factory.mktemp("wm") / "last.pt")
    save_head(identity_head(model), head_path_for(path), fitted_to=fit_record(model, path, 0))
    return path


def main(module, argv: list, capsys) -> tuple[int, str, str]:
    """``cli`` as ``python -m agents.X`` runs it: (exit status, stdout, stderr). Python warnings
    (say, of a library) are not the script's output and are kept out of stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli(module.__name__, module.run, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def ppo_run(ckpt, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ppo") / "run"
    argv = ["--algo", "ppo", "--checkpoint", ckpt, "--timesteps", 64, "--out", run, *PPO_ARGS]
    assert train_script.run([str(a) for a in [*argv, *TINY_PPO, *SMALL]]) == 0
    return run


def rewrite_zip(path: Path, **entries: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        content = {name: z.read(name) for name in z.namelist()}
    content.update(entries)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in content.items():
            z.writestr(name, data)


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_a_serialized_payload_in_the_data_entry_is_never_decoded(ppo_run, tmp_path, capsys):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    payload = base64.b64encode(cloudpickle.dumps(Touch(marker))).decode()
    cloudpickle.loads(base64.b64decode(base64.b64encode(cloudpickle.dumps(Touch(control)))))
    assert control.is_file()  # the payload is live: SB3's load would run it
    run = copy_run(ppo_run, tmp_path)
    ckpt = checkpoint_path(run)
    with zipfile.ZipFile(ckpt) as z:
        data = json.loads(z.read("data"))
    for key in ("policy_class", "observation_space", "lr_schedule"):
        data[key] = {":type:": "<class 'Touch'>", ":serialized:": payload}
    rewrite_zip(ckpt, data=json.dumps(data).encode())
    argv = [run, "--episodes", 1, "--video-episodes", 0, "--json", tmp_path / "e.json"]
    code, _, err = main(evaluate_script, argv, capsys)
    assert code == 0, err
    assert not marker.exists()
    assert json.loads((tmp_path / "e.json").read_text())["timesteps"] == 64


def test_a_pickle_in_a_weight_entry_is_refused_in_one_line(ppo_run, tmp_path, capsys):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    buf = io.BytesIO()
    torch.save(Touch(control), buf)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert control.is_file()  # live: a plain torch.load would run it
    buf = io.BytesIO()
    torch.save(Touch(marker), buf)
    run = copy_run(ppo_run, tmp_path)
    ckpt = checkpoint_path(run)
    rewrite_zip(ckpt, **{"policy.pth": buf.getvalue()})
    code, _, err = main(evaluate_script, [run, "--episodes", 1, "--video-episodes", 0], capsys)
    line = one_line(err)
    assert code == 2 and not marker.exists()
    assert line.startswith(f"agents.evaluate: error: {ckpt}: policy.pth is not plain tensors"), line
    assert line.endswith("(torch.load(weights_only=True) refused it: Unsupported global: GLOBAL getattr)")

    # A plain pickle (not torch's format), a shape that does not fit, not a zip: one line each.
    rewrite_zip(ckpt, **{"policy.pth": pickle.dumps(Touch(marker))})
    code, _, err = main(evaluate_script, [run, "--episodes", 1], capsys)
    assert code == 2 and not marker.exists() and f"{ckpt}: policy.pth is not plain tensors" in one_line(err)
    with zipfile.ZipFile(checkpoint_path(ppo_run)) as z:
        state = torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)
    name = next(k for k, v in state.items() if v.dim() == 2)
    state[name] = state[name][:, :-1]
    buf = io.BytesIO()
    torch.save(state, buf)
    rewrite_zip(ckpt, **{"policy.pth": buf.getvalue()})
    code, _, err = main(evaluate_script, [run, "--episodes", 1], capsys)
    assert code == 2 and f"{ckpt}: its weights do not fit the run's config" in one_line(err)
    ckpt.write_bytes(b"not a zip")
    code, _, err = main(evaluate_script, [run, "--episodes", 1], capsys)
    assert code == 2 and f"{ckpt}: not a readable agent checkpoint" in one_line(err)


def test_ppo_load_agent_acts_as_the_saved_model(tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    hyper = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "learning_rate": 3e-4, "gamma": 0.99}
    cfg = RunConfig(algo="ppo", env="real", timesteps=64, num_envs=1, device="cpu", vec="dummy", hyper=hyper)
    model = build_agent(cfg, VecMonitor(DummyVecEnv([lambda: make_real_env(cfg.image_size)])))
    model.set_logger(Logger(folder=None, output_formats=[]))  # no SB3-* folder in /tmp
    model.learn(64)
    ckpt = save_agent(model, tmp_path)
    env = make_real_env(cfg.image_size)
    loaded = load_agent(cfg, ckpt, env)
    assert (loaded.num_timesteps, loaded._n_updates) == (64, model._n_updates) and model._n_updates > 0
    obs = np.stack([env.reset(seed=s)[0] for s in range(6)])
    actions = [m.predict(obs, deterministic=True)[0] for m in (loaded, model)]
    np.testing.assert_array_equal(*actions)
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[key], value, rtol=0, atol=0)
    mine, theirs = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    for key, state in mine["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(theirs["state"][key][name], value, rtol=0, atol=0)
    env.close()


@pytest.fixture(scope="module")
def sac_run(ckpt, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sac") / "run"
    args = ["--algo", "sac", "--checkpoint", ckpt, "--obs", "latent", "--reward", "goal-image"]
    args += ["--timesteps", 48, "--learning-starts", 16, "--batch-size", 16, "--buffer-size", 200]
    args += ["--eval-every", 0, "--eval-episodes", 1, "--video-episodes", 0, "--out", run, *SMALL]
    assert train_script.run([str(a) for a in args]) == 0
    return run


def test_sac_resumes_with_its_npz_buffer_and_never_reads_a_pickle(sac_run, tmp_path, capsys):
    run = copy_run(sac_run, tmp_path)
    ckpt, npz = checkpoint_path(run), replay_buffer_path(run)
    assert npz.is_file() and not (run / "checkpoints" / "replay_buffer.pkl").exists()
    cfg = RunConfig.load(run)
    with np.load(npz, allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    assert int(saved["pos"]) == 24 and not saved["full"]  # 48 steps over 2 envs, 100 rows

    # load_agent + load_replay_buffer on a training env: the buffer and the entropy coefficient back.
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = make_eval_env(cfg)
    agent = load_agent(cfg, ckpt, DummyVecEnv([lambda: env, lambda: make_eval_env(cfg)]), device="cpu")
    load_replay_buffer(agent, npz)
    buffer = agent.replay_buffer
    assert (buffer.pos, buffer.full, agent.num_timesteps) == (24, False, 48)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(buffer, name)[:24], saved[name])
    trusted = algo_class("sac").load(ckpt, device="cpu")  # our own file: SB3's loader to compare
    torch.testing.assert_close(agent.log_ent_coef, trusted.log_ent_coef, rtol=0, atol=0)
    assert agent._n_updates == trusted._n_updates > 0

    # A buffer of another shape is refused in one line naming the file.
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**saved, "actions": saved["actions"][..., :2]})
    with pytest.raises(ValueError, match=rf"^{bad}: not a replay buffer of this run \(actions is"):
        load_replay_buffer(agent, bad)

    # --resume: the pickle beside it is not read, the .npz is, and the buffer grows from pos 24.
    marker = tmp_path / "pwned"
    (run / "checkpoints" / "replay_buffer.pkl").write_bytes(pickle.dumps(Touch(marker)))
    resume = ["--out", run, "--resume", "--timesteps", 64, "--no-progress"]
    code, out, err = main(train_script, resume, capsys)
    assert code == 0, err
    assert not marker.exists()
    assert out.count("replay_buffer.pkl: not read") == 1 and "48 transitions" in out
    with np.load(npz, allow_pickle=False) as z:
        assert int(z["pos"]) == 32  # 24 + 16 steps / 2 envs: the loaded buffer continued
        np.testing.assert_array_equal(z["observations"][:24], saved["observations"])
    assert load_agent(cfg, ckpt, env, device="cpu").num_timesteps == 64
    env.close()


def test_bad_values_are_one_line_write_nothing_and_the_fix_runs_there(ckpt, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--algo", "ppo", "--checkpoint", ckpt, "--timesteps", 64, "--out", run, *SMALL, *PPO_ARGS]
    argv += ["--n-steps", 32, "--n-epochs", 1]
    bad = [("--batch-size", "0"), ("--n-steps", "0"), ("--latent-bound", "-1"), ("--lr", "nan")]
    for flag, value in [*bad, ("--gamma", "2")]:
        code, _, err = main(train_script, [*argv, flag, value], capsys)
        assert code == 2
        assert one_line(err).startswith(f"python -m agents.train: error: argument {flag}: must be"), err
        assert not (run / "config.json").exists()
    # Past the flags, a value SB3 itself refuses: still no config.json.
    code, _, err = main(train_script, [*argv, "--batch-size", 1], capsys)  # PPO needs > 1
    assert code == 2 and "SB3's PPO refuses the run's settings" in one_line(err)
    assert not (run / "config.json").exists()
    code, _, err = main(train_script, [*argv, "--batch-size", 32], capsys)
    assert code == 0, err
    assert RunConfig.load(run).hyper["batch_size"] == 32

    # A hand-edited config is checked as the flags are: one line naming the file.
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "latent_bound": -1}))
    for module, args in ((evaluate_script, [run]), (train_script, ["--out", run, "--resume"])):
        code, _, err = main(module, args, capsys)
        assert code == 2
        assert f"{run / 'config.json'}: latent_bound must be a finite number > 0" in one_line(err)

    real = tmp_path / "real"
    args = ["--algo", "ppo", "--timesteps", 64, "--vec", "dummy", "--num-envs", 1, "--n-steps", 1]
    code, _, err = main(train_real_script, [*args, "--device", "cpu", "--out", real], capsys)
    assert code == 2 and "SB3's PPO refuses" in one_line(err) and not (real / "config.json").exists()
