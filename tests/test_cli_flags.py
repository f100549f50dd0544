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
