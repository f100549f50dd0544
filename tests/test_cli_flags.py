"""The flags many commands share are declared once (``add_common_flags``) and mean the same
everywhere."""

from __future__ import annotations

import pytest
import torch

from worldmodel.cli import build_parser, main
from worldmodel.cli.flags import DEVICE_HELP, add_common_flags, nonneg_int, positive_int


def _options(parser) -> dict[str, object]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


COMMANDS = ["collect", "train", "plan", "online", "eval", "train-head", "bench", "show"]


@pytest.mark.parametrize("command", COMMANDS)
def test_shared_flags_are_declared_alike(command):
    flags = _options(build_parser().commands[command])
    if "--seed" in flags:
        assert flags["--seed"].type is nonneg_int and flags["--seed"].help.startswith("seed of ")
    if "--device" in flags:
        assert flags["--device"].help.startswith(DEVICE_HELP)
    if "--threads" in flags:
        assert flags["--threads"].type is positive_int
    if "--json" in flags:
        assert flags["--json"].metavar == "FILE" and flags["--json"].help.startswith("write ")


def test_common_flags_help_names_what_they_do():
    import argparse

    p = argparse.ArgumentParser()
    add_common_flags(p, seed="the episodes", device="for the model", threads=True, json="the scores")
    flags = _options(p)
    assert flags["--seed"].help == "seed of the episodes (default 0)"
    assert flags["--device"].help == f"{DEVICE_HELP}, for the model (default auto)"
    assert flags["--json"].help == "write the scores as JSON"
    assert p.parse_args(["--threads", "3"]).threads == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--seed", "-1"])


def test_threads_are_applied_before_the_command_runs(tmp_path):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:  # the command then fails on its missing checkpoint, after the threads were set
        assert main(["plan", str(tmp_path / "missing.pt"), "--threads", str(want)]) == 2
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


JOBS = {  # command: (its least argv, job class, the fields its run() passes itself)
    "plan": (["ckpt"], "worldmodel.planning.run:PlanJob", {"record"}),
    "online": (["--data", "d", "--out", "o"], "worldmodel.training.online:OnlineConfig", {"model_set"}),
    "collect": (["--out", "o", "--episodes", "1"], "worldmodel.envs.collect:CollectConfig", set()),
    "eval": (
        ["ckpt", "--data", "d"],
        "worldmodel.training.eval_job:EvalJob",
        {"control_ks", "video", "progress"},
    ),
    "train-head": (["ckpt", "--data", "d"], "worldmodel.training.head_job:HeadJob", {"progress"}),
}


@pytest.mark.parametrize("command", JOBS)
def test_every_job_field_has_a_flag_or_is_passed(command):
    """``config_from_args`` leaves a field without a flag of its name at its default: a renamed flag
    must not silently stop reaching its job."""
    import dataclasses
    import importlib

    argv, job, passed = JOBS[command]
    module, name = job.split(":")
    cls = getattr(importlib.import_module(module), name)
    dests = set(vars(build_parser().parse_args([command, *argv])))
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    assert fields - dests - passed == set()
