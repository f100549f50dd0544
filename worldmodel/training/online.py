"""Online model-based RL, one loop (PlaNet's, Dreamer's, mbrl-lib's): act with the learned planner in
the real sim, add the episodes to the dataset, fine-tune the model on the grown data, repeat.

Iteration 0 is the starting point: the given checkpoint (``OnlineConfig.checkpoint``) or a model
trained on the initial data (``model``, ``preset``, ``initial_steps``), evaluated as it is. Each
iteration ``i >= 1`` then

1. **collects** ``episodes_per_iter`` episodes of ``seq_len`` steps (the dataset's episode length)
   in ``worldmodel/PushTable-v0`` on the task, with ``MPCAgent`` + ``LearnedReward`` on the model's
   own state head (as ``worldmodel plan`` builds it), the executed actions the plan's plus
   Gaussian exploration noise (``explore_noise``, PlaNet's 0.3 by default; clipped to [-1, 1]; the
   agent's context holds the executed action). Each episode is recorded as
   ``worldmodel.envs.policy.rollout`` records one (frames, actions, states, objects, goal, target,
   num_objects, pushed = False) and the batch is appended to the dataset as one new shard
   (``worldmodel.envs.collect.append_episodes``): the manifest grows atomically, finished shards
   are never written again;
2. **fine-tunes** the model for ``train_steps`` more optimiser steps on the grown dataset's train
   split, resuming ``last.pt`` with ``Trainer`` (weights, optimiser states, RNG streams, step) as
   ``worldmodel train --resume`` does;
3. **evaluates** the fine-tuned planner without exploration noise on ``eval_episodes`` episodes of
   the task's budget (``TaskSpec.budget``, or ``max_steps``), the same episodes (seeds) at every
   iteration, so the curve compares models, not draws.

**Real steps** (``real_steps`` in a row) count every environment step recorded in the dataset:
the initial collection's ``episodes × seq_len`` plus the loop's. Evaluation episodes are not
counted and never added to the data (PlaNet's and Dreamer's test episodes; ``agents.train_real``
does not count its evaluations in ``--timesteps`` either). A ``recorded-goal`` reset records a
scripted push internally to find its goal: part of the task's set-up, not counted. Collection
episodes last ``seq_len`` steps (every record of a dataset has the same length), which for
``push`` (50) and ``recorded-goal`` (2k) is shorter than the evaluation budget. The dataset's split
rule holds for the new episodes too (every 20th is held out of training).

**The run folder** ``OUT``::

    OUT/settings.json            the settings; a resume must agree (but for iterations, device)
    OUT/data/                    the growing dataset: the initial shards hard-linked (copied across
                                 file systems; the initial folder is never written), then one
                                 shard per iteration; each online shard's manifest entry has an
                                 ``online`` record (iteration, env seeds, model step, success)
    OUT/model/                   the Trainer's run folder (checkpoints/last.pt, tb/, metrics.jsonl)
    OUT/iterations/iter-NNNN-train.json, iter-NNNN-eval.json   stage markers, written atomically
    OUT/online.json, OUT/online.html    the rows so far and the success-vs-real-steps chart

**Resuming** (the same call again, e.g. after ``kill -9``): the dataset's manifest is the record of
collection (an iteration whose shard it lists is never collected again; a shard file written
before the kill but not listed is overwritten), ``train`` resumes ``last.pt`` up to the step the
iteration aims at (the collecting model's step + ``train_steps``), and a stage with its marker is
skipped. So no episode is duplicated or lost, whatever the moment of the kill.

**Model-free baseline** (``ppo_run``): the folder of a ``python -m agents.train_real`` run on the
same task, whose ``eval.jsonl`` (success in the real sim against its real steps) is drawn on the
same axes; ``ppo_command`` gives the command for the loop's budget. The loop never runs it
(``worldmodel`` does not import ``agents``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel import files
from worldmodel.data import shards as sh
from worldmodel.envs.task import TASKS, TaskSpec, wilson_interval
from worldmodel.errors import DataError
from worldmodel.planning import MPCAgent

__all__ = [
    "NoisyMPC",
    "OnlineConfig",
    "ppo_command",
    "read_ppo_run",
    "record_episodes",
    "run_online",
    "write_report",
]

PLANNERS = ("cem", "icem")
# Settings a resumed run may change: where the run folder is, how far to go, where to compute.
_FREE = ("out", "iterations", "device", "ppo_run")
Log = Callable[[str], None]


@dataclasses.dataclass
class OnlineConfig:
    """Settings of one online run; ``worldmodel online`` flags map onto these fields."""

    out: Path
    """Run folder (module docstring); an existing one is resumed."""
    data: Path
    """The initial dataset (a finished ``worldmodel collect`` folder); never written."""
    checkpoint: Path | None = None
    """Initial model with a state head (``--set state_head=true``); ``None``: train one."""
    model: str = "svg-lp"
    """Without ``checkpoint``: the model to train on the initial data ..."""
    preset: str | None = "tiny"
    """... its preset ..."""
    model_set: dict[str, Any] = dataclasses.field(default_factory=dict)
    """... config overrides (``state_head`` is always on; ``image_size`` the data's) ..."""
    initial_steps: int = 1000
    """... and its optimiser steps."""
    iterations: int = 3
    """Collect / fine-tune / evaluate rounds after iteration 0."""
    episodes_per_iter: int = 16
    """Real episodes collected per iteration (of the dataset's ``seq_len`` steps each)."""
    train_steps: int = 200
    """Optimiser steps of fine-tuning per iteration."""
    batch_size: int | None = None
    """Training batch (``None``: the model's)."""
    lr: float | None = None
    """Learning rate of the fine-tuning (``None``: the checkpoint's optimiser's)."""
    task: str = "push"
    """``push``, ``recorded-goal`` or ``reach``: what the planner aims at and is judged on."""
    recorded_k: int = 20
    reach_weight: float = 0.5
    """The task's numbers (``TaskSpec``)."""
    max_steps: int | None = None
    """Steps of an evaluation episode (``None``: the task's budget)."""
    eval_episodes: int = 20
    """Evaluation episodes per iteration (a multiple of ``envs``)."""
    envs: int = 4
    """Episodes run side by side, planned as one batch (divides the episode counts)."""
    explore_noise: float = 0.3
    """Std of the Gaussian noise added to the planned actions while collecting (0: none)."""
    planner: str = "cem"
    population: int = 400
    elites: int | None = None
    horizon: int = 10
    plan_iterations: int = 3
    replan_every: int = 1
    temperature: float = 1.0
    """The planner (``cem`` or ``icem``) and the model's sampling temperature, as ``worldmodel plan``."""
    num_objects: int | None = None
    """Objects per episode (``None``: as the initial dataset was collected)."""
    seed: int = 0
    """Seeds the episodes, the planner, the exploration noise and the training."""
    device: str = "auto"
    ppo_run: Path | None = None
    """An ``agents.train_real`` run folder to compare against (read only)."""

    def __post_init__(self) -> None:
        self.out, self.data = Path(self.out), Path(self.data)
        self.checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        self.ppo_run = None if self.ppo_run is None else Path(self.ppo_run)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.planner not in PLANNERS:
            raise ValueError(f"planner must be one of {', '.join(PLANNERS)}, got {self.planner!r}")
        self._check_numbers()
        if self.elites is not None and not 1 <= self.elites < self.population:
            raise ValueError(f"elites ({self.elites}) must be in 1..population-1 ({self.population - 1})")
        if not 1 <= self.replan_every <= self.horizon:
            raise ValueError(f"replan_every must be in 1..horizon ({self.horizon}), got {self.replan_every}")
        if self.checkpoint is None and self.initial_steps < 1:
            raise ValueError("without a checkpoint the loop trains one: initial_steps must be >= 1")
        self.spec()  # checks the task's numbers

    def _check_numbers(self) -> None:
        """Counts, bounds and finite numbers (what the CLI's flag types check, for library callers)."""
        # field -> (lowest value, highest value or None, may be None)
        whole = {"episodes_per_iter": (1, None, False), "train_steps": (1, None, False)}
        whole.update(eval_episodes=(1, None, False), envs=(1, None, False), horizon=(1, None, False))
        whole.update(iterations=(0, None, False), initial_steps=(0, None, False), seed=(0, None, False))
        whole.update(max_steps=(1, None, True), batch_size=(1, None, True), num_objects=(1, 4, True))
        whole.update(population=(2, None, False), plan_iterations=(1, None, False))
        for name, (low, high, optional) in whole.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"in {low}..{high}"
                raise ValueError(f"{name} must be a whole number {bound}, got {value!r}")
        for name, positive in (("lr", True), ("temperature", False), ("explore_noise", False)):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
        for name in ("episodes_per_iter", "eval_episodes"):
            if getattr(self, name) % self.envs:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of envs ({self.envs}): every "
                    "env runs the same number of episodes"
                )

    def spec(self) -> TaskSpec:
        """The task."""
        return TaskSpec(name=self.task, reach_weight=self.reach_weight, recorded_k=self.recorded_k)

    @property
    def eval_steps(self) -> int:
        """Steps of an evaluation episode."""
        return int(self.max_steps or self.spec().budget)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (``OUT/settings.json``)."""
        out = dataclasses.asdict(self)
        for key in ("out", "data", "checkpoint", "ppo_run"):
            out[key] = None if out[key] is None else str(Path(out[key]).resolve())
        return out


# ------------------------------------------------------------------------------------ the agent
def _seed(*values: int) -> int:
    """A 31-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] >> 1)


class NoisyMPC(MPCAgent):
    """``MPCAgent`` that explores: ``predict(..., deterministic=False)`` adds Gaussian noise of std
    ``noise`` to the planned actions, clipped to [-1, 1], and keeps the executed (noisy) action as
    the one the next anchor's context holds (the real frames follow it, not the plan).
    ``deterministic=True`` (what SB3's ``evaluate_policy`` passes) acts exactly as ``MPCAgent``."""

    def __init__(self, *args: Any, noise: float = 0.0, noise_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise}")
        self.noise = float(noise)
        self.noise_rng = np.random.default_rng(noise_seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """``MPCAgent.predict``; with ``deterministic=False`` the actions carry the noise."""
        actions, _ = super().predict(observation, state, episode_start, deterministic)
        if deterministic or self.noise == 0:
            return actions, None
        noisy = actions + self.noise * self.noise_rng.standard_normal(actions.shape)
        noisy = np.clip(noisy, -1.0, 1.0).astype(np.float32)
        for slot, row in zip(self._slots, noisy.reshape(len(self._slots), -1), strict=True):
            slot.pending = row  # what was executed: the context of the next plan
        return noisy, None


def _agent(cfg: OnlineConfig, model: Any, seed: int, noise: float) -> Any:
    """The planner agent of ``worldmodel plan`` on the model's own state head, with ``noise``."""
    from worldmodel.envs.push_table import REST_ACTION
    from worldmodel.planning import CEM, CEMConfig, LearnedReward

    make = CEMConfig.icem if cfg.planner == "icem" else CEMConfig.cem
    planner = CEM(
        make(
            population=cfg.population, elites=cfg.elites, horizon=cfg.horizon, iterations=cfg.plan_iterations
        ),
        model.config.action_dim,
    )
    objective = LearnedReward(
        model.state_head,
        task=cfg.spec(),
        reach_weight=cfg.reach_weight,
        temperature=cfg.temperature,
        sample=cfg.temperature > 0,
    )
    return NoisyMPC(
        model,
        planner,
        objective,
        cfg.replan_every,
        seed=seed,
        rest_action=REST_ACTION,
        noise=noise,
        noise_seed=_seed(seed, 7),
    )


def _venv(cfg: OnlineConfig, image_size: int, num_objects: int | None, steps: int):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import worldmodel

    kw = dict(image_size=image_size, max_episode_steps=steps, task=cfg.task)
    kw.update(recorded_k=cfg.recorded_k, reach_weight=cfg.reach_weight, num_objects=num_objects)
    return DummyVecEnv([lambda: gym.make(worldmodel.PUSH_TABLE_ID, **kw) for _ in range(cfg.envs)])


def record_episodes(
    agent: Any, venv: Any, seed: int, seq_len: int, deterministic: bool = False
) -> list[dict]:
    """Run ``agent`` for one episode of ``seq_len`` steps in each env of ``venv`` (an SB3 VecEnv
    over PushTable whose time limit is ``seq_len``; env ``i`` reset with seed ``seed + i``) and
    record them as ``worldmodel.envs.policy.rollout`` does.

    Returns one dict per env: frames uint8 ``(T, H, W, 3)``, actions float32 ``(T, 4)`` (the
    executed ones), states float32 ``(T, 3)``, objects float32 ``(T, MAX_OBJECTS, 3)`` (NaN rows for
    absent objects), goal float32 ``(3,)``, target / num_objects int64 ``()``, pushed bool ``()``
    (False: no scripted push), plus ``is_success`` and ``distance`` at the last step (not stored).
    ``frames[t]`` is observed, then ``actions[t]`` applied; the frame after the last is not kept.
    """
    from worldmodel.envs.scene import MAX_OBJECTS

    n = venv.num_envs
    agent.attach(venv)
    venv.seed(seed)
    obs = venv.reset()
    infos = [dict(i) for i in venv.reset_infos]
    frames = np.empty((n, seq_len, *obs.shape[1:]), np.uint8)
    actions = np.empty((n, seq_len, 4), np.float32)
    states = np.empty((n, seq_len, 3), np.float32)
    objects = np.full((n, seq_len, MAX_OBJECTS, 3), np.nan, np.float32)
    start = infos
    for t in range(seq_len):
        frames[:, t] = obs
        for i, info in enumerate(infos):
            states[i, t] = info["ee_pos"]
            k = int(info["num_objects"])
            objects[i, t, :k] = np.asarray(info["object_pos"])[:k]
        act, _ = agent.predict(obs, episode_start=np.full(n, t == 0), deterministic=deterministic)
        actions[:, t] = act
        obs, _, dones, infos = venv.step(act)
        if t < seq_len - 1 and dones.any():
            raise ValueError(
                f"venv: an episode ended at step {t + 1} of {seq_len}; make it with a time limit of {seq_len}"
            )
    return [
        {
            "frames": frames[i],
            "actions": actions[i],
            "states": states[i],
            "objects": objects[i],
            "goal": np.asarray(start[i]["goal_pos"], np.float32),
            "target": np.array(start[i]["target"], np.int64),
            "num_objects": np.array(start[i]["num_objects"], np.int64),
            "pushed": np.array(False, np.bool_),
            "is_success": bool(infos[i]["is_success"]),
            "distance": float(infos[i]["distance"]),
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------ the loop
class _Run:
    """One run folder: its dataset, model and markers (module docstring)."""

    def __init__(self, cfg: OnlineConfig, log: Log | None, progress: bool) -> None:
        self.cfg, self.log, self.progress = cfg, log or (lambda _: None), progress
        self.out = cfg.out
        self.data = self.out / "data"
        self.model_dir = self.out / "model"
        self.ckpt = self.model_dir / "checkpoints" / "last.pt"
        self.marks = self.out / "iterations"

    # --- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the settings against a run already in ``OUT`` (or the inputs of a new one), then
        make sure ``OUT/data`` exists."""
        cfg = self.cfg
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"{self.out}: --out exists and is not a folder")
        path = self.out / "settings.json"
        mine = json.loads(json.dumps(cfg.settings()))  # as the file holds them (tuples as lists)
        if cfg.ppo_run is not None:
            read_ppo_run(cfg.ppo_run, cfg.task)  # a bad --ppo-run fails now, not after the loop
        if path.is_file():
            saved = json.loads(path.read_text())
            diff = [k for k in mine if k not in _FREE and saved.get(k) != mine[k]]
            if diff:
                what = ", ".join(f"{k}: {saved.get(k)!r} vs {mine[k]!r}" for k in diff)
                raise ValueError(
                    f"{path}: this run was started with other settings ({what}); use another --out or "
                    "the same settings to resume"
                )
            run = saved["run"]
        else:
            if self.out.is_dir() and any(self.out.iterdir()):
                raise ValueError(
                    f"{self.out}: folder is not empty and holds no online run; choose a new --out"
                )
            source = sh.load_manifest(cfg.data)
            if not source["complete"]:
                raise DataError(
                    f"{cfg.data / sh.MANIFEST}: collection is unfinished; finish it with `worldmodel collect`"
                )
            self._check_sim(source)
            self.image_size, self.seq_len = int(source["image_size"]), int(source["seq_len"])
            if cfg.checkpoint is not None:  # the model's fit to the data, before anything is written
                from worldmodel.dynamics.checkpoint import model_from, read

                self._check_model(
                    model_from(read(cfg.checkpoint), cfg.checkpoint, device="cpu"), cfg.checkpoint
                )
            # The run's id tags its shards, so a dataset that already holds another run's online
            # episodes (an OUT/data given as --data) is told apart from this run's.
            run = {"id": secrets.token_hex(8), "initial_episodes": int(source["episodes"])}
            self.out.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(path, {**mine, "run": run}, fsync=True)
        self.run_id, self.initial_episodes = run["id"], int(run["initial_episodes"])
        self._link_data()
        self.manifest = sh.load_manifest(self.data)
        self.seq_len = int(self.manifest["seq_len"])
        self.image_size = int(self.manifest["image_size"])
        env = self.manifest.get("env") or {}
        self.num_objects = cfg.num_objects if cfg.num_objects is not None else env.get("num_objects")

    def _link_data(self) -> None:
        """``OUT/data``: the initial dataset's manifest and hard links to its shards (copies across
        file systems), made under a temporary name and renamed whole."""
        for stale in self.out.glob(".data.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (self.data / sh.MANIFEST).is_file():
            for stale in self.data.glob("*.tmp-*"):  # a killed append's shard: never listed
                stale.unlink(missing_ok=True)
            return
        src = self.cfg.data
        manifest = sh.load_manifest(src)
        tmp = self.out / f".data.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            for entry in manifest["shards"]:
                source, target = src / entry["file"], tmp / entry["file"]
                try:
                    os.link(source, target)
                except OSError:  # another file system (or no hard links): a checked copy
                    shutil.copyfile(source, target)
                    if sh.file_sha256(target) != entry["sha256"]:
                        raise DataError(f"{source}: its sha256 differs from the manifest's") from None
                if target.stat().st_size != entry["bytes"]:
                    raise DataError(
                        f"{source}: {target.stat().st_size} bytes, the manifest says {entry['bytes']}"
                    )
            sh.write_json_atomic(tmp / sh.MANIFEST, manifest)
            os.replace(tmp, self.data)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_sim(self, manifest: dict[str, Any]) -> None:
        """The loop acts in a default-configured sim: refuse data collected with other physics,
        camera or action scale (the task's own fields may differ)."""
        from worldmodel.envs.push_table import PushTableConfig

        sim = manifest.get("sim") or {}
        here = dataclasses.asdict(PushTableConfig(image_size=int(manifest["image_size"])))
        skip = {"task", "num_objects", "goal_conditioned", "recorded_k", "reach_weight", "image_size"}

        def norm(v: Any) -> Any:
            return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

        diff = [k for k in sim if k in here and k not in skip and norm(sim[k]) != norm(here[k])]
        if diff:
            raise ValueError(
                f"{self.cfg.data / sh.MANIFEST}: collected with other sim settings "
                f"({', '.join(diff)}) than the default PushTable the loop acts in"
            )

    # --- markers -----------------------------------------------------------------------------
    def _mark(self, i: int, stage: str) -> Path:
        return self.marks / f"iter-{i:04d}-{stage}.json"

    def _read_mark(self, i: int, stage: str) -> dict[str, Any] | None:
        path = self._mark(i, stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_mark(self, i: int, stage: str, value: dict[str, Any]) -> None:
        files.write_json_atomic(self._mark(i, stage), value, fsync=True)

    def _online_entries(self) -> dict[int, dict[str, Any]]:
        """This run's shards by iteration (the manifest re-read)."""
        self.manifest = sh.load_manifest(self.data)
        mine = [e for e in self.manifest["shards"] if (e.get("online") or {}).get("run") == self.run_id]
        return {int(e["online"]["iteration"]): e for e in mine}

    def _online_entry(self, i: int) -> dict[str, Any] | None:
        return self._online_entries().get(i)

    # --- stages ------------------------------------------------------------------------------
    def _train_config(self, steps: int, every: int):
        from worldmodel.training.trainer import TrainConfig

        cfg = self.cfg
        return TrainConfig(
            steps=steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            log_every=max(1, min(50, every)),
            ckpt_every=max(1, min(100, every)),
            sample_every=0,
            eval_every=0,
            seed=cfg.seed,
            device=cfg.device,
        )

    def _dataset(self, model: Any):
        from worldmodel.data import open_dataset

        c = model.config
        return open_dataset(self.data, split="train", seq_len=c.seq_len, image_size=c.image_size)

    def _trainer(self, model: Any, tcfg: Any, resume_from: Path | None):
        """A Trainer on the current dataset, restored from ``resume_from`` (weights, optimisers,
        RNG streams, step) when given."""
        from worldmodel.dynamics.checkpoint import read
        from worldmodel.training.trainer import Trainer

        data = self._dataset(model)
        saved = read(resume_from) if resume_from is not None else None
        # The dataset grows every iteration by design. Trainer.resume refuses a checkpoint trained
        # on other data (a guard against resuming the wrong run), so the trainer is given the
        # checkpoint's own fingerprint to restore it and the grown data's for what it saves next.
        trainer = Trainer(
            model,
            data,
            self.model_dir,
            tcfg,
            data_fingerprint=(saved or {}).get("data") or None,
            progress=self.progress,
        )
        if saved is not None and saved.get("optimizers"):
            trainer.resume(resume_from)
        elif saved is not None:  # weights only (dynamics.save): fresh optimisers from its step on
            trainer.step = int(saved.get("step", 0))
        trainer.fingerprint = data.fingerprint
        return trainer

    def initial_model(self) -> None:
        """Iteration 0's model in ``OUT/model/checkpoints/last.pt``: the given checkpoint made
        resumable there, or a model trained on the initial data."""
        if self._read_mark(0, "train") is not None:
            return
        from worldmodel.dynamics.checkpoint import model_from, read
        from worldmodel.dynamics.registry import build_config, resolve

        cfg, tic = self.cfg, time.perf_counter()
        if cfg.checkpoint is not None:
            saved = read(cfg.checkpoint)
            model = model_from(saved, cfg.checkpoint, device="cpu")
            self._check_model(model, cfg.checkpoint)
            trainer = self._trainer(
                model, self._train_config(int(saved.get("step", 0)), cfg.train_steps), cfg.checkpoint
            )
            trainer.save()
            steps = 0
        else:
            overrides = {**cfg.model_set, "image_size": self.image_size, "state_head": True}
            config = build_config(cfg.model, cfg.preset, **overrides)
            cls, _ = resolve(cfg.model)
            torch.manual_seed(cfg.seed)
            model = cls(config)
            self._check_model(model, f"--model {cfg.model}")
            resume = self.ckpt if self.ckpt.is_file() else None  # a killed initial training
            trainer = self._trainer(model, self._train_config(cfg.initial_steps, cfg.initial_steps), resume)
            self.log(f"iteration 0: training {cfg.model} on the initial data for {cfg.initial_steps} steps")
            trainer.fit(cfg.initial_steps)
            steps = cfg.initial_steps
        self._write_mark(
            0, "train", {"step": trainer.step, "train_steps": steps, "seconds": time.perf_counter() - tic}
        )

    def _check_model(self, model: Any, where: Any) -> None:
        c = model.config
        if getattr(model, "state_head", None) is None:
            raise ValueError(
                f"{where}: the loop plans on the model's own state head, and this model has none: train it "
                "with --set state_head=true (a separate head file would go stale as the model is fine-tuned)"
            )
        if c.image_size != self.image_size:
            raise ValueError(
                f"{where}: the model takes {c.image_size}-px frames, the dataset holds "
                f"{self.image_size}-px ones"
            )
        if c.seq_len > self.seq_len:
            raise ValueError(
                f"{where}: the model trains on windows of {c.seq_len} frames, the dataset's episodes have "
                f"{self.seq_len}"
            )

    def _load(self):
        from worldmodel.dynamics import load

        return load(self.ckpt, device=self.cfg.device)

    def collect(self, i: int) -> dict[str, Any]:
        """Iteration ``i``'s episodes in the dataset (collected now unless the manifest lists them)."""
        entry = self._online_entry(i)
        if entry is not None:
            return entry["online"]
        from worldmodel.dynamics.checkpoint import read
        from worldmodel.envs.collect import append_episodes

        cfg, tic = self.cfg, time.perf_counter()
        step = int(read(self.ckpt)["step"])
        model = self._load()
        agent = _agent(cfg, model, _seed(cfg.seed, i, 1), cfg.explore_noise)
        venv = _venv(cfg, self.image_size, self.num_objects, self.seq_len)
        first = self.manifest["episodes"]
        base = _seed(cfg.seed, 2)  # online episode e (global number) is reset with seed base + e
        episodes, seeds = [], []
        try:
            for b in range(0, cfg.episodes_per_iter, cfg.envs):
                seed = base + first + b
                episodes += record_episodes(
                    agent, venv, seed, self.seq_len, deterministic=cfg.explore_noise == 0
                )
                seeds += [seed + j for j in range(cfg.envs)]
                self.log(f"iteration {i}: collected {len(episodes)}/{cfg.episodes_per_iter} episodes")
        finally:
            venv.close()
        ok = [ep.pop("is_success") for ep in episodes]
        dist = [ep.pop("distance") for ep in episodes]
        record = {
            "run": self.run_id,
            "iteration": i,
            "task": cfg.task,
            "policy": f"MPCAgent ({cfg.planner}, LearnedReward) + N(0, {cfg.explore_noise}^2) noise",
            "model_step": step,
            "env_seeds": seeds,
            "successes": int(sum(ok)),
            "success_rate": float(np.mean(ok)),
            "final_distance": float(np.mean(dist)),
            "seconds": round(time.perf_counter() - tic, 3),
        }
        append_episodes(self.data, list(zip(seeds, episodes, strict=True)), online=record)
        self.manifest = sh.load_manifest(self.data)
        return record

    def train(self, i: int, collected: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune up to the collecting model's step + ``train_steps`` (resuming a killed attempt)."""
        mark = self._read_mark(i, "train")
        if mark is not None:
            return mark
        from worldmodel.dynamics.checkpoint import model_from, read

        cfg, tic = self.cfg, time.perf_counter()
        target = int(collected["model_step"]) + cfg.train_steps
        saved = read(self.ckpt)
        model = model_from(saved, self.ckpt, device="cpu")
        trainer = self._trainer(model, self._train_config(target, cfg.train_steps), self.ckpt)
        if trainer.step < target:
            self.log(
                f"iteration {i}: fine-tuning steps {trainer.step + 1}-{target} on "
                f"{self.manifest['episodes']} episodes"
            )
            result = trainer.fit(target)
            loss = result.history.get(result.step, {})
        else:
            loss = {}
        mark = {"step": trainer.step, "train_steps": cfg.train_steps, "loss": loss}
        mark["seconds"] = round(time.perf_counter() - tic, 3)
        self._write_mark(i, "train", mark)
        return mark

    def evaluate(self, i: int) -> dict[str, Any]:
        """Iteration ``i``'s row: the planner without noise on the fixed evaluation episodes."""
        mark = self._read_mark(i, "eval")
        if mark is not None:
            return mark
        from worldmodel.dynamics.checkpoint import read
        from worldmodel.planning import run_episodes

        cfg, tic = self.cfg, time.perf_counter()
        step = int(read(self.ckpt)["step"])
        model = self._load()
        agent = _agent(cfg, model, _seed(cfg.seed, i, 3), 0.0)
        venv = _venv(cfg, self.image_size, self.num_objects, cfg.eval_steps)
        try:
            self.log(f"iteration {i}: evaluating on {cfg.eval_episodes} episodes of {cfg.eval_steps} steps")
            result = run_episodes(agent, venv, cfg.eval_episodes, seed=_seed(cfg.seed, 4))
        finally:
            venv.close()
        entries = self._online_entries()
        episodes = self.initial_episodes + sum(e["episodes"] for k, e in entries.items() if k <= i)
        collected = entries[i]["online"] if i else None
        trained = self._read_mark(i, "train") or {}
        row = {
            "iteration": i,
            "real_steps": episodes * self.seq_len,
            "episodes": episodes,
            "online_episodes": episodes - self.initial_episodes,
            "success_rate": result["success_rate"],
            "successes": result["successes"],
            "ci95": result["ci95"],
            "final_distance": result["final_distance"],
            "eval_episodes": result["episodes"],
            "train_step": step,
            "train_steps": int(trained.get("train_steps", 0)),
            "collect_success_rate": None if collected is None else collected["success_rate"],
            "collect_final_distance": None if collected is None else collected["final_distance"],
            "ms_per_action": result["ms_per_action"],
            "seconds_collect": 0.0 if collected is None else collected["seconds"],
            "seconds_train": float(trained.get("seconds", 0.0)),
            "seconds_eval": round(time.perf_counter() - tic, 3),
        }
        row["seconds"] = round(row["seconds_collect"] + row["seconds_train"] + row["seconds_eval"], 3)
        self._write_mark(i, "eval", row)
        return row

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.cfg.iterations + 1):
            row = self._read_mark(i, "eval")
            if row is None:
                break
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        cfg = self.cfg
        ppo = read_ppo_run(cfg.ppo_run, cfg.task) if cfg.ppo_run is not None else None
        rows = self.rows()
        for row in rows:
            before = [p for p in (ppo or {}).get("rows", []) if p["timesteps"] <= row["real_steps"]]
            row["ppo_success_rate"] = before[-1]["success_rate"] if before else None
            row["ppo_timesteps"] = before[-1]["timesteps"] if before else None
        final = self.initial_episodes * self.seq_len + cfg.iterations * cfg.episodes_per_iter * self.seq_len
        return {
            "command": "online",
            "task": cfg.task,
            "eval_steps": cfg.eval_steps,
            "seq_len": self.seq_len,
            "initial_episodes": self.initial_episodes,
            "initial_real_steps": self.initial_episodes * self.seq_len,
            "rows": rows,
            "ppo": ppo,
            # about 8 evaluations over the budget (the last at the budget itself), none closer
            # together than an iteration's worth of steps
            "ppo_command": ppo_command(cfg, final, max(cfg.episodes_per_iter * self.seq_len, -(-final // 8))),
            "settings": cfg.settings(),
        }


def run_online(cfg: OnlineConfig, log: Log | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the loop of the module docstring to ``cfg.iterations``; writes
    ``OUT/online.json`` and ``OUT/online.html`` after every iteration.

    Args:
        cfg: the settings.
        log: called with one line per stage (progress); the library prints nothing itself.
        progress: show the Trainer's progress bars.

    Returns:
        The summary written to ``online.json``: ``rows`` (one per iteration, 0 first: ``iteration,
        real_steps, episodes, online_episodes, success_rate, successes, ci95, final_distance,
        eval_episodes, train_step, train_steps, collect_success_rate, collect_final_distance,
        ms_per_action, seconds_collect, seconds_train, seconds_eval, seconds, ppo_success_rate,
        ppo_timesteps``), ``ppo`` (the baseline's evaluations or ``None``), ``ppo_command`` and the
        settings.
    """
    run = _Run(cfg, log, progress)
    run.prepare()
    run.initial_model()
    say = run.log
    for i in range(cfg.iterations + 1):
        if i:
            collected = run.collect(i)
            run.train(i, collected)
        row = run.evaluate(i)
        say(
            f"iteration {i}: success {row['success_rate']:.2f} ({row['ci95'][0]:.2f}-{row['ci95'][1]:.2f}) "
            f"after {row['real_steps']} real steps, model step {row['train_step']}"
        )
        write_report(cfg.out, run.summary())
    return run.summary()


# ------------------------------------------------------------------------------------ PPO + report
def ppo_command(cfg: OnlineConfig, timesteps: int, eval_every: int) -> str:
    """The ``agents.train_real`` command of the model-free baseline at the loop's final real-step
    budget ``timesteps``, evaluated every ``eval_every`` steps (and at the end) on as many
    episodes as the loop's evaluations."""
    out = cfg.out / "ppo"
    line = (
        f"python -m agents.train_real --algo ppo --timesteps {timesteps} --eval-every {eval_every} "
        f"--eval-episodes {cfg.eval_episodes} --seed {cfg.seed} --out {out}"
    )
    return line if cfg.task == "push" else f"{line} --task {cfg.task}"


def read_ppo_run(run: str | os.PathLike, task: str) -> dict[str, Any]:
    """The evaluations of an ``agents.train_real`` run: ``{"run", "algo", "rows": [{timesteps,
    success_rate, ci95, final_distance, episodes}]}``, in order of ``timesteps``. One-line
    ``ValueError`` naming the file when it is missing, of another task or not a real-sim run."""
    run = Path(run)
    config_path, evals = run / "config.json", run / "eval.jsonl"
    try:
        config = json.loads(config_path.read_text())
        lines = evals.read_text().splitlines()
    except FileNotFoundError as err:
        raise ValueError(
            f"--ppo-run {run}: no {Path(err.filename).name}: not an agents.train_real run"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--ppo-run {config_path}: not valid JSON ({err})") from None
    config = config.get("args", config) if isinstance(config, dict) else {}
    if config.get("env", "real") != "real":
        raise ValueError(f"--ppo-run {config_path}: a run in the {config.get('env')!r} env, not the real sim")
    if config.get("task", "push") != task:
        raise ValueError(
            f"--ppo-run {config_path}: trained on task {config.get('task', 'push')!r}, not {task!r}"
        )
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
            k = int(r["episodes"])
            rate = float(r["real_success_rate"])
            rows.append(
                {
                    "timesteps": int(r["timesteps"]),
                    "success_rate": rate,
                    "ci95": list(wilson_interval(round(rate * k), k)),
                    "final_distance": float(r.get("real_final_distance", float("nan"))),
                    "episodes": k,
                }
            )
        except (ValueError, KeyError, TypeError):
            if n < len(lines):  # a last line cut short by a kill is left out; others are errors
                raise ValueError(f"--ppo-run {evals}: line {n} is not an evaluation row") from None
    rows.sort(key=lambda r: r["timesteps"])
    return {"run": str(run), "algo": config.get("algo"), "rows": rows}


def write_report(out: str | os.PathLike, summary: dict[str, Any]) -> None:
    """``OUT/online.json`` (the summary) and ``OUT/online.html`` (the chart and the table), atomically."""
    from worldmodel.report import Report, line_chart

    out = Path(out)
    files.write_json_atomic(out / "online.json", summary)
    rows, ppo = summary["rows"], summary["ppo"]
    series = {"online MPC": ([r["real_steps"] for r in rows], [r["success_rate"] for r in rows])}
    bands = {"online MPC": ([r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows])}
    if ppo and ppo["rows"]:
        name = f"{(ppo['algo'] or 'ppo').upper()} (model-free)"
        series[name] = ([p["timesteps"] for p in ppo["rows"]], [p["success_rate"] for p in ppo["rows"]])
        bands[name] = ([p["ci95"][0] for p in ppo["rows"]], [p["ci95"][1] for p in ppo["rows"]])
    report = Report(f"Online model-based RL on PushTable {summary['task']}")
    report.paragraph(
        f"Each iteration collects episodes of {summary['seq_len']} steps with the learned planner "
        "(plus exploration noise), appends them to the dataset, fine-tunes the model and evaluates the "
        f"planner without noise on the same {summary['settings']['eval_episodes']} episodes of "
        f"{summary['eval_steps']} steps. Real steps count every step in the dataset, the initial "
        f"{summary['initial_real_steps']} of the random collection included; evaluation steps are "
        "not counted."
    )
    if rows:
        chart = line_chart(
            series,
            title="success in the real sim vs real environment steps",
            xlabel="real environment steps",
            ylabel="success rate",
            y_range=(0.0, 1.0),
            bands=bands,
        )
        report.chart(chart, "shaded: 95% Wilson intervals")
    header = ["iteration", "real steps", "episodes", "success", "95% interval", "final dist (cm)"]
    header += ["collect success", "model step", "seconds", "PPO success (at steps)"]
    table = []
    for r in rows:
        ppo_cell = (
            None
            if r.get("ppo_success_rate") is None
            else f"{r['ppo_success_rate']:.2f} ({r['ppo_timesteps']})"
        )
        table.append(
            [
                r["iteration"],
                r["real_steps"],
                r["episodes"],
                r["success_rate"],
                "{:.2f}-{:.2f}".format(*r["ci95"]),
                100 * r["final_distance"],
                r["collect_success_rate"],
                r["train_step"],
                r["seconds"],
                ppo_cell,
            ]
        )
    report.table(header, table)
    if not ppo:
        report.paragraph("Model-free baseline at the same real-step budget (then pass --ppo-run OUT/ppo):")
        report.code(summary["ppo_command"])
    report.write(out / "online.html")
