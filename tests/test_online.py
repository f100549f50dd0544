"""``worldmodel online``: the dataset grows by whole new shards (finished ones untouched), the
recorded episodes replay exactly in the sim, the model's step advances, the rows add up, a run
killed at the worst moments resumes without duplicating or losing an episode, bad flags are one
line. Tiny settings: 16-px frames, 8-step episodes, a few planner candidates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.cli import main
from worldmodel.data import open_dataset
from worldmodel.data import shards as sh
from worldmodel.dynamics.checkpoint import read
from worldmodel.errors import DataError

TINY = ["--initial-steps", "1", "--train-steps", "1", "--batch-size", "2", "--episodes-per-iter", "2"]
TINY += ["--envs", "2", "--eval-episodes", "2", "--max-steps", "3", "--population", "6", "--elites", "2"]
TINY += ["--horizon", "2", "--plan-iterations", "1", "--task", "reach", "--device", "cpu", "--no-progress"]
SEQ = 8


def cli(*args) -> int:
    return main([str(a) for a in args])


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: sh.file_sha256(p) for p in sorted(folder.glob("shard-*.wms"))}


@pytest.fixture(scope="module")
def initial(tmp_path_factory) -> Path:
    """Four 8-step episodes in shards of 3 and 1: the appends follow a partly filled shard."""
    from worldmodel.envs.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("online") / "data0"
    collect(CollectConfig(out=out, episodes=4, seq_len=SEQ, image_size=16, episodes_per_shard=3, workers=0))
    return out


@pytest.fixture(scope="module")
def loop(initial, one_thread_module) -> tuple[Path, dict, dict]:
    before = (_sha(initial), (initial / "manifest.json").read_bytes())
    out = initial.parent / "run"
    assert cli("online", "--data", initial, "--out", out, "--iterations", "2", *TINY) == 0
    return out, before[0], {"manifest": before[1]}


@pytest.fixture(scope="module")
def one_thread_module():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Replay:
    """Replays recorded actions through ``rollout`` (the collection's recorder)."""

    pushing = False

    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.t = actions, 0

    def reset(self, info: dict) -> None:
        self.t = 0

    def __call__(self, info: dict) -> np.ndarray:
        self.t += 1
        return self.actions[self.t - 1]


def test_loop_appends_shards_and_leaves_finished_ones_alone(loop, initial):
    out, sha_before, before = loop
    assert _sha(initial) == sha_before  # the initial folder: not a byte changed
    assert (initial / "manifest.json").read_bytes() == before["manifest"]
    original = json.loads(before["manifest"])
    manifest = sh.load_manifest(out / "data")
    assert manifest["layout"] == "appended"
    assert (manifest["episodes"], manifest["num_shards"]) == (4 + 2 * 2, 2 + 2)
    assert manifest["shards"][:2] == original["shards"]  # the finished shards' entries, unchanged
    grown = _sha(out / "data")
    assert {k: grown[k] for k in sha_before} == sha_before
    for entry in manifest["shards"]:
        assert grown[entry["file"]] == entry["sha256"]
    online = manifest["shards"][2:]
    assert [(e["first_episode"], e["episodes"], e["online"]["iteration"]) for e in online] == [
        (4, 2, 1),
        (6, 2, 2),
    ]
    whole = open_dataset(out / "data", split="all", seq_len=SEQ, random_offset=False)
    assert len(whole) == 8 and [whole.episode_number(i) for i in range(8)] == list(range(8))
    for i in range(8):
        assert tuple(whole[i]["frames"].shape) == (SEQ, 16, 16, 3)


def test_new_episodes_replay_exactly_in_the_sim(loop):
    """Every stored online episode is the env trajectory of its seed and recorded actions."""
    from worldmodel.envs.policy import rollout
    from worldmodel.envs.push_table import PushTableEnv

    out = loop[0]
    manifest = sh.load_manifest(out / "data")
    env = PushTableEnv(image_size=16, task="reach")
    try:
        for entry in manifest["shards"][2:]:
            reader = sh.ShardReader(out / "data", entry)
            for k, seed in enumerate(entry["online"]["env_seeds"]):
                stored = reader.read(k)
                replay = rollout(env, Replay(stored["actions"]), SEQ, seed)
                assert set(stored) == set(replay)
                for name, value in replay.items():
                    np.testing.assert_array_equal(stored[name].reshape(value.shape), value, err_msg=name)
                assert not stored["pushed"]
            reader.close()
    finally:
        env.close()


def test_model_steps_and_rows_add_up(loop):
    out = loop[0]
    assert read(out / "model" / "checkpoints" / "last.pt")["step"] == 1 + 2 * 1
    marks = [json.loads((out / "iterations" / f"iter-{i:04d}-train.json").read_text()) for i in range(3)]
    assert [m["step"] for m in marks] == [1, 2, 3]
    summary = json.loads((out / "online.json").read_text())
    rows = summary["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert [r["episodes"] for r in rows] == [4, 6, 8]
    assert [r["real_steps"] for r in rows] == [SEQ * 4, SEQ * 6, SEQ * 8]
    assert [r["online_episodes"] for r in rows] == [0, 2, 4]
    assert [r["train_step"] for r in rows] == [1, 2, 3]
    assert rows[0]["collect_success_rate"] is None and rows[1]["collect_success_rate"] is not None
    assert all("prediction_check" not in r for r in rows)  # reach: no object to read
    for r in rows:
        assert r["eval_episodes"] == 2 and r["successes"] == round(2 * r["success_rate"])
        assert r["seconds"] == pytest.approx(
            r["seconds_collect"] + r["seconds_train"] + r["seconds_eval"], abs=2e-3
        )
    assert summary["initial_real_steps"] == SEQ * 4 and summary["ppo"] is None
    assert (
        "--timesteps 64 --eval-every 16" in summary["ppo_command"]
        and "--task reach" in summary["ppo_command"]
    )
    page = (out / "online.html").read_text()
    assert page.count("<polyline") >= 1 and "agents.train_real" in page


def test_finished_run_again_does_nothing_and_reads_ppo(loop, tmp_path, capsys):
    out = loop[0]
    manifest = (out / "data" / "manifest.json").read_bytes()
    ckpt = sh.file_sha256(out / "model" / "checkpoints" / "last.pt")
    ppo = tmp_path / "ppo"
    ppo.mkdir()
    (ppo / "config.json").write_text(json.dumps({"algo": "ppo", "env": "real", "task": "reach"}))
    rows = [(20, 0.1), (40, 0.5), (60, 0.25)]
    lines = [
        json.dumps({"timesteps": t, "real_success_rate": r, "episodes": 4, "real_final_distance": 0.1})
        for t, r in rows
    ]
    (ppo / "eval.jsonl").write_text("\n".join(lines) + '\n{"timesteps": 8')  # a torn last line
    assert (
        cli(
            "online",
            "--data",
            loop[0].parent / "data0",
            "--out",
            out,
            "--iterations",
            "2",
            "--ppo-run",
            ppo,
            *TINY,
        )
        == 0
    )
    assert (out / "data" / "manifest.json").read_bytes() == manifest
    assert sh.file_sha256(out / "model" / "checkpoints" / "last.pt") == ckpt
    summary = json.loads((out / "online.json").read_text())
    assert [p["timesteps"] for p in summary["ppo"]["rows"]] == [20, 40, 60]
    # the baseline at the largest evaluated budget <= each row's real steps (32, 48, 64)
    assert [(r["ppo_timesteps"], r["ppo_success_rate"]) for r in summary["rows"]] == [
        (20, 0.1),
        (40, 0.5),
        (60, 0.25),
    ]
    assert "PPO (model-free)" in (out / "online.html").read_text()
    assert "real steps" in capsys.readouterr().out


_KILLER = """
import os, signal, sys
sys.argv = ["worldmodel"] + sys.argv[1:]
point = os.environ["KILL_AT"]
if point == "manifest":  # the new shard renamed into place, the manifest not yet
    import worldmodel.data.shards as sh
    sh.write_json_atomic = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
else:  # the episodes committed, fine-tuning about to start
    from worldmodel.training.trainer import Trainer
    Trainer.fit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from worldmodel.cli import main
sys.exit(main())
"""


def test_resume_after_kill_never_duplicates_or_loses_episodes(loop, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(loop[0], out)
    data0 = loop[0].parent / "data0"
    args = ["online", "--data", data0, "--out", out, "--iterations", "3", *TINY]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}

    def killed(point: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", _KILLER, *map(str, args[0:])],
            env={**env, "KILL_AT": point},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == -9, proc.stderr[-2000:]

    killed("manifest")
    assert (out / "data" / "shard-00004.wms").is_file()  # written, but the manifest does not list it
    assert sh.load_manifest(out / "data")["episodes"] == 8
    killed("train")
    manifest = sh.load_manifest(out / "data")
    assert manifest["episodes"] == 10 and manifest["shards"][-1]["online"]["iteration"] == 3
    committed = manifest["shards"][-1]
    assert sh.file_sha256(out / "data" / "shard-00004.wms") == committed["sha256"]
    assert read(out / "model" / "checkpoints" / "last.pt")["step"] == 3  # not trained yet
    assert cli(*args) == 0
    manifest = sh.load_manifest(out / "data")
    assert manifest["episodes"] == 10 and manifest["num_shards"] == 5
    assert manifest["shards"][-1] == committed  # not collected again
    assert read(out / "model" / "checkpoints" / "last.pt")["step"] == 4
    rows = json.loads((out / "online.json").read_text())["rows"]
    assert [r["episodes"] for r in rows] == [4, 6, 8, 10]
    assert rows[3]["real_steps"] == 10 * SEQ
    assert not list((out / "data").glob("*.tmp-*"))


def test_a_checkpoint_starts_the_loop_and_is_made_resumable(initial, tmp_path, one_thread_module):
    from worldmodel import dynamics

    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny", image_size=16, state_head=True)
    ckpt = dynamics.save(model, tmp_path / "m.pt", step=7)  # weights only: no optimiser state
    out = tmp_path / "run"
    assert (
        cli("online", "--data", initial, "--out", out, "--checkpoint", ckpt, "--iterations", "0", *TINY) == 0
    )
    saved = read(out / "model" / "checkpoints" / "last.pt")
    assert saved["step"] == 7 and set(saved["optimizers"]) == set(model.optimizers())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(saved["weights"][name], value, rtol=0, atol=0)
    rows = json.loads((out / "online.json").read_text())["rows"]
    assert [(r["iteration"], r["train_step"], r["train_steps"], r["real_steps"]) for r in rows] == [
        (0, 7, 0, 32)
    ]


def test_bad_flags_are_one_line_errors(initial, tmp_path, capsys):
    from worldmodel import dynamics

    out = tmp_path / "run"

    def error(*args) -> str:
        assert cli("online", "--data", initial, "--out", out, *TINY, *args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "multiple of envs" in error("--episodes-per-iter", "3")
    assert "elites" in error("--population", "2")
    with pytest.raises(SystemExit) as stop:
        cli("online", "--data", initial, "--out", out, "--explore-noise", "-1")
    assert stop.value.code == 2 and "--explore-noise" in capsys.readouterr().err
    no_head = dynamics.save(dynamics.make("svg-lp", preset="tiny", image_size=16), tmp_path / "h.pt")
    assert "state head" in error("--checkpoint", no_head)
    wrong = dynamics.make("svg-lp", preset="tiny", image_size=32, state_head=True)
    assert "32-px" in error("--checkpoint", dynamics.save(wrong, tmp_path / "w.pt"))
    assert "manifest" in error("--data", tmp_path / "nowhere")
    assert "agents.train_real" in error("--ppo-run", tmp_path)
    assert not (out / "data").exists()  # nothing was built for a run that was refused
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in error("--out", tmp_path / "full")


def test_resume_with_other_settings_is_refused(loop, capsys):
    out = loop[0]
    args = ["online", "--data", out.parent / "data0", "--out", out, "--iterations", "2", *TINY]
    assert cli(*args, "--explore-noise", "0.1") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "explore_noise" in err and len(err.strip().splitlines()) == 1


def test_append_shard_checks_and_layout(initial, tmp_path):
    from worldmodel.envs.collect import append_episodes

    data = tmp_path / "data"
    shutil.copytree(initial, data)
    reader = sh.ShardReader(data, sh.load_manifest(data)["shards"][0])
    episode = {k: v for k, v in reader.read(0).items()}
    reader.close()
    entry = append_episodes(data, [(11, episode), (12, episode)], online={"note": "test"})
    assert (entry["index"], entry["first_episode"], entry["episodes"], entry["pushed"]) == (
        2,
        4,
        2,
        2 * int(episode["pushed"].item()),
    )
    ds = open_dataset(data, split="all", seq_len=SEQ, random_offset=False)
    np.testing.assert_array_equal(ds[5]["frames"].numpy(), episode["frames"])
    bad = dict(episode, frames=episode["frames"][:, :8])
    with pytest.raises((DataError, RuntimeError), match="frames"):
        append_episodes(data, [(1, bad)])
    assert sh.load_manifest(data)["episodes"] == 6 and not list(data.glob("*.tmp-*"))
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"][2]["first_episode"] = 5  # a gap
    with pytest.raises(DataError, match=r"shard-00002\.wms"):
        sh.check_manifest(manifest, data / "manifest.json")
    manifest["shards"][2]["first_episode"] = 4
    manifest["layout"] = "spiral"
    with pytest.raises(DataError, match="layout"):
        sh.check_manifest(manifest, data / "manifest.json")


def test_noisy_mpc_executes_and_remembers_the_noisy_action(one_thread_module):
    from worldmodel import dynamics
    from worldmodel.planning import CEM, CEMConfig, LearnedReward, MPCAgent, Task
    from worldmodel.training.online import NoisyMPC

    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny", image_size=16, state_head=True).eval()

    def agent(cls, **kw):
        planner = CEM(CEMConfig.cem(population=6, elites=2, horizon=2, iterations=1), 4)
        made = cls(model, planner, LearnedReward(model.state_head, task="reach"), seed=3, **kw)
        task = Task(goal_pos=torch.tensor([[0.1, 0.0, 0.05]]), ee_start=torch.zeros(1, 3))
        made.set_task(0, task)
        return made

    obs = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    plain, _ = agent(MPCAgent).predict(obs, episode_start=np.array([True]))
    noisy_agent = agent(NoisyMPC, noise=0.5, noise_seed=5)
    noisy, _ = noisy_agent.predict(obs, episode_start=np.array([True]), deterministic=False)
    expected = np.clip(plain + 0.5 * np.random.default_rng(5).standard_normal(plain.shape), -1, 1)
    np.testing.assert_allclose(noisy, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(noisy_agent._slots[0].pending, noisy[0])  # the next context's action
    same, _ = agent(NoisyMPC, noise=0.5).predict(obs, episode_start=np.array([True]), deterministic=True)
    np.testing.assert_array_equal(same, plain)


def test_a_run_from_before_a_setting_existed_resumes_with_its_default(loop, capsys):
    out = loop[0]
    path = out / "settings.json"
    original = path.read_text()
    try:
        older = json.loads(original)
        assert older.pop("push_offset") == 0.0
        path.write_text(json.dumps(older))
        args = ["online", "--data", out.parent / "data0", "--out", out, "--iterations", "2", *TINY]
        assert cli(*args) == 0  # finished: nothing to do, and no complaint about push_offset
        assert cli(*args, "--push-offset", "0.05") == 2
        assert "push_offset: 0.0 vs 0.05" in capsys.readouterr().err
    finally:
        path.write_text(original)


def test_object_tasks_check_the_models_predictions_at_every_evaluation(initial, tmp_path, one_thread_module):
    out = tmp_path / "push"
    args = [a if a != "reach" else "push" for a in TINY]  # replan_every 1: a plan at every step
    assert cli("online", "--data", initial, "--out", out, "--iterations", "0", *args) == 0
    (row,) = json.loads((out / "online.json").read_text())["rows"]
    check = row["prediction_check"]  # 2 episodes of 3 steps, a plan at each: 2 pairs each
    assert check["pairs"] == 2 * 2 and check["real_move"] == pytest.approx(check["stays_put"])
