"""``worldmodel bench``: two models at a tiny size end to end, its JSON and table, resuming, bad input;
the figures' helpers on hand-made reports."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest
from test_demo import TINY as DEMO_TINY

from worldmodel.cli import main
from worldmodel.envs.task import wilson_interval

MODELS = ("svg-det", "jepa")
TINY = {**DEMO_TINY, "image_size": 16}  # the demo test's sizes, at the tiny presets' frame size
# every stage of one model: the demo's (collect marked done from the shared data) and mppi, grad
MODEL_STAGES = ("collect", "train", "eval", "plan", "plan-recorded-goal", "plan-reach", "agent", "agent-eval")
MODEL_STAGES += ("plan-reach-mppi", "plan-reach-grad")


def bench(out, *extra: str, models=MODELS) -> int:
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return main(
        [
            "bench",
            "--quick",
            "--out",
            str(out),
            "--models",
            ",".join(models),
            "--device",
            "cpu",
            *sets,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert bench(out) == 0
    return out, printed.getvalue()


def _read(path):
    return json.loads(path.read_text())


def test_json_has_every_figure_of_every_model(run):
    from worldmodel.dynamics import make
    from worldmodel.dynamics.checkpoint import read

    out, _ = run
    report = _read(out / "bench.json")
    assert list(report["models"]) == list(MODELS) and report["errors"] == {}
    assert report["planners"] == {
        "cem": ["push", "recorded-goal", "reach"],
        "mppi": ["reach"],
        "grad": ["reach"],
    }
    assert report["budget"]["train_steps"] == 12 and report["budget"]["episodes"] == 20
    for name, row in report["models"].items():
        folder = out / "models" / name
        assert set(row) == {"preset", "params", "train", "quality", "control", "plan", "agent"}
        assert (folder / "data").resolve() == (out / "data").resolve()  # the same episodes for all
        ckpt = folder / "model" / "checkpoints" / "last.pt"
        saved = read(ckpt)
        assert saved["step"] == 12 and saved["config"]["state_head"] is True
        assert row["params"] == sum(p.numel() for p in make(name, **saved["config"]).parameters())
        metrics = [json.loads(line) for line in (folder / "model" / "metrics.jsonl").read_text().splitlines()]
        assert row["train"]["frames_per_s"] == statistics.median(m["frames_per_s"] for m in metrics)
        assert row["train"]["steps"] == 12
        # the training stage's own timing, as the demo's stage marker recorded it
        marker = float((folder / ".stages" / "train.done").read_text())
        assert row["train"]["seconds"] == pytest.approx(marker, abs=0.06) and marker > 0
        ev = _read(folder / "eval.json")
        assert row["quality"]["psnr"] == ev["psnr_mean"]
        assert row["quality"]["ssim_copy_last"] == ev["baseline"]["ssim_mean"]
        assert row["quality"]["bpp"] is None  # neither model has a likelihood
        # 12-frame episodes, 2 context frames: k = 10 is the longest measured, and is reported
        assert row["control"]["k"] == 10
        assert row["control"]["ee_error_cm"] == ev["control"]["per_k"]["10"]["ee_error_cm"]
        for planner, task, file in (
            ("cem", "push", "plan.json"),
            ("cem", "recorded-goal", "plan_recorded.json"),
            ("cem", "reach", "plan_reach.json"),
            ("mppi", "reach", "plan_reach_mppi.json"),
            ("grad", "reach", "plan_reach_grad.json"),
        ):
            plan = _read(folder / file)
            assert plan["model"]["planner"] == planner and plan["task"] == task
            got = row["plan"][planner][task]
            for key in ("success_rate", "successes", "episodes", "ci95", "ms_per_action"):
                assert got[key] == plan["model"][key], (name, planner, task, key)
            # random and the oracle run once per task: with the first model's CEM plans only
            assert (plan["oracle"] is not None) == (name == MODELS[0] and planner == "cem")
        agent = _read(folder / "agent_eval.json")
        assert row["agent"]["successes"] == agent["successes"] and row["agent"]["task"] == "reach"
        assert row["agent"]["episodes"] == 1
    for task, file in (
        ("push", "plan.json"),
        ("recorded-goal", "plan_recorded.json"),
        ("reach", "plan_reach.json"),
    ):
        base, first = report["baselines"][task], _read(out / "models" / MODELS[0] / file)
        assert base["from"] == MODELS[0]
        assert (
            base["oracle"]["successes"] == first["oracle"]["successes"] and base["oracle"]["population"] == 4
        )
        assert base["random"]["ci95"] == first["random"]["ci95"]


def test_table_is_printed_with_a_row_per_model_and_the_baselines(run):
    out, printed = run
    report = _read(out / "bench.json")
    lines = printed.splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"model", *MODELS, "*random*", "*oracle*"}
    for column in ("cem push", "cem recorded-goal", "cem reach", "mppi reach", "grad reach", "PPO reach"):
        assert column in rows["model"]
    assert "12 steps x batch 4" in printed  # the shared budget is stated
    first = report["models"][MODELS[0]]["plan"]["cem"]["push"]
    lo, hi = first["ci95"]
    ms = first["ms_per_action"]
    ms_text = f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"
    assert f"{first['successes']}/1 ({lo:.2f}-{hi:.2f}) {ms_text} ms" in rows[MODELS[0]]
    assert "bench.json" in lines[-1]


def test_rerun_skips_every_finished_stage_and_writes_the_same_json(run, capsys):
    out, _ = run
    before = (out / "bench.json").read_bytes()
    capsys.readouterr()
    assert bench(out) == 0
    printed = capsys.readouterr().out
    assert printed.count("done already") == 1 + len(MODELS) * len(MODEL_STAGES)
    assert (out / "bench.json").read_bytes() == before
    for name in MODELS:
        stages = sorted(p.name for p in (out / "models" / name / ".stages").iterdir())
        assert stages == sorted(f"{k}.done" for k in MODEL_STAGES)


def test_rerun_from_its_json_alone(run, capsys):
    out, _ = run
    before = (out / "bench.json").read_bytes()
    capsys.readouterr()
    assert main(["bench", "--config", str(out / "bench.json")]) == 0
    assert capsys.readouterr().out.count("done already") == 1 + len(MODELS) * len(MODEL_STAGES)
    assert (out / "bench.json").read_bytes() == before


def test_other_settings_in_the_same_folder_are_refused(run, capsys):
    out, _ = run
    assert bench(out, "--set=train_steps=13") == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("models", ["svg-lp,nope", "svg-lp,svg-lp", ","])
def test_bad_model_list_is_a_one_line_error_before_anything_is_written(models, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["bench", "--quick", "--out", str(out), "--models", models]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("worldmodel bench: error: --models") and "\n" not in err
    assert not out.exists()


def test_a_model_set_for_all_is_refused(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path / "x"), "--set", "model=vgan"]) == 2
    assert "--models" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_failing_model_is_reported_and_the_bench_goes_on(tmp_path, capsys):
    # elites >= population: `worldmodel plan` refuses, so the first plan stage of every model fails
    out = tmp_path / "out"
    assert bench(out, "--set=plan_args=--population 4 --elites 4 --max-steps 2", models=("svg-det",)) == 1
    report = _read(out / "bench.json")
    # CEM's push plan stops the demo pipeline; mppi and grad on reach still run (and fail alike)
    errors = report["errors"]["svg-det"]
    assert len(errors) == 3 and all(e.startswith("`worldmodel plan ") for e in errors)
    assert "--planner cem" in errors[0] and "--planner grad" in errors[2]
    row = report["models"]["svg-det"]
    assert row["quality"] is not None and row["plan"]["cem"]["push"] is None and row["agent"] is None
    assert "svg-det: failed:" in capsys.readouterr().out
    assert not (out / "models/svg-det/.stages/plan.done").exists()  # a rerun retries it


def test_every_model_fits_the_episodes_in_both_profiles(tmp_path):
    from worldmodel.cli.bench import Bench
    from worldmodel.cli.train import parse_sets
    from worldmodel.dynamics import build_config
    from worldmodel.dynamics.registry import builtin

    for profile in ("quick", "full"):
        b = Bench(profile, builtin(), {}, tmp_path / profile)
        assert not (tmp_path / profile).exists()  # building the configs writes nothing
        for name, c in b.configs.items():
            cfg = build_config(
                name, c.preset, image_size=c.image_size, state_head=True, **parse_sets(c.model_set)
            )
            assert cfg.seq_len <= c.episode_len, (profile, name)
            # the same data and budget for every model
            assert (c.episodes, c.train_steps, c.batch_size) == (
                b.shared.episodes,
                b.shared.train_steps,
                b.shared.batch_size,
            )
    assert Bench("full", builtin(), {}, tmp_path).planners["mppi"] == ("push", "recorded-goal", "reach")


# --- the figures' helpers, on hand-made reports ------------------------------------------------
def _plan(successes: int, episodes: int, ms: float, oracle: bool) -> dict:
    def agent(s: int) -> dict:
        lo, hi = wilson_interval(s, episodes)
        return {
            "success_rate": s / episodes,
            "successes": s,
            "episodes": episodes,
            "ci95": [lo, hi],
            "ms_per_action": ms,
        }

    return {
        "model": {**agent(successes), "population": 64},
        "oracle": agent(episodes) if oracle else None,
        "random": agent(0),
    }


def test_control_is_reported_at_ten_steps_or_the_nearest_measured_below():
    from worldmodel.bench import control

    def report(ks):
        per_k = {str(k): {"ee_error_cm": k / 10, "ee_static_cm": k, "target_error_cm": 2 * k} for k in ks}
        return {"control": {"per_k": per_k, "rank_k": max(ks), "ranking": {"learned": {"rank_score": 0.75}}}}

    assert control(report([5, 10, 20]))["ee_error_cm"] == 1.0
    got = control(report([5, 8]))
    assert (got["k"], got["target_error_cm"], got["target_static_cm"]) == (8, 16, None)
    assert control(report([12, 20]))["k"] == 12  # none at or below 10: the smallest
    assert control(report([5]))["rank_score"] == 0.75 and control({"psnr_mean": 1}) is None


def test_frames_per_s_is_the_median_of_the_logged_windows():
    from worldmodel.bench import frames_per_s

    assert (
        frames_per_s([{"frames_per_s": 1.0}, {"loss": 2.0}, {"frames_per_s": 300.0}, {"frames_per_s": 5.0}])
        == 5.0
    )
    assert frames_per_s([{"loss": 1.0}]) is None


def test_baselines_come_from_the_first_report_that_ran_the_oracle():
    from worldmodel.bench import baselines

    got = baselines(
        {
            "push": [("a", _plan(1, 10, 5.0, oracle=False)), ("b", _plan(2, 10, 5.0, oracle=True))],
            "reach": [("a", None)],
        }
    )
    assert got["reach"] is None
    assert got["push"]["from"] == "b" and got["push"]["oracle"]["successes"] == 10
    assert got["push"]["random"]["successes"] == 0


def test_table_cells_are_successes_interval_and_ms():
    from worldmodel.bench import model_row, table

    plans = {"cem": {"push": _plan(3, 10, 41.2, oracle=True)}}
    plans["cem"]["push"]["oracle"]["ms_per_action"] = 4.26  # under 10 ms: one decimal
    row = model_row(
        preset="tiny",
        params=1_234_567,
        train_steps=5,
        batch_size=2,
        train_seconds=12.34,
        metrics_rows=[{"frames_per_s": 99.6}],
        eval_report=None,
        plans=plans,
        agent_report=None,
    )
    assert row["train"]["seconds"] == 12.3 and row["plan"]["cem"]["push"]["population"] == 64
    budget = {
        "episodes": 4,
        "episode_len": 12,
        "image_size": 16,
        "train_steps": 5,
        "batch_size": 2,
        "preset": "tiny",
    }
    budget.update(eval_sequences=1, eval_samples=2, plan_episodes=10, plan_args=["--envs", "10"])
    budget.update(agent_algo="ppo", agent_timesteps=64, agent_task="reach", agent_eval_episodes=1)
    text = table(
        {
            "budget": budget,
            "planners": {"cem": ["push"]},
            "models": {"m": row},
            "baselines": {
                "push": {"random": plans["cem"]["push"]["random"], "oracle": plans["cem"]["push"]["oracle"]}
            },
        }
    )
    lines = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert lines["m"][:3] == ["1.23 M", "12", "100"]
    assert lines["m"][-2:] == ["3/10 (0.11-0.60) 41 ms", "-"]  # Wilson (0.108, 0.603); no agent
    assert lines["*random*"][-2] == "0/10 (0.00-0.28)"  # random's ms per action is not a planner's
    assert lines["*oracle*"][-2] == "10/10 (0.72-1.00) 4.3 ms"


def test_ctrl_c_in_a_stage_stops_the_bench(tmp_path, monkeypatch):
    # Ctrl-C inside a stage stops the bench with status 130; it must not take it for a failed
    # stage and go on
    import worldmodel.planning.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(worldmodel.planning.run, "plan", interrupted)
    out = tmp_path / "out"
    assert bench(out, models=("svg-det",)) == 130
    stages = sorted(p.name for p in (out / "models/svg-det/.stages").iterdir())
    assert stages == ["collect.done", "eval.done", "train.done"]
    assert not (out / "bench.json").exists()
