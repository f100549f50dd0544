"""``worldmodel demo [--out DIR] [--quick]``: the whole pipeline on built-in defaults, and a report.

Stages (each writes into ``DIR``; a finished stage leaves ``DIR/.stages/NAME.done`` and is
skipped next time, and the training stages resume their checkpoints, so an interrupted demo
continues where it stopped; delete ``DIR`` to start over):

1. collect BAIR-style pushing episodes in the sim             ``DIR/data``
2. train a world model with its state head                    ``DIR/model`` (checkpoints, TensorBoard)
3. fit a separate object-position head (only for a model       ``DIR/model/checkpoints/last.head.pt``
   trained without ``state_head``; else the model's own is used)
4. evaluate it against the copy-last-frame baseline, and the   ``DIR/eval.json``, ``DIR/eval.gif``
   control diagnostics (dreamed arm and objects, action ranking)
5. plan with CEM in the real sim, on every task of ``tasks``:  ``DIR/plan.json`` (push),
   model vs oracle vs random                                   ``plan_recorded.json``, ``plan_reach.json``
6. train a PPO agent in the dream on ``agent_task``            ``DIR/agent`` (SB3 zip, TensorBoard)
7. evaluate the agent in the real sim on that task             ``DIR/agent_eval.json``, its video
8. write the report                                            ``DIR/report.html``

Profiles: ``--quick`` fits a 2-core CPU in under 15 minutes; without it the larger ``full``
profile is used (meant for a GPU). ``--set FIELD=VALUE`` overrides any ``DemoConfig`` field
(``worldmodel.cli.demo_settings``); ``--config DIR/demo_config.json`` reruns a demo's settings.

Every stage runs in this process as a call of the library function behind its command, with a
typed config (``worldmodel.cli.demo_pipeline``); the agent stages call ``worldmodel.rl``
(``train_in_dream``, ``evaluate_agent``), the library side of ``agents.train`` /
``agents.evaluate``: the ``worldmodel`` package never imports ``agents``. A stage that fails stops
the demo with one line naming its equivalent command and the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from worldmodel.cli.demo_pipeline import Pipeline, StageError
from worldmodel.cli.demo_settings import MODEL_SETS, DemoConfig, choose_profile, demo_config
from worldmodel.cli.flags import add_common_flags
from worldmodel.cli.provenance import git_commit, hardware
from worldmodel.files import write_json_atomic

__all__ = [
    "MODEL_SETS",
    "DemoConfig",
    "Pipeline",
    "StageError",
    "add_arguments",
    "choose_profile",
    "command_line",
    "demo_config",
    "git_commit",
    "hardware",
    "run",
    "run_info",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel demo``."""
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo); re-running continues")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the small profile (2-core CPU: under 15 minutes); default: the full profile on a GPU, "
        "quick on a CPU",
    )
    p.add_argument("--full", action="store_true", help="force the full profile even on a CPU")
    p.add_argument("--model", default=None, help="world model: svg-lp (default), svg-fp, videoflow, vgan")
    add_common_flags(
        p,
        sets="override a DemoConfig field, e.g. --set train_steps=300 (repeatable)",
        sets_metavar="FIELD=VALUE",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a demo's DIR/demo_config.json: run with its settings (--quick/--full, --model, --set win)",
    )


def _saved_settings(path: str) -> dict[str, Any]:
    """A ``demo_config.json``'s fields (``--config``), checked against ``DemoConfig``."""
    from worldmodel.cli.flags import read_settings

    values = read_settings(path)
    known = {f.name for f in dataclasses.fields(DemoConfig)} | {"profile"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"--config {path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if values.get("profile") not in (None, *DemoConfig.PROFILES):
        raise ValueError(f"--config {path}: profile must be one of {', '.join(DemoConfig.PROFILES)}")
    return values


def run(args: argparse.Namespace) -> int:
    """Pick the profile, run the pipeline, print where the report is."""
    import torch

    from worldmodel.cli.train import parse_sets

    saved = _saved_settings(args.config) if args.config else {}
    profile = saved.pop("profile", None) if not (args.quick or args.full) else None
    profile = profile or choose_profile(args.quick, args.full, torch.cuda.is_available())
    if args.model:
        saved.pop("model", None)
    cfg = demo_config(profile, args.model, {**saved, **parse_sets(args.set)})
    out = Path(args.out)
    settings = json.loads(json.dumps({"profile": profile, **dataclasses.asdict(cfg)}))  # tuples → lists
    stored = out / "demo_config.json"
    if stored.exists() and json.loads(stored.read_text()) != settings:
        raise ValueError(
            f"{out} holds a demo run with other settings ({stored}); choose another --out or delete it"
        )
    write_json_atomic(stored, settings)
    write_json_atomic(out / "run.json", run_info(args, cfg))  # the report's "Run" section
    print(f"worldmodel demo: profile {profile}, model {cfg.model} ({cfg.preset}), output {out}", flush=True)
    tic = time.perf_counter()
    report = Pipeline(cfg, out).run()
    print(f"worldmodel demo: finished in {time.perf_counter() - tic:.0f} s; report: {report}")
    print(f"  TensorBoard: tensorboard --logdir {out}")
    return 0


# --- what the report's "Run" section shows (asked here, in the CLI: the library never runs git) ---
def command_line(args: argparse.Namespace) -> str:
    """``worldmodel demo`` with the flags of ``args`` that differ from their defaults, as a shell
    line (read off the parser, so a flag added to ``add_arguments`` shows without more code)."""
    import shlex

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["worldmodel", "demo"]
    for action in parser._actions:  # argparse keeps its flags there (no public list)
        value = getattr(args, action.dest, action.default)
        if not action.option_strings or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true and the like
            words.append(flag)
        elif isinstance(value, list):  # append
            words += [w for v in value for w in (flag, str(v))]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def run_info(args: argparse.Namespace, cfg: DemoConfig) -> dict[str, Any]:
    """``run.json``: the command, the working folder, the worldmodel version, the git commit (from a
    checkout only), the hardware and the start time of this invocation."""
    import worldmodel

    return {
        "command": command_line(args),
        "cwd": os.getcwd(),
        "version": worldmodel.__version__,
        "commit": git_commit(Path(worldmodel.__file__).resolve().parent.parent),
        "hardware": hardware(cfg.device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
