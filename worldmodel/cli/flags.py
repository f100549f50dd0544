"""Command-line numbers checked where they are parsed: one shared set of ``argparse`` types.

Every numeric flag of ``worldmodel`` and of the ``agents`` scripts uses one of these as its
``type=``, so a value that would make a run silently wrong (a negative learning rate, ``nan``, a
zero step count) is refused before anything runs or is written, with one line naming the flag::

    worldmodel train: error: argument --lr: must be a finite number > 0, got 'nan'

``OneLineParser`` is the ``ArgumentParser`` whose errors are that one line (argparse's default
also prints the whole usage block first). Sub-parsers inherit it. ``add_common_flags`` declares the
flags many commands share (``--seed``, ``--temperature``, ``--device``, ``--threads``, ``--json``,
``--video``, ``--set``) the same way everywhere, ``add_task_flags`` the task's and
``add_planner_flags`` the MPC planner's; each command says only what its help texts say (what its
seed seeds, what its JSON holds). ``config_from_args`` turns the parsed flags into the job
dataclass a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

from worldmodel.numbers import (
    finite_float,
    float_in,
    int_at_least,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
)

__all__ = [
    "CONFIG_HELP",
    "DEVICE_HELP",
    "OneLineParser",
    "add_common_flags",
    "add_planner_flags",
    "add_task_flags",
    "apply_settings",
    "config_from_args",
    "config_path",
    "finite_float",
    "float_in",
    "int_at_least",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "probability",
    "read_settings",
    "settings_of",
]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are ``PROG: error: MESSAGE`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------- flags that many commands share
DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def add_common_flags(
    p: argparse.ArgumentParser,
    *,
    seed: str | None = None,
    seed_default: int | None = 0,
    temperature: str | None = None,
    device: str | None = None,
    device_default: str | None = "auto",
    threads: bool = False,
    json: str | None = None,
    video: str | None = None,
    sets: str | None = None,
    sets_metavar: str = "KEY=VALUE",
    unset: str | None = None,
) -> None:
    """Declare the shared flags a command has, each given by the text its help shows, in this order.

    ``seed``: what ``--seed`` seeds ("the episodes and the planners"); ``temperature``: the help of
    ``--temperature`` (the model's sampling temperature, >= 0, default 1); ``device``: what runs on
    ``--device`` ("" for nothing more to say); ``threads``: add ``--threads`` (torch CPU threads,
    applied by the ``worldmodel`` entry point before the command runs); ``json``: what the
    ``--json FILE`` report holds; ``video``: the help of ``--video FILE``; ``sets``: the help of the
    repeatable ``--set`` (``sets_metavar``, a list of overrides). Flags left ``None`` are not added.
    ``unset``: what a default of ``None`` means, shown in the help (default "none" for ``--seed``,
    "the run's" for ``--device``)."""
    if seed is not None:
        default = (unset or "none") if seed_default is None else seed_default
        p.add_argument(
            "--seed", type=nonneg_int, default=seed_default, help=f"seed of {seed} (default {default})"
        )
    if temperature is not None:
        p.add_argument("--temperature", type=nonneg_float, default=1.0, help=temperature)
    if device is not None:
        default = device_default or unset or "the run's"
        where = f", {device}" if device else ""
        p.add_argument("--device", default=device_default, help=f"{DEVICE_HELP}{where} (default {default})")
    if threads:
        p.add_argument(
            "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)"
        )
    if json is not None:
        p.add_argument("--json", default=None, metavar="FILE", help=f"write {json} as JSON")
    if video is not None:
        p.add_argument("--video", default=None, metavar="FILE", help=video)
    if sets is not None:
        p.add_argument("--set", action="append", default=[], metavar=sets_metavar, help=sets)


def add_task_flags(
    p: argparse.ArgumentParser,
    *,
    task: str | None = None,
    recorded_k: str | None = None,
    reach_weight: str | None = None,
    push_offset: str | None = None,
    max_steps: str | None = None,
) -> None:
    """Declare the task's flags a command has, with the types and defaults of ``TaskSpec``, each
    given by the text its help shows: ``--task`` (default push), ``--recorded-k``,
    ``--reach-weight``, ``--push-offset`` and ``--max-steps`` (``None``: the task's budget), in
    that order. Flags left ``None`` are not added."""
    if task is not None:
        from worldmodel.envs.task import TASKS  # here: it loads numpy, which most commands do not need

        p.add_argument("--task", choices=TASKS, default="push", help=task)
    if recorded_k is not None:
        p.add_argument("--recorded-k", type=int_at_least(1, 100), default=20, help=recorded_k)
    if reach_weight is not None:
        p.add_argument("--reach-weight", type=nonneg_float, default=0.5, help=reach_weight)
    if push_offset is not None:
        p.add_argument("--push-offset", type=float_in(0.0, 0.2), default=0.0, help=push_offset)
    if max_steps is not None:
        p.add_argument("--max-steps", type=positive_int, default=None, help=max_steps)


def add_planner_flags(
    p: argparse.ArgumentParser,
    *,
    planners: tuple[str, ...],
    planner: str,
    population: str,
    elites: str,
    iterations: str,
    iterations_flag: str = "--iterations",
) -> None:
    """Declare the MPC planner's flags, with the types and defaults of the jobs they fill
    (``PlanJob``, ``OnlineConfig``): ``--planner`` (one of ``planners``), ``--population``,
    ``--elites``, ``--horizon``, the refits per plan (``iterations_flag``) and ``--replan-every``.
    ``planner``, ``population``, ``elites`` and ``iterations`` are the help texts of the command."""
    p.add_argument("--planner", choices=planners, default="cem", help=planner)
    p.add_argument("--population", type=int_at_least(2), default=400, help=population)
    p.add_argument("--elites", type=positive_int, default=None, help=elites)
    p.add_argument("--horizon", type=positive_int, default=10, help="planning horizon in steps (default 10)")
    p.add_argument(iterations_flag, type=positive_int, default=3, help=iterations)
    p.add_argument(
        "--replan-every", type=positive_int, default=1, help="actions executed per plan (default 1)"
    )


# ------------------------------------------------------------------- flags -> a job dataclass
Job = TypeVar("Job")


def config_from_args(cls: type[Job], args: argparse.Namespace | Mapping[str, Any], **overrides: Any) -> Job:
    """A ``cls`` dataclass from the parsed flags: each field from the flag of the same name (its
    ``dest``), ``overrides`` winning; a field no flag names keeps its default, and flags that are no
    field (``--json`` of a command whose job has none, ``--no-progress``...) are left out."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})


# ------------------------------------------------------------------------------ --config FILE
CONFIG_HELP = (
    "JSON file of settings, as a run saves them (keys: the flags' names without dashes, e.g. "
    '{"steps": 2000, "lr": 1e-3}); flags given on the command line win'
)


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (before parsing: the file sets the parser's defaults)."""
    for i, word in enumerate(argv):
        if word == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--config="):
            return word.partition("=")[2]
    return None


def read_settings(path: str) -> dict[str, Any]:
    """The JSON object in ``path``, with one-line errors naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings")
    return values


def settings_of(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parsed flags as a JSON-able dict (what ``--config`` reads back), without ``skip``."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("_") or key in ("config", "command", *skip):
            continue
        out[key] = str(value) if isinstance(value, os.PathLike) else value
    return out


def apply_settings(parser: argparse.ArgumentParser, values: dict[str, Any], where: str) -> None:
    """Make ``values`` (flag name -> value) the defaults of ``parser``'s flags, each checked by the
    flag's own type and choices, so that parsing the command line again lets its flags win.

    A required option or a positional the file supplies becomes optional. Unknown keys are a
    ``ValueError`` naming ``where`` and the key."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "version", "config")}
    unknown = sorted(k for k in values if k.replace("-", "_") not in actions)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(actions)}")
    for key, value in values.items():
        action = actions[key.replace("-", "_")]
        action.default = _checked(action, value, f"{where}: {key}")
        action.required = False
        if not action.option_strings:  # a positional given by the file
            action.nargs = "?"


def _checked(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(
        action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)
    ):
        if not isinstance(value, bool) and not (value is None and action.default is None):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_one(action, v, where) for v in items]
    return None if value is None else _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, (dict, list)) or (isinstance(value, bool) and action.type not in (None, str)):
        raise ValueError(f"{where}: expected a single value, got {value!r}")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        out = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
        raise ValueError(f"{where} {err}") from None
    if action.choices is not None and out not in action.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return out
