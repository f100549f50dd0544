"""``worldmodel plan`` on a tiny SVG: one table, the JSON report, the imagined-plan video, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg

from worldmodel import dynamics
from worldmodel.cli import main
from worldmodel.dynamics.heads import fit_record, head_path_for, save_head

TINY = ["--population", "16", "--elites", "4", "--horizon", "4", "--iterations", "2", "--max-steps", "6"]
TINY += ["--device", "cpu", "--threads", "1", "--num-objects", "1"]


def test_plan_reports_model_oracle_and_random(tmp_path, capsys):
    model = noisy_tiny_svg(image_size=16)
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    save_head(identity_head(model), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 0))
    report, video = tmp_path / "plan.json", tmp_path / "plan.gif"
    args = ["plan", str(ckpt), "--episodes", "2", "--oracle-budget", "6", "--planner", "icem", *TINY]
    assert main([*args, "--json", str(report), "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("model", "oracle", "random", "success"))
    result = json.loads(report.read_text())
    assert set(result) == {"model", "oracle", "random", "task", "max_steps", "command", "args"}
    assert result["args"]["episodes"] == 2 and result["args"]["planner"] == "icem"
    assert result["task"] == "push" and result["max_steps"] == 6
    for entry in (result[k] for k in ("model", "oracle", "random")):
        assert {"success_rate", "final_distance", "ms_per_action", "episodes", "ci95"} <= set(entry)
        assert entry["episodes"] == 2 and entry["successes"] == round(2 * entry["success_rate"])
        lo, hi = entry["ci95"]
        assert lo <= entry["success_rate"] <= hi
        assert 0 < entry["final_distance"] < 0.5  # metres on a 44 cm table
    assert result["model"]["objective"] == "learned"
    assert result["model"]["ms_per_action"] > result["random"]["ms_per_action"]
    check = result["model"]["prediction_check"]  # the model's target readings at each of 6 plans
    assert check["pairs"] == 2 * 5 and check["real_move"] == pytest.approx(check["stays_put"])
    assert "prediction_check" not in result["oracle"] and "the model on its own plans" in out
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(video))
    frame = clip.get_frame(0)
    clip.close()
    assert frame.shape[1] == 3 * frame.shape[0]  # real | imagined | goal
    assert np.asarray(frame).std() > 0


def test_plan_goal_image_objective_without_oracle(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = dynamics.save(dynamics.make("svg-lp", preset="tiny"), tmp_path / "m.pt")  # no head
    report = tmp_path / "r.json"
    args = ["plan", str(ckpt), "--episodes", "1", "--oracle-budget", "0", "--objective", "features", *TINY]
    assert main([*args, "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["oracle"] is None and result["model"]["objective"] == "features"
    assert "prediction_check" not in result["model"]  # no head reads the target
    assert main(["plan", str(ckpt), "--objective", "learned", *TINY]) == 2  # no head to read
    assert "train-head" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "missing.pt"), *TINY]) == 2


def test_particles_and_scored_frames_reach_the_learned_objective(tmp_path, capsys):
    from worldmodel.planning.run import PlanJob, _objective

    model = noisy_tiny_svg(image_size=16)
    ckpt = dynamics.save(model, tmp_path / "last.pt")
    save_head(identity_head(model), head_path_for(ckpt), fitted_to=fit_record(model, ckpt, 0))
    kind, objective = _objective(PlanJob(ckpt, particles=3, score_frames="last"), ckpt, model)
    assert (kind, objective.particles, objective.frames) == ("learned", 3, "last")
    report = tmp_path / "plan.json"
    args = ["plan", str(ckpt), "--episodes", "1", "--oracle-budget", "0", "--particles", "2", *TINY]
    assert main([*args, "--score-frames", "last", "--json", str(report)]) == 0
    saved = json.loads(report.read_text())["args"]
    assert (saved["particles"], saved["score_frames"]) == (2, "last")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["plan", str(ckpt), "--particles", "0", *TINY])
    assert stop.value.code == 2 and "--particles" in capsys.readouterr().err
