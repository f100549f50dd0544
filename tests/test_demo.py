"""``worldmodel demo``: the quick path end to end at a tiny scale, its report, and resuming."""

from __future__ import annotations

import json
import re

import pytest

from worldmodel.cli import main

TINY = {
    "episodes": 20,
    "episode_len": 12,
    "train_steps": 12,
    "batch_size": 4,
    "head_steps": 10,
    "eval_sequences": 1,
    "eval_samples": 2,
    "plan_episodes": 1,
    "plan_args": "--population 8 --elites 2 --horizon 3 --iterations 1 --oracle-budget 4 --max-steps 6",
    "agent_timesteps": 64,
    "agent_envs": 4,
    "agent_eval_episodes": 1,
    "device": "cpu",
}


def demo(out, *extra: str) -> int:
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return main(["demo", "--quick", "--out", str(out), *sets, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert demo(out) == 0
    return out


def test_every_stage_writes_its_output(run):
    written = ["data/manifest.json", "model/checkpoints/last.pt", "eval.json", "eval.gif"]
    written += ["plan.json", "plan_recorded.json", "plan_reach.json"]
    written += ["agent/checkpoints/last.zip", "agent_eval.json"]
    for path in written:
        assert (run / path).is_file(), path
    # The model plans and dreams with its own state head: no separate head file is trained.
    assert not (run / "model/checkpoints/last.head.pt").exists()
    from worldmodel import dynamics

    config = dynamics.load(run / "model/checkpoints/last.pt", device="cpu").config
    assert config.state_head and config.state_arm == "actions"  # the demo integrates the arm
    assert config.state_objects == "actions"  # and the objects
    for name, task in (
        ("plan.json", "push"),
        ("plan_recorded.json", "recorded-goal"),
        ("plan_reach.json", "reach"),
    ):
        plan = json.loads((run / name).read_text())
        assert plan["task"] == task
        for agent in ("model", "oracle", "random"):
            r = plan[agent]
            assert r["episodes"] == 1 and r["successes"] == round(r["success_rate"])
            lo, hi = r["ci95"]
            assert lo <= r["success_rate"] <= hi and hi - lo > 0.5  # one episode: a wide interval
        assert plan["model"]["objective"] == "learned"
    agent = json.loads((run / "agent_eval.json").read_text())
    assert agent["episodes"] == 1 and agent["task"] == "reach" and len(agent["ci95"]) == 2
    stages = ("collect", "train", "eval", "plan", "plan-recorded-goal", "plan-reach", "agent", "agent-eval")
    assert sorted(p.name for p in (run / ".stages").iterdir()) == sorted(f"{k}.done" for k in stages)


def test_report_has_the_figures(run):
    html = (run / "report.html").read_text()
    heads = re.findall(r"<h2>(.*?)</h2>", html)
    assert heads[:2] == ["World-model training", "Prediction quality vs copy-last-frame"]
    assert "Control in the real simulator" in heads
    assert "the learned planner" in html and "the dream-trained agent" in html  # the plain verdicts
    assert html.count("<svg") >= 3  # training losses, PSNR and SSIM per step
    ev = json.loads((run / "eval.json").read_text())
    assert f"{ev['baseline']['psnr_mean']:.3g}" in html  # the table shows the measured baseline
    for label in (
        "MPC with the world model",
        "MPC with the simulator",
        "random actions",
        "agent trained in the dream",
    ):
        assert label in html
    assert 'src="eval.gif"' in html and "not run" not in html


def test_rerun_skips_finished_stages(run, capsys):
    capsys.readouterr()
    assert demo(run) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 8


def test_rerun_from_its_saved_config_alone(run, capsys):
    capsys.readouterr()
    assert main(["demo", "--out", str(run), "--config", str(run / "demo_config.json")]) == 0
    assert capsys.readouterr().out.count("done already") == 8  # the very same settings


def test_other_settings_in_the_same_folder_are_refused(run, capsys):
    assert demo(run, "--set=train_steps=13") == 2
    assert "other settings" in capsys.readouterr().err


def test_unknown_field_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "x"), "--set", "no_such=1"]) == 2
    assert "no_such" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model", ["videoflow", "vgan"])
def test_demo_runs_with_the_other_models(model, tmp_path):
    out = tmp_path / model
    assert demo(out, "--model", model, "--set=image_size=16") == 0
    plan = json.loads((out / "plan.json").read_text())
    assert {"model", "oracle", "random", "task"} <= set(plan)
    assert json.loads((out / "agent_eval.json").read_text())["episodes"] == 1
    assert "not run" not in (out / "report.html").read_text()


def test_profile_follows_the_flags_and_the_gpu():
    from worldmodel.cli.demo import choose_profile, demo_config
    from worldmodel.dynamics import build_config

    assert choose_profile(False, False, cuda=False) == "quick"
    assert choose_profile(False, False, cuda=True) == "full"
    assert choose_profile(True, False, cuda=True) == "quick"
    assert choose_profile(False, True, cuda=False) == "full"
    with pytest.raises(ValueError, match="exclude"):
        choose_profile(True, True, cuda=False)
    full, quick = demo_config("full", None, {}), demo_config("quick", None, {})
    assert (full.preset, quick.preset) == ("paper", "tiny")
    assert full.train_steps > quick.train_steps and full.agent_envs > quick.agent_envs
    # The full profile's model builds at the demo's frame size with the model's own settings.
    cfg = build_config(full.model, full.preset, image_size=full.image_size)
    assert cfg.image_size == 64 and cfg.encoder == "vgg64"


def test_bad_state_settings_are_one_line_errors():
    from worldmodel.cli.demo_settings import demo_config

    for sets, match in (
        ({"state_arm": "proprio"}, "--set state_arm"),
        ({"state_objects": "pixels"}, "--set state_objects"),
        ({"state_arm": "features"}, "set state_arm=actions"),  # objects integrate with the arm
    ):
        with pytest.raises(ValueError, match=match):
            demo_config("quick", None, sets)
    assert (
        demo_config("quick", None, {"state_arm": "features", "state_objects": "features"}).state_arm
        == "features"
    )
