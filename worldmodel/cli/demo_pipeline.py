"""The demo's stages, each a call of the library with a typed config: ``Pipeline`` (``worldmodel demo``
runs it on one model, ``worldmodel bench`` on each of several).

Each stage builds its job from the ``DemoConfig`` and calls the library function the matching
command runs, in this process: ``envs.collect.collect``, ``training.run.train_model``,
``training.head_job.fit_head``, ``training.eval_job.evaluate_checkpoint``, ``planning.run.plan``,
``rl.train_in_dream`` and ``rl.evaluate_agent``. They print what the commands print and write the
files the commands write (``plan.json``'s ``args`` and ``model/config.json`` hold the settings of
the equivalent ``worldmodel plan`` / ``worldmodel train``, so either reruns from its file).
``DemoConfig.plan_args`` and ``agent_args`` are extra flags of ``worldmodel plan`` and
``agents.train``: they are read with those commands' own parsers.

A finished stage leaves ``DIR/.stages/KEY.done`` (holding its seconds) and is skipped next time;
a stage that fails raises ``StageError`` naming the equivalent command and the reason, so the demo
stops there with one line (the bench goes on with the next model). Ctrl-C stops at once; a rerun
resumes the world model from its last checkpoint and the agent from the state it saved on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from worldmodel.cli.demo_settings import PLAN_FILES, DemoConfig
from worldmodel.cli.flags import config_from_args, settings_of
from worldmodel.files import write_json_atomic


class StageError(RuntimeError):
    """A demo stage failed: the equivalent command and the reason, in one line."""


class Pipeline:
    """Runs the stages in order, timing each and skipping finished ones."""

    def __init__(self, cfg: DemoConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.timings: dict[str, float] = {}
        self.total = 8
        self.data = out / "data"
        self.ckpt = out / "model" / "checkpoints" / "last.pt"

    def stage(self, k: int, name: str, key: str, fn: Callable[[], None], command: str) -> None:
        """Run ``fn`` unless ``DIR/.stages/KEY.done`` says it finished before; bad input or a
        failure inside it becomes a ``StageError`` naming ``command`` (its equivalent command)."""
        done = self.out / ".stages" / f"{key}.done"
        if done.exists():
            try:  # the time it took when it ran, for the report
                self.timings[name] = float(done.read_text())
            except ValueError:
                pass
            print(f"[{k}/{self.total}] {name}: done already (delete {done} to redo)", flush=True)
            return
        print(f"[{k}/{self.total}] {name} ...", flush=True)
        tic = time.perf_counter()
        try:
            fn()
        except (OSError, ValueError, RuntimeError) as err:  # what the commands turn into one line
            raise StageError(f"`{command}` failed: {err}") from err
        self.timings[name] = time.perf_counter() - tic
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(f"{self.timings[name]:.1f}\n")
        print(f"[{k}/{self.total}] {name}: {self.timings[name]:.0f} s", flush=True)

    def model_sets(self) -> list[str]:
        """``--set`` values of the training stage."""
        c = self.cfg
        state = ("state_head=true", f"state_arm={c.state_arm}", f"state_objects={c.state_objects}")
        state = state if c.state_head else ()
        return [f"image_size={c.image_size}", *state, *c.model_set]

    def run(self) -> Path:
        """Every stage, then the report; returns the report's path."""
        c, ckpt = self.cfg, self.ckpt
        self.collect()
        command = f"worldmodel train {c.model} --data {self.data} --out {self.out / 'model'}"
        self.stage(2, f"train {c.model}", "train", self._train, command)
        if not c.state_head:  # a model with a state head plans and dreams with its own
            command = f"worldmodel train-head {ckpt} --data {self.data}"
            self.stage(3, "train-head", "head", self._head, command)
        command = f"worldmodel eval {ckpt} --data {self.data}"
        self.stage(4, "eval vs copy-last", "eval", self._eval, command)
        for task in c.tasks:
            key = "plan" if task == "push" else f"plan-{task}"
            self.plan(5, task, c.planner, key, PLAN_FILES[task], video=True)
        command = f"python -m agents.train --out {self.out / 'agent'} --resume"
        self.stage(6, f"train {c.agent_algo.upper()} in the dream", "agent", self._agent, command)
        command = f"python -m agents.evaluate {self.out / 'agent'}"
        self.stage(7, "evaluate the agent in the real sim", "agent-eval", self._agent_eval, command)
        print(f"[8/{self.total}] report", flush=True)
        self.report()  # always rewritten: cheap, and it reflects whatever the stages left
        return self.out / "report.html"

    def collect(self) -> None:
        """Stage 1: collect the episodes into ``DIR/data``."""
        command = f"worldmodel collect --out {self.data} --episodes {self.cfg.episodes}"
        self.stage(1, "collect", "collect", self._collect, command)

    def plan(
        self, k: int, task: str, planner: str, key: str, report: str, *, video: bool, oracle: bool = True
    ) -> None:
        """A planning stage: ``planner`` on ``task`` against random actions and (``oracle``) the
        simulator, into ``DIR/REPORT`` (and its ``.gif`` with ``video``)."""
        words = " ".join(self.cfg.plan_args) + ("" if oracle else " --oracle-budget 0")
        command = f"worldmodel plan {self.ckpt} --task {task} --planner {planner} {words}".rstrip()
        body = functools.partial(self._plan, task, planner, report, video=video, oracle=oracle)
        self.stage(k, f"plan ({planner}) in the real sim: {task}", key, body, command)

    def report(self) -> None:
        """Write ``DIR/report.html`` from whatever the stages left."""
        from worldmodel.cli.demo_report import build_report

        build_report(self.out, dataclasses.asdict(self.cfg), self.timings).write(self.out / "report.html")

    # --- the stages' bodies: a job each, the library call, what the command prints ---------------
    def _collect(self) -> None:
        from tqdm import tqdm

        from worldmodel.cli.collect import print_summary
        from worldmodel.envs.collect import CollectConfig, collect

        c = self.cfg
        cfg = CollectConfig(
            out=self.data,
            episodes=c.episodes,
            seq_len=c.episode_len,
            workers=c.workers,
            seed=c.seed,
            image_size=c.image_size,
            push_probability=c.push_probability,
        )
        with tqdm(total=c.episodes, unit="ep", desc="collect", dynamic_ncols=True) as bar:
            summary = collect(cfg, progress=bar.update)
        print_summary(summary, c.workers)

    def _train(self) -> None:
        from worldmodel.cli import train as train_cli
        from worldmodel.cli.train import parse_sets, trained_line
        from worldmodel.training.run import TrainJob, train_model

        c, out = self.cfg, self.out / "model"
        steps = c.train_steps
        flags = {  # TrainConfig fields, named as the flags of `worldmodel train`
            "steps": steps,
            "batch_size": c.batch_size,
            "log_every": max(steps // 60, 1),
            "ckpt_every": max(steps // 4, 1),
            "sample_every": max(steps // 2, 1),
            "seed": c.seed,
            "device": c.device,
            # held-out scores once, at the end: the eval stage that follows scores in full
            "eval_every": steps,
        }
        sets = self.model_sets()
        job = TrainJob(
            model=c.model,
            data=self.data,
            out=out,
            preset=c.preset,
            overrides=parse_sets(sets),
            train=flags,
            resume=True,  # an interrupted demo continues its training (fresh when none yet)
            progress=True,
        )
        given = {"model": c.model, "data": self.data, "out": out, "preset": c.preset, "set": sets, **flags}
        settings = _settings(train_cli.add_arguments, given, skip=("resume", "no_progress"))

        def record_settings() -> None:  # as `worldmodel train` does: --config RUN/config.json reruns it
            write_json_atomic(out / "config.json", {"command": "train", "args": settings})

        result = train_model(job, say=_say("worldmodel train"), before_fit=record_settings)
        print(trained_line(job, result))

    def _head(self) -> None:
        from worldmodel.cli.train_head import print_result
        from worldmodel.training.head_job import HeadJob, fit_head

        c = self.cfg
        job = HeadJob(
            checkpoint=self.ckpt,
            data=self.data,
            steps=c.head_steps,
            episodes=c.episodes,
            seed=c.seed,
            device=c.device,
            json=self.out / "head.json",
            progress=True,
        )
        print_result(fit_head(job, say=_say("worldmodel train-head")))

    def _eval(self) -> None:
        from worldmodel.cli.evaluate import print_report
        from worldmodel.dynamics.checkpoint import read
        from worldmodel.training.eval_job import EvalJob, evaluate_checkpoint

        c = self.cfg
        n_past = int(read(self.ckpt)["config"]["n_past"])  # the model's own context, then the rest
        job = EvalJob(
            checkpoint=self.ckpt,
            data=self.data,
            samples=c.eval_samples,
            n_past=n_past,
            n_future=c.episode_len - n_past,
            sequences=c.eval_sequences,
            seed=c.seed,
            device=c.device,
            json=self.out / "eval.json",
            video=self.out / "eval.gif",
            progress=True,
        )
        evaluate_checkpoint(job, say=_say("worldmodel eval"), on_report=print_report)
        print(f"  report: {job.json}")
        print(f"  video: {job.video}")

    def _plan(self, task: str, planner: str, report_name: str, *, video: bool, oracle: bool) -> None:
        import torch

        from worldmodel.cli import plan as plan_cli
        from worldmodel.planning.run import PlanJob, plan

        c = self.cfg
        given = _given_flags(plan_cli.add_arguments, c.plan_args, "--set plan_args")
        if not oracle:
            given["oracle_budget"] = 0
        fields = {f.name for f in dataclasses.fields(PlanJob)} - {"record"}
        refused = sorted(set(given) - fields - {"threads"})
        if refused:
            names = ", ".join(refused)
            raise ValueError(f"--set plan_args: {names} cannot be set here (the demo names its files)")
        if given.get("threads"):
            torch.set_num_threads(given["threads"])
        json_path = self.out / report_name
        video_path = json_path.with_suffix(".gif") if video else None
        values = {"checkpoint": self.ckpt, "task": task, "episodes": c.plan_episodes, "planner": planner}
        values.update(seed=c.seed, device=c.device, **given)
        job = config_from_args(PlanJob, values, record=video)
        report, trace = plan(job, say=_say("worldmodel plan"))
        values.update(json=json_path, video=video_path, max_steps=job.max_steps)
        report.update(command="plan", args=_settings(plan_cli.add_arguments, values))
        plan_cli.save(report, trace, json_path, video_path)
        plan_cli.print_table(job, report)
        shown = (("report", json_path), ("video", video_path))
        print("  " + "  ".join(f"{k}: {v}" for k, v in shown if v))

    def _agent(self) -> None:
        from worldmodel.cli.agent_flags import add_dream_arguments, dream_config
        from worldmodel.rl import prepare_run, train_in_dream

        c, run = self.cfg, self.out / "agent"
        given = _given_flags(add_dream_arguments, c.agent_args, "--set agent_args")
        if "config" in given:
            raise ValueError("--set agent_args: --config cannot be set here")
        values = {**_defaults(add_dream_arguments), "algo": c.agent_algo, "checkpoint": str(self.ckpt)}
        values.update(timesteps=c.agent_timesteps, num_envs=c.agent_envs, obs=c.agent_obs, reward="learned")
        values.update(task=c.agent_task, task_obs=c.agent_obs == "latent" and c.state_head)
        # agent_args override the settings above; the run folder, the seed and the device are the demo's
        values.update(given)
        values.update(out=str(run), resume=True, seed=c.seed, device=c.device)
        args = argparse.Namespace(**values)
        cfg = prepare_run(run, args.resume, lambda: dream_config(args), args.timesteps)
        if train_in_dream(cfg, run, resume=args.resume, progress=not args.no_progress) == 130:
            raise KeyboardInterrupt  # the agent saved first; a rerun continues it

    def _agent_eval(self) -> None:
        from worldmodel.rl import AgentEvalJob, evaluate_agent, summary_line

        c = self.cfg
        job = AgentEvalJob(
            run=self.out / "agent",
            task=c.agent_task,
            episodes=c.agent_eval_episodes,
            json=self.out / "agent_eval.json",
            video=self.out / "agent_eval.gif",
        )
        result = evaluate_agent(job, on_report=lambda r: print(summary_line(r)))
        if "video" in result:
            print(f"video: {result['video']}")


def _say(prefix: str) -> Callable[[str], None]:
    """A library function's notes, printed as its command prints them."""
    return lambda msg: print(f"{prefix}: {msg}", file=sys.stderr, flush=True)


# --- extra flags of a command (DemoConfig.plan_args, agent_args) -----------------------------------
class _FlagParser(argparse.ArgumentParser):
    """A command's parser whose errors are a ``ValueError`` (the stage reports it)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{self.prog}: {message}")


def _parser(add_arguments: Callable[[argparse.ArgumentParser], None], prog: str) -> _FlagParser:
    p = _FlagParser(prog=prog, add_help=False)
    add_arguments(p)
    return p


def _defaults(add_arguments: Callable[[argparse.ArgumentParser], None]) -> dict[str, Any]:
    """Every flag's default, by its name (what a command line that gives none of them holds)."""
    return {a.dest: a.default for a in _parser(add_arguments, "")._actions}


def _given_flags(
    add_arguments: Callable[[argparse.ArgumentParser], None], words: Iterable[str], where: str
) -> dict[str, Any]:
    """The flags ``words`` give, each checked by its own type: ``{name: value}`` of those given
    only, so they can override what the stage sets."""
    words = list(words)
    p = _parser(add_arguments, where)
    positional = set()
    for action in p._actions:  # argparse keeps its flags there (no public list)
        action.default, action.required = argparse.SUPPRESS, False
        if not action.option_strings:
            positional.add(action.dest)
            action.nargs = "?"
    given = vars(p.parse_args(words))
    if positional & set(given):
        raise ValueError(f"{where}: expected flags only, got {' '.join(words)!r}")
    return given


def _settings(
    add_arguments: Callable[[argparse.ArgumentParser], None],
    given: dict[str, Any],
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What the command records of its flags (``settings_of``) for a command line giving ``given``."""
    return settings_of(argparse.Namespace(**{**_defaults(add_arguments), **given}), skip=skip)
