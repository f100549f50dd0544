"""``worldmodel bench [--quick | --full] [--models a,b] [--out DIR]``: which world model plans best.

Every model of ``--models`` (default: the built-in ones) is trained on the same collected episodes
with the same budget (optimiser steps x batch, stated in the output), each with its state head,
and judged the same way. One table (Markdown, printed) and ``DIR/bench.json`` hold, per model:

- training wall time (the training stage, s; of its last invocation when it was resumed), the
  trainer's frames/s (median of its log windows) and the parameter count (every trained
  parameter: VGAN's discriminator and the state head included);
- ``worldmodel eval``: PSNR / SSIM against copy-last-frame (bits per dimension for VideoFlow) and
  the control diagnostics (dreamed arm and target-object error after 10 steps against "stays
  put", rank score of the recorded actions);
- ``worldmodel plan`` in the real sim: CEM on every task (push, recorded-goal, reach) and each
  other planner (mppi, grad) on the profile's ``planner_tasks``, successes with Wilson 95 %
  intervals and ms per action. Random actions and the simulator oracle do not depend on the model:
  they run once per task, with the CEM plans of the first model that needs them;
- PPO trained in the model's dream and evaluated in the real sim (``worldmodel.rl``'s
  ``train_in_dream`` and ``evaluate_agent``, what ``agents.train`` / ``agents.evaluate`` run, in
  this process as the demo runs them).

Layout of ``DIR``: ``data/`` (collected once), ``models/NAME/`` (the demo's pipeline,
``worldmodel.cli.demo_pipeline.Pipeline``, one folder per model: ``model/``, ``eval.json``, ``plan*.json``,
``agent/``, ``agent_eval.json``, ``report.html``; its ``data`` links to ``DIR/data``),
``bench_config.json`` (the settings; another set in the same ``DIR`` is refused), ``run.json``
(hardware, version, commit of the last invocation) and ``bench.json``.

Resumable: every stage of every model leaves a marker (``.stages/KEY.done``) and is skipped next
time, training resumes its checkpoint, so an interrupted bench continues where it stopped; a
model whose stage fails is reported and the bench goes on with the next one (exit status 1).
``--models`` may change between runs in one ``DIR`` (finished models are not redone).

Profiles: ``--quick`` fits a 2-core CPU in under 30 minutes for the six built-in models (tiny
presets at 16 px, 600 steps; measured in benchmarks/README.md); ``--full`` (the default on a
GPU) uses the demo's full profile (paper presets at 64 px, 20k steps) with every planner on every
task, meant for a GPU.
``--set FIELD=VALUE`` overrides a ``DemoConfig`` field for every model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from worldmodel.cli.demo_pipeline import Pipeline
from worldmodel.cli.demo_settings import MODEL_SETS, PLAN_FILES, DemoConfig, choose_profile, demo_config
from worldmodel.cli.flags import CONFIG_HELP, add_common_flags, settings_of
from worldmodel.files import write_json_atomic

OTHER_PLANNERS = ("mppi", "grad")
"""Planners judged beside CEM (``worldmodel plan --planner``)."""


@dataclasses.dataclass(frozen=True)
class BenchProfile:
    """A bench size: the ``DemoConfig`` of every model and the tasks of the other planners."""

    demo: dict[str, Any]
    """``DemoConfig`` fields over the demo's profile of the same name."""
    planner_tasks: tuple[str, ...]
    """Tasks on which each of ``OTHER_PLANNERS`` plans (CEM plans on all of ``DemoConfig.tasks``)."""
    model_sets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Per-model config overrides (``DemoConfig.model_set``) where a preset does not fit the data."""


PROFILES: dict[str, BenchProfile] = {
    # Sized on the 2-core CPU VM, where VideoFlow costs most: at 64 px its tiny preset trained at
    # 1/20 of SVG's frames/s, and at 16 px its CEM plan on reach took 10x SVG's (164 vs 16 s, the
    # demo's planner settings). So the quick bench runs the tiny presets at their own 16 px, with
    # a third of the demo's planner evaluations (population 32, 2 iterations).
    "quick": BenchProfile(
        demo={
            "image_size": 16,
            "episodes": 512,
            "train_steps": 600,
            "plan_episodes": 10,
            "plan_args": tuple(
                "--population 32 --elites 4 --horizon 6 --iterations 2 --replan-every 3 "
                "--oracle-budget 16 --envs 10 --num-objects 1".split()
            ),
            "agent_timesteps": 100_000,
            "agent_args": (*DemoConfig.agent_args, "--eval-every", "0", "--video-episodes", "0"),
            "agent_eval_episodes": 10,
        },
        planner_tasks=("reach",),
        # the demo's longer windows for the state head (VGAN's 16-px clip needs none)
        model_sets={k: v for k, v in MODEL_SETS.items() if k != "vgan"},
    ),
    "full": BenchProfile(
        demo={},
        planner_tasks=DemoConfig.tasks,
        # VGAN's paper clip (32 frames) is longer than an episode (30); at 64 px its clip must
        # be a multiple of 16 frames.
        model_sets={"vgan": ("clip_len=16", "n_future=15")},
    ),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel bench``."""
    from worldmodel.dynamics.registry import builtin

    p.add_argument(
        "--out", default="out/bench", help="output folder (default out/bench); re-running continues"
    )
    p.add_argument(
        "--models",
        default=None,
        metavar="A,B,...",
        help=f"comma-separated model names (default every built-in one: {','.join(builtin())})",
    )
    quick = "the small profile: a 2-core CPU, under 30 minutes for the six models (default on a CPU)"
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--full", action="store_true", help="the GPU profile, paper presets (default on a GPU)")
    add_common_flags(p, seed="every stage", device="")
    add_common_flags(
        p,
        sets="override a DemoConfig field for every model, e.g. --set train_steps=500 (repeatable)",
        sets_metavar="FIELD=VALUE",
    )
    p.add_argument("--config", metavar="FILE", default=None, help=f"{CONFIG_HELP}; DIR/bench.json is one")


def model_names(text: str | None) -> list[str]:
    """``--models``: registered names, each once, in the order given (default: the built-in ones)."""
    from worldmodel.dynamics.registry import available, builtin

    if text is None:
        return builtin()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in available()]
    if unknown or not names:
        raise ValueError(
            f"--models: unknown model name(s) {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(available())}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--models: a model is named twice in {text!r}")
    return names


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _metrics(path: Path) -> list[dict[str, Any]]:
    """The trainer's ``metrics.jsonl`` rows (a line cut by a killed run is skipped)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def plan_file(task: str, planner: str) -> str:
    """The plan report of ``planner`` on ``task`` in a model folder (CEM's: the demo's names)."""
    return PLAN_FILES[task] if planner == "cem" else PLAN_FILES[task].replace(".json", f"_{planner}.json")


class Bench:
    """The bench in ``out``: shared data, a demo pipeline per model, the figures."""

    def __init__(self, profile: str, names: list[str], sets: dict[str, Any], out: Path) -> None:
        self.profile, self.names, self.out = PROFILES[profile], names, out
        self.configs = {}
        for name in names:
            extra = {"model_set": self.profile.model_sets[name]} if name in self.profile.model_sets else {}
            self.configs[name] = demo_config(profile, name, {**self.profile.demo, **extra, **sets})
        self.shared = self.configs[names[0]]  # the fields every model shares (data, budgets)
        tasks = tuple(t for t in self.shared.tasks if t in self.profile.planner_tasks)
        self.planners = {"cem": self.shared.tasks, **{p: tasks for p in OTHER_PLANNERS if tasks}}
        self.errors: dict[str, list[str]] = {}
        self.timings: dict[str, dict[str, float]] = {}

    def model_dir(self, name: str) -> Path:
        return self.out / "models" / name

    # --- running ------------------------------------------------------------------------------
    def collect(self) -> None:
        """Collect once into ``DIR/data`` (the demo's collect stage, in ``DIR``)."""
        Pipeline(self.shared, self.out).collect()

    def _share_data(self, folder: Path) -> None:
        """Point a model folder's ``data`` at ``DIR/data`` and mark its collect stage done, so the
        demo pipeline trains and scores every model on the same episodes."""
        (folder / ".stages").mkdir(parents=True, exist_ok=True)
        link = folder / "data"
        if not link.is_symlink() and not link.exists():
            link.symlink_to(Path("..", "..", "data"), target_is_directory=True)  # relative: DIR can move
        done = folder / ".stages" / "collect.done"
        if not done.exists():
            done.write_text((self.out / ".stages" / "collect.done").read_text())

    def _needs_baselines(self) -> bool:
        return any(v is None for v in self.baselines().values())

    def run_model(self, index: int, name: str) -> None:
        """The demo pipeline on one model, then each other planner on its tasks."""
        c, folder = self.configs[name], self.model_dir(name)
        print(f"worldmodel bench: model {index + 1}/{len(self.names)}: {name} ({c.preset})", flush=True)
        self._share_data(folder)
        if not self._needs_baselines():  # random and the oracle are done: this model plans alone
            c = dataclasses.replace(c, plan_args=(*c.plan_args, "--oracle-budget", "0"))
        pipe = Pipeline(c, folder)
        self.timings[name] = pipe.timings  # filled as the stages finish
        extra = [
            (planner, task) for planner, tasks in self.planners.items() if planner != "cem" for task in tasks
        ]
        pipe.total += len(extra)
        self._guarded(name, pipe.run)
        if f"train {name}" not in pipe.timings:  # not trained: nothing to plan with
            return
        for k, (planner, task) in enumerate(extra, start=9):  # also when a demo stage after training failed
            key, report = f"plan-{task}-{planner}", plan_file(task, planner)
            self._guarded(name, pipe.plan, k, task, planner, key, report, video=False, oracle=False)

    def _guarded(self, name: str, fn, *args: Any, **kwargs: Any) -> None:
        """``fn(*args, **kwargs)``; a failed stage is reported and the bench goes on."""
        try:
            fn(*args, **kwargs)
        except RuntimeError as err:
            self.errors.setdefault(name, []).append(str(err))
            print(f"worldmodel bench: {name} failed: {err}", file=sys.stderr, flush=True)

    # --- figures -------------------------------------------------------------------------------
    def baselines(self) -> dict[str, dict[str, Any] | None]:
        """Random and oracle per task, from the first model folder whose CEM plan ran the oracle
        (this run's models in order, then any other folder in ``DIR/models``)."""
        from worldmodel.bench import baselines

        others = sorted(p.name for p in (self.out / "models").glob("*") if p.name not in self.names)
        order = [*self.names, *others]
        reports = {
            t: [(n, _read(self.model_dir(n) / plan_file(t, "cem"))) for n in order] for t in self.shared.tasks
        }
        return baselines(reports)

    def row(self, name: str) -> dict[str, Any]:
        from worldmodel.bench import model_row
        from worldmodel.dynamics import load

        c, folder = self.configs[name], self.model_dir(name)
        ckpt = folder / "model" / "checkpoints" / "last.pt"
        params = sum(p.numel() for p in load(ckpt, device="cpu").parameters()) if ckpt.is_file() else None
        plans = {p: {t: _read(folder / plan_file(t, p)) for t in tasks} for p, tasks in self.planners.items()}
        return model_row(
            preset=c.preset,
            params=params,
            train_steps=c.train_steps,
            batch_size=c.batch_size,
            train_seconds=self.timings.get(name, {}).get(f"train {name}"),
            metrics_rows=_metrics(folder / "model" / "metrics.jsonl"),
            eval_report=_read(folder / "eval.json"),
            plans=plans,
            agent_report=_read(folder / "agent_eval.json"),
        )

    def report(self, args: argparse.Namespace, profile: str) -> dict[str, Any]:
        """Everything ``bench.json`` holds (the same figures for the same finished stages)."""
        budget = {k: v for k, v in dataclasses.asdict(self.shared).items() if k not in ("model", "model_set")}
        return json.loads(
            json.dumps(  # tuples -> lists, as the file reads back
                {
                    "command": "bench",
                    "args": settings_of(args),
                    "profile": profile,
                    "budget": budget,
                    "planners": self.planners,
                    "baselines": self.baselines(),
                    "models": {name: self.row(name) for name in self.names},
                    "errors": self.errors,
                }
            )
        )


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    stored = out / "bench_config.json"
    if stored.exists() and json.loads(stored.read_text()) != settings:
        raise ValueError(
            f"{out} holds a bench with other settings ({stored}); choose another --out or delete it"
        )
    write_json_atomic(stored, settings)


def run(args: argparse.Namespace) -> int:
    """Check the flags, run every stage not finished yet, print the table, write bench.json."""
    import torch

    from worldmodel.bench import table
    from worldmodel.cli.provenance import git_commit, hardware
    from worldmodel.cli.train import parse_sets

    names = model_names(args.models)  # before anything is written
    profile = choose_profile(args.quick, args.full, torch.cuda.is_available())
    sets = {**parse_sets(args.set), "seed": args.seed, "device": args.device}
    if "model" in sets:
        raise ValueError("--set model: the models are --models")
    out = Path(args.out)
    bench = Bench(profile, names, sets, out)  # every model's config checked here
    _check_settings(
        out, json.loads(json.dumps({"profile": profile, "set": sets, "planners": bench.planners}))
    )
    import worldmodel

    root = Path(worldmodel.__file__).resolve().parent.parent
    run_info = {"settings": settings_of(args), "version": worldmodel.__version__, "commit": git_commit(root)}
    run_info.update(hardware=hardware(args.device), started=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    write_json_atomic(out / "run.json", run_info)
    print(f"worldmodel bench: profile {profile}, models {', '.join(names)}, output {out}", flush=True)
    tic = time.perf_counter()
    bench.collect()
    for i, name in enumerate(names):
        bench.run_model(i, name)
    report = bench.report(args, profile)
    write_json_atomic(out / "bench.json", report)
    print(table(report))
    print(f"worldmodel bench: {time.perf_counter() - tic:.0f} s; figures: {out / 'bench.json'}")
    return 1 if bench.errors else 0
