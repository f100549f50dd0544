"""``--config FILE``: a run's saved settings repeat it; flags on the command line win; bad files are
one line."""

from __future__ import annotations

import json

import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg
from test_data_shards import fake_collect

from worldmodel import dynamics
from worldmodel.cli import main, parse
from worldmodel.dynamics.heads import fit_record, head_path_for, save_head


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("config") / "data"
    fake_collect(root, episodes=20, seq_len=14)
    return root


def test_train_saves_its_settings_and_repeats_from_them(data, tmp_path):
    first = tmp_path / "a"
    argv = ["train", "svg-lp", "--preset", "tiny", "--data", str(data), "--out", str(first)]
    assert main([*argv, "--steps", "3", "--seed", "5", "--set", "z_dim=4", "--no-progress"]) == 0
    saved = json.loads((first / "config.json").read_text())
    assert saved["command"] == "train" and saved["args"]["steps"] == 3 and saved["args"]["set"] == ["z_dim=4"]
    # the same run again from the file alone (another --out): bit-identical weights
    second = tmp_path / "b"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(second), "--no-progress"]) == 0
    a, b = (torch.load(p / "checkpoints" / "last.pt", weights_only=True)["weights"] for p in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # flags on the command line win over the file
    args = parse(["train", "--config", str(first / "config.json"), "--steps", "7", "--out", "x"])
    assert (args.steps, args.seed, args.model, args.set) == (7, 5, "svg-lp", ["z_dim=4"])


def test_plan_repeats_from_its_report(tmp_path):
    model = noisy_tiny_svg(image_size=16)
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    save_head(identity_head(model), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 0))
    tiny = ["--population", "8", "--horizon", "2", "--iterations", "1", "--max-steps", "3", "--episodes", "2"]
    tiny += ["--oracle-budget", "0", "--device", "cpu", "--num-objects", "1", "--seed", "3"]
    assert main(["plan", str(ckpt), *tiny, "--json", str(tmp_path / "a.json")]) == 0
    assert main(["plan", "--config", str(tmp_path / "a.json"), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["model"]["final_distance"] == b["model"]["final_distance"]
    assert a["random"]["final_distance"] == b["random"]["final_distance"]
    assert {k: v for k, v in b["args"].items() if k != "json"} == {
        k: v for k, v in a["args"].items() if k != "json"
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"stepz": 3}', "unknown setting(s) stepz"),
        ('{"steps": 0}', "steps must be a whole number >= 1, got '0'"),
        ('{"lr": "nan"}', "lr must be a finite number > 0"),
        ('{"steps": true}', "expected a single value"),
        ('{"compile": "yes"}', "compile must be true or false"),
        ('{"command": "plan", "args": {}}', "settings of `plan`, not `train`"),
    ],
)
def test_bad_config_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    assert main(["train", "svg-lp", "--data", "d", "--out", str(tmp_path / "o"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0], err
    assert not (tmp_path / "o").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["plan", "x.pt", "--config", str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_agent_scripts_take_another_runs_config(tmp_path, capsys):
    from agents import train as agents_train
    from agents import train_real
    from agents.common import parse_with_run_config
    from worldmodel.rl import HYPER_DEFAULTS, RunConfig

    hyper = {**HYPER_DEFAULTS["ppo"], "learning_rate": 1e-3, "n_steps": 16}
    dream = {"horizon": 30, "pool_size": 8, "temperature": 0.5, "data": None, "goal_distance": "pixels"}
    cfg = RunConfig(algo="ppo", env="dream", timesteps=500, num_envs=4, obs="latent", reward="learned")
    cfg.checkpoint, cfg.task, cfg.hyper, cfg.dream = "/m/last.pt", "reach", hyper, {**dream, "task_obs": True}
    cfg.save(tmp_path / "run")
    path = str(tmp_path / "run" / "config.json")
    parser = agents_train.build_parser()
    args = parse_with_run_config(parser, ["--config", path, "--out", "new", "--seed", "4"])
    assert (args.algo, args.timesteps, args.num_envs, args.obs) == ("ppo", 500, 4, "latent")
    assert args.task == "reach"
    assert (args.lr, args.n_steps, args.horizon, args.pool_size, args.temperature) == (1e-3, 16, 30, 8, 0.5)
    assert args.task_obs is True and args.checkpoint == "/m/last.pt" and args.seed == 4  # the flag wins
    # a dream run's settings that the real-sim script has no flag for are named
    with pytest.raises(ValueError, match="unknown setting"):
        parse_with_run_config(train_real.build_parser(), ["--config", path, "--out", "new"])
    cfg.hyper["gamma"] = 1.5
    cfg.save(tmp_path / "bad")
    with pytest.raises(ValueError, match="gamma must be a finite number in"):
        bad = str(tmp_path / "bad" / "config.json")
        parse_with_run_config(agents_train.build_parser(), ["--config", bad])
