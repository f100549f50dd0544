"""Bad input to every command: exit status 2, one line on stderr naming the flag, nothing written.

A table of bad values per flag, run through the same entry points as the console scripts
(in-process, so an unexpected exception fails the test instead of hiding in a subprocess).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dream_fixtures import noisy_tiny_svg
from test_data_shards import fake_collect

from worldmodel import dynamics
from worldmodel.cli import main
from worldmodel.data import open_dataset
from worldmodel.errors import DataError


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    fake_collect(root / "data", episodes=20, seq_len=30)
    ckpt = dynamics.save(noisy_tiny_svg(image_size=16), root / "run" / "last.pt")
    return {"data": root / "data", "ckpt": ckpt, "root": root}


# (command words, bad flags, what the one line must say); DATA / CKPT / OUT are filled in
TRAIN = ["train", "svg-lp", "--preset", "tiny", "--data", "DATA", "--out", "OUT"]
BAD: list[tuple[list[str], list[str], str]] = [
    (TRAIN, ["--steps", "0"], "argument --steps"),
    (TRAIN, ["--batch-size", "0"], "argument --batch-size"),
    (TRAIN, ["--batch-size", "-3"], "argument --batch-size"),
    (TRAIN, ["--batch-size", "1000000000"], "--batch-size"),
    (TRAIN, ["--lr", "-1"], "argument --lr"),
    (TRAIN, ["--lr", "nan"], "argument --lr"),
    (TRAIN, ["--lr", "0"], "argument --lr"),
    (TRAIN, ["--grad-clip", "-1"], "argument --grad-clip"),
    (TRAIN, ["--grad-clip", "0"], "argument --grad-clip"),
    (TRAIN, ["--log-every", "0"], "argument --log-every"),
    (TRAIN, ["--ckpt-every", "0"], "argument --ckpt-every"),
    (TRAIN, ["--seed", "-1"], "argument --seed"),
    (TRAIN, ["--steps", "ten"], "argument --steps"),
    (TRAIN, ["--set", "z_dim=abc"], "z_dim"),
    (TRAIN, ["--set", "betas=1"], "betas"),
    (TRAIN, ["--set", "beta=nan"], "beta"),
    (TRAIN, ["--set", "lr=-1"], "lr"),
    (TRAIN, ["--set", "n_past=0"], "n_past"),
    (TRAIN, ["--set", "nope=1"], "nope"),
    (TRAIN, ["--set", "z_dim"], "--set"),
    (["collect", "--out", "OUT"], ["--episodes", "0"], "argument --episodes"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--seq-len", "1"], "argument --seq-len"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--push-probability", "1.5"], "--push-probability"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--push-probability", "nan"], "--push-probability"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--image-size", "0"], "argument --image-size"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--workers", "-1"], "argument --workers"),
    (["collect", "--out", "OUT", "--episodes", "2"], ["--num-objects", "9"], "num_objects"),
    (["eval", "CKPT", "--data", "DATA"], ["--samples", "0"], "argument --samples"),
    (["eval", "CKPT", "--data", "DATA"], ["--temperature", "nan"], "argument --temperature"),
    (["eval", "CKPT", "--data", "DATA"], ["--temperature", "-1"], "argument --temperature"),
    (["eval", "CKPT", "--data", "DATA"], ["--n-past", "0"], "argument --n-past"),
    (["eval", "CKPT", "--data", "DATA"], ["--max-rollouts", "0"], "argument --max-rollouts"),
    (["eval", "CKPT", "--data", "DATA"], ["--control-episodes", "1"], "argument --control-episodes"),
    (["eval", "CKPT", "--data", "DATA"], ["--control-ks", "5,x"], "--control-ks"),
    (["plan", "CKPT"], ["--episodes", "0"], "argument --episodes"),
    (["plan", "CKPT"], ["--population", "1"], "argument --population"),
    (["plan", "CKPT"], ["--elites", "0"], "argument --elites"),
    (["plan", "CKPT"], ["--population", "16", "--elites", "16"], "--elites (16) must be < --population (16)"),
    (["plan", "CKPT"], ["--horizon", "0"], "argument --horizon"),
    (["plan", "CKPT"], ["--iterations", "-2"], "argument --iterations"),
    (["plan", "CKPT"], ["--temperature", "nan"], "argument --temperature"),
    (["plan", "CKPT"], ["--reach-weight", "nan"], "argument --reach-weight"),
    (["plan", "CKPT"], ["--learned-reach-weight", "-1"], "argument --learned-reach-weight"),
    (["plan", "CKPT"], ["--oracle-budget", "-1"], "argument --oracle-budget"),
    (["plan", "CKPT"], ["--oracle-budget", "1"], "--oracle-budget"),
    (["plan", "CKPT"], ["--envs", "0"], "argument --envs"),
    (["plan", "CKPT"], ["--episodes", "3", "--envs", "2"], "--envs"),
    (["plan", "CKPT"], ["--threads", "0"], "argument --threads"),
    (["plan", "CKPT"], ["--recorded-k", "101"], "argument --recorded-k"),
    (["plan", "CKPT"], ["--max-steps", "0"], "argument --max-steps"),
    (["plan", "CKPT"], ["--task", "juggle"], "argument --task"),
    (["show", "DATA", "--out", "OUT.gif"], ["--num", "0"], "argument --num"),
    (["show", "DATA", "--out", "OUT.gif"], ["--fps", "0"], "argument --fps"),
    (["train-head", "CKPT", "--data", "DATA"], ["--steps", "0"], "argument --steps"),
    (["train-head", "CKPT", "--data", "DATA"], ["--lr", "nan"], "argument --lr"),
    (["train-head", "CKPT", "--data", "DATA"], ["--batch-size", "0"], "argument --batch-size"),
    (["demo", "--out", "OUT"], ["--model", "bogus"], "--model"),
    (["demo", "--out", "OUT"], ["--set", "episodes=0"], "episodes"),
    (["bogus"], [], "COMMAND"),
    (TRAIN, ["--device", "nonsense"], "device 'nonsense'"),
    (["eval", "CKPT", "--data", "DATA"], ["--device", "tpu"], "device 'tpu'"),
]
if not torch.cuda.is_available():  # a CPU-only build asked for a GPU
    BAD += [
        (TRAIN, ["--device", "cuda"], "sees no CUDA GPU"),
        (["plan", "CKPT"], ["--device", "cuda:0"], "CUDA"),
    ]


def _fill(words: list[str], files: dict[str, Path], out: Path) -> list[str]:
    table = {"DATA": str(files["data"]), "CKPT": str(files["ckpt"]), "OUT": str(out), "OUT.gif": f"{out}.gif"}
    return [table.get(w, w) for w in words]


@pytest.mark.parametrize(("command", "flags", "names"), BAD, ids=[" ".join(c[:1] + f) for c, f, _ in BAD])
def test_bad_flag_is_one_line_exit_2_and_writes_nothing(files, tmp_path, capsys, command, flags, names):
    out = tmp_path / "out"
    argv = _fill(command, files, out) + flags
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "error:" in err[0] and names in err[0], err
    assert not out.exists() and not Path(f"{out}.gif").exists()


def test_manifest_split_without_its_keys_is_named(tmp_path):
    fake_collect(tmp_path / "d", episodes=4, seq_len=6)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["split"] = {"rule": "every 20th"}
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: inconsistent manifest: split needs"):
        open_dataset(tmp_path / "d", split="train", seq_len=4)


def test_manifest_arrays_that_contradict_the_records_are_named(tmp_path):
    fake_collect(tmp_path / "d", episodes=4, seq_len=6)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["arrays"]["actions"] = ["<f4", [6, 5]]  # the records hold (6, 4)
    path.write_text(json.dumps(manifest))
    ds = open_dataset(tmp_path / "d", split="train", seq_len=4)
    with pytest.raises(DataError, match=r"shard-00000\.wms episode 0: array 'actions' is <f4 \[6, 4\]"):
        ds[0]


def test_eval_reports_before_side_files_and_writes_where_it_can(files, tmp_path, capsys, monkeypatch):
    import worldmodel.cli.evaluate as cli_eval

    args = ["eval", str(files["ckpt"]), "--data", str(files["data"]), "--samples", "2", "--n-future", "4"]
    args += ["--device", "cpu", "--no-control"]
    report = tmp_path / "report.json"

    def full_disk(path, *a, **k):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("worldmodel.video.write_video", full_disk)
    assert main([*args, "--json", str(report)]) == 2  # the video failed ...
    captured = capsys.readouterr()
    assert "PSNR" in captured.out and "No space left" in captured.err  # ... after the scores were out
    assert "psnr_mean" in json.loads(report.read_text())
    monkeypatch.undo()

    # a run folder the user cannot write: the default video goes to the current folder instead
    run = files["ckpt"].parent
    real_access = cli_eval.os.access
    monkeypatch.setattr(cli_eval.os, "access", lambda p, mode: Path(p) != run and real_access(p, mode))
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    assert (tmp_path / "last_eval.gif").is_file() and not (run / "last_eval.gif").exists()


def test_checkpoint_whose_format_is_not_a_number_is_named(files, tmp_path, capsys):
    ckpt = torch.load(files["ckpt"], weights_only=True)
    ckpt["format"] = "1"
    torch.save(ckpt, tmp_path / "odd.pt")
    assert main(["plan", str(tmp_path / "odd.pt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "odd.pt: not a worldmodel checkpoint (format '1' is not a number)" in err[0]
