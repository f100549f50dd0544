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
profile is used (meant for a GPU). ``--set FIELD=VALUE`` overrides any ``DemoConfig`` field.
The agent stages run ``python -m agents.train`` / ``agents.evaluate`` in a subprocess: the
``worldmodel`` package never imports ``agents``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worldmodel.cli.demo_report import PLAN_FILES
from worldmodel.files import write_json_atomic


@dataclasses.dataclass
class DemoConfig:
    """Sizes of every stage. ``PROFILES`` holds the named settings."""

    model: str = "svg-lp"
    """World model (registry name): svg-lp, svg-fp, videoflow, vgan."""
    preset: str = "tiny"
    """Model preset."""
    image_size: int = 64
    """Frame size of the data and the model (64: PushTable-v0's and BAIR's)."""
    model_set: tuple[str, ...] = ()
    """Extra model config overrides (``KEY=VALUE``, as ``worldmodel train --set``); ``()`` picks
    ``MODEL_SETS[model]``."""
    state_head: bool = True
    """Train the model's state head with it (``--set state_head=true``): the planner's and the
    dream's learned reward read the arm and the objects off the model's own features."""
    episodes: int = 512
    """Episodes collected."""
    episode_len: int = 30
    """Frames per episode (BAIR has 30)."""
    push_probability: float = 1.0
    """Share of collected episodes with a deliberate push (``collect --push-probability``).
    Contact-rich data: with 1.0 instead of collect's 0.5, the same model's dreamed target error at
    10 steps fell from 6.9 to 5.7 cm (stays put 8.3), the arm's from 3.1 to 2.3 cm, and the
    recorded-goal planner went from 1/20 to 2/20 (measured on the same held-out episodes)."""
    workers: int = 2
    """Collection worker processes."""
    train_steps: int = 1500
    """World-model optimiser steps."""
    batch_size: int = 16
    """World-model batch size."""
    head_steps: int = 1000
    """Object-head optimiser steps."""
    eval_sequences: int = 25
    """Test sequences scored (the quick data's test split holds 25: every 20th of 512 episodes)."""
    eval_samples: int = 10
    """Samples per test sequence (best-of-N)."""
    plan_episodes: int = 20
    """Real-sim episodes per planner (model, oracle, random) and task."""
    tasks: tuple[str, ...] = ("push", "recorded-goal", "reach")
    """Tasks the planners are judged on (``worldmodel plan --task``)."""
    planner: str = "cem"
    """``cem`` or ``icem``."""
    plan_args: tuple[str, ...] = (
        "--population", "64", "--elites", "8", "--horizon", "6", "--iterations", "3",
        "--replan-every", "3", "--oracle-budget", "16", "--envs", "10", "--num-objects", "1",
    )  # fmt: skip
    """Extra flags for ``worldmodel plan`` (budgets; see ``worldmodel plan --help``)."""
    agent_algo: str = "ppo"
    """SB3 algorithm trained in the dream."""
    agent_obs: str = "latent"
    """Agent observations: ``latent`` (model features) or ``pixels``."""
    agent_args: tuple[str, ...] = (
        "--n-steps", "16", "--n-epochs", "10", "--gamma", "0.95", "--lr", "1e-3", "--batch-size", "256",
    )  # fmt: skip
    """Extra flags for ``agents.train`` (SB3 settings; with its defaults, 128 steps per env per
    rollout, 100k steps are only 12 PPO updates and the agent learned nothing in the dream)."""
    agent_timesteps: int = 400_000
    """Dream transitions for the agent."""
    agent_envs: int = 64
    """Batched dream envs."""
    agent_task: str = "reach"
    """Task the dream agent trains on and is judged on (``agents.train --task``)."""
    agent_eval_episodes: int = 20
    """Real-sim episodes scoring the agent."""
    device: str = "auto"
    """auto | cpu | cuda."""
    seed: int = 0
    """Seed of every stage."""

    def __post_init__(self) -> None:
        from worldmodel.envs.task import TASKS

        self.tasks = tuple(self.tasks)
        bad = [t for t in (*self.tasks, self.agent_task) if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"--set tasks/agent_task: unknown task(s) {bad}; known: {', '.join(TASKS)}")
        from worldmodel.dynamics.registry import available

        if self.model not in available():  # before any data is collected
            raise ValueError(
                f"--model: unknown world model {self.model!r}; choose one of {', '.join(available())}"
            )
        for name in ("episodes", "train_steps", "plan_episodes", "agent_eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--set {name}: must be >= 1, got {getattr(self, name)}")

    PROFILES = {  # noqa: RUF012 - class-level table of named configs, not a field
        "quick": {},
        "full": {
            "preset": "paper",
            "episodes": 2000,
            "train_steps": 20_000,
            "batch_size": 32,
            "head_steps": 2000,
            "eval_sequences": 128,
            "eval_samples": 100,
            "plan_episodes": 20,
            "plan_args": ("--envs", "10"),
            "agent_timesteps": 500_000,
            "agent_envs": 256,
            "agent_eval_episodes": 50,
        },
    }


# What a model's tiny preset needs at 64 px: VGAN's 16-px tiny preset has 8-frame clips, and at
# 64 px (4 temporal up-sampling levels) a clip must be a multiple of 16 frames.
# SVG's tiny preset predicts 5 frames per window, so its state head would only ever learn on 5-step
# rollouts while the planner and the dream look further; 8 (as the quick demo measured) costs 1.5x
# per training step. The reference experiments found longer windows helped the object most.
MODEL_SETS: dict[str, tuple[str, ...]] = {
    "vgan": ("clip_len=16", "n_future=15"),
    "svg-lp": ("n_future=8",),
    "svg-fp": ("n_future=8",),
    "svg-det": ("n_future=8",),
    "jepa": ("n_future=8",),
}


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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a DemoConfig field, e.g. --set train_steps=300 (repeatable)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a demo's DIR/demo_config.json: run with its settings (--quick/--full, --model, --set win)",
    )


def demo_config(profile: str, model: str | None, sets: dict[str, Any]) -> DemoConfig:
    """The profile's config with ``--model`` and ``--set`` applied; unknown fields raise."""
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    values = dict(DemoConfig.PROFILES[profile])
    if model:
        values["model"] = model
    unknown = sorted(set(sets) - set(fields))
    if unknown:
        raise ValueError(f"--set: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    for key, value in sets.items():
        if key in ("plan_args", "model_set", "tasks", "agent_args"):
            value = tuple(str(value).split()) if isinstance(value, str) else tuple(map(str, value))
        values[key] = value
    tiny = values.get("preset", DemoConfig.preset) == "tiny"
    if not values.get("model_set") and values.get("image_size", 64) >= 64 and tiny:
        values["model_set"] = MODEL_SETS.get(values.get("model", DemoConfig.model), ())
    return DemoConfig(**values)


class Pipeline:
    """Runs the stages in order, timing each and skipping finished ones."""

    def __init__(self, cfg: DemoConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.timings: dict[str, float] = {}
        self.total = 8

    def stage(self, k: int, name: str, key: str, fn) -> None:
        """Run ``fn`` unless ``DIR/.stages/KEY.done`` says it finished before."""
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
        fn()
        self.timings[name] = time.perf_counter() - tic
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(f"{self.timings[name]:.1f}\n")
        print(f"[{k}/{self.total}] {name}: {self.timings[name]:.0f} s", flush=True)

    def model_sets(self) -> list[str]:
        """``--set`` values of the training stage."""
        c = self.cfg
        state = ("state_head=true",) if c.state_head else ()
        return [f"image_size={c.image_size}", *state, *c.model_set]

    @staticmethod
    def context_args(ckpt: Path, episode_len: int) -> list[Any]:
        """``--n-past`` / ``--n-future`` for eval: the model's own context, the rest of the episode."""
        from worldmodel.dynamics.checkpoint import read

        n_past = int(read(ckpt)["config"]["n_past"])
        return ["--n-past", n_past, "--n-future", episode_len - n_past]

    # --- the stages ---------------------------------------------------------------------------
    def wm(self, *args: Any) -> None:
        """Run a ``worldmodel`` sub-command in this process; a failure stops the demo."""
        from worldmodel.cli import main

        argv = [str(a) for a in args]
        code = main(argv)
        if code == 130:  # Ctrl-C, which `main` turned into a status: stop here too
            raise KeyboardInterrupt
        if code != 0:
            raise RuntimeError(f"`worldmodel {' '.join(argv)}` failed (see the message above)")

    def agents(self, module: str, *args: Any) -> None:
        """Run ``python -m agents.<module>`` in a subprocess; a failure stops the demo."""
        cmd = [sys.executable, "-m", f"agents.{module}", *map(str, args)]
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        if subprocess.run(cmd, env=env).returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` failed (see the message above)")

    def run(self) -> Path:
        c, o = self.cfg, self.out
        ckpt = o / "model" / "checkpoints" / "last.pt"
        self.stage(
            1,
            "collect",
            "collect",
            lambda: self.wm(
                "collect",
                "--out",
                o / "data",
                "--episodes",
                c.episodes,
                "--seq-len",
                c.episode_len,
                "--image-size",
                c.image_size,
                "--workers",
                c.workers,
                "--push-probability",
                c.push_probability,
                "--seed",
                c.seed,
            ),
        )
        self.stage(
            2,
            f"train {c.model}",
            "train",
            lambda: self.wm(
                "train",
                c.model,
                "--data",
                o / "data",
                "--out",
                o / "model",
                "--preset",
                c.preset,
                *(arg for kv in self.model_sets() for arg in ("--set", kv)),
                "--resume",  # an interrupted demo continues its training (fresh when none yet)
                "--steps",
                c.train_steps,
                "--batch-size",
                c.batch_size,
                "--seed",
                c.seed,
                "--device",
                c.device,
                "--ckpt-every",
                max(c.train_steps // 4, 1),
                "--sample-every",
                max(c.train_steps // 2, 1),
                "--log-every",
                max(c.train_steps // 60, 1),
                # held-out scores once, at the end: the eval stage that follows scores in full
                "--eval-every",
                c.train_steps,
            ),
        )
        if not c.state_head:  # a model with a state head plans and dreams with its own
            self.stage(
                3,
                "train-head",
                "head",
                lambda: self.wm(
                    "train-head",
                    ckpt,
                    "--data",
                    o / "data",
                    "--steps",
                    c.head_steps,
                    "--episodes",
                    c.episodes,
                    "--seed",
                    c.seed,
                    "--device",
                    c.device,
                    "--json",
                    o / "head.json",
                ),
            )
        self.stage(
            4,
            "eval vs copy-last",
            "eval",
            lambda: self.wm(
                "eval",
                ckpt,
                "--data",
                o / "data",
                "--sequences",
                c.eval_sequences,
                "--samples",
                c.eval_samples,
                *self.context_args(ckpt, c.episode_len),
                "--seed",
                c.seed,
                "--device",
                c.device,
                "--json",
                o / "eval.json",
                "--video",
                o / "eval.gif",
            ),
        )
        for task in c.tasks:
            self.stage(
                5,
                f"plan ({c.planner}) in the real sim: {task}",
                "plan" if task == "push" else f"plan-{task}",
                lambda task=task: self.wm(
                    "plan",
                    ckpt,
                    "--task",
                    task,
                    "--episodes",
                    c.plan_episodes,
                    "--planner",
                    c.planner,
                    "--seed",
                    c.seed,
                    "--device",
                    c.device,
                    "--json",
                    o / PLAN_FILES[task],
                    "--video",
                    o / PLAN_FILES[task].replace(".json", ".gif"),
                    *c.plan_args,
                ),
            )
        self.stage(
            6,
            f"train {c.agent_algo.upper()} in the dream",
            "agent",
            lambda: self.agents(
                "train",
                "--algo",
                c.agent_algo,
                "--checkpoint",
                ckpt,
                "--timesteps",
                c.agent_timesteps,
                "--num-envs",
                c.agent_envs,
                "--obs",
                c.agent_obs,
                "--reward",
                "learned",
                "--task",
                c.agent_task,
                *(["--task-obs"] if c.agent_obs == "latent" and c.state_head else []),
                *c.agent_args,
                "--out",
                o / "agent",
                "--resume",
                "--seed",
                c.seed,
                "--device",
                c.device,
            ),
        )
        self.stage(
            7,
            "evaluate the agent in the real sim",
            "agent-eval",
            lambda: self.agents(
                "evaluate",
                o / "agent",
                "--task",
                c.agent_task,
                "--episodes",
                c.agent_eval_episodes,
                "--json",
                o / "agent_eval.json",
                "--video",
                o / "agent_eval.gif",
            ),
        )
        print(f"[8/{self.total}] report", flush=True)
        self.report()  # always rewritten: cheap, and it reflects whatever the stages left
        return o / "report.html"

    def report(self) -> None:
        from worldmodel.cli.demo_report import build_report

        build_report(self.out, dataclasses.asdict(self.cfg), self.timings).write(self.out / "report.html")


def choose_profile(quick: bool, full: bool, cuda: bool) -> str:
    """``--quick`` / ``--full`` as asked; neither: the full profile when a CUDA device is present."""
    if quick and full:
        raise ValueError("--quick and --full exclude each other")
    return "full" if full or (not quick and cuda) else "quick"


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


def git_commit(root: Path) -> str | None:
    """The commit checked out in ``root`` (``+ uncommitted changes`` when tracked files differ), or
    ``None`` when ``root`` is not the top of a git checkout (an installed package) or git is absent."""

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *cmd], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None  # e.g. site-packages inside some other repository
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor() or platform.machine()
    except OSError:
        name = platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} logical cores)"


def hardware(device: str) -> dict[str, str | None]:
    """The machine the demo ran on: device, GPU, CPU, torch, Python, OS."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "device": ("cuda" if cuda else "cpu") if device == "auto" else device,
        "gpu": ", ".join(gpus) if gpus else None,
        "cpu": _cpu_model(),
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


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
