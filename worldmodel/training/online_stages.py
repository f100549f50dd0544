"""The stages of one online iteration, each skipped when its marker (or, for collection, the
dataset's manifest) says it is done: ``initial_model`` (iteration 0), ``collect``, ``train``,
``evaluate``; plus the summary of the rows so far (``worldmodel.training.online`` describes the loop).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.data import shards as sh
from worldmodel.training.online_acting import episode_seed, make_agent, make_venv, record_episodes
from worldmodel.training.online_folder import RunFolder
from worldmodel.training.online_report import ppo_command, read_ppo_run


class OnlineRun(RunFolder):
    """The run folder's stages (``RunFolder`` holds its set-up and markers)."""

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
        agent = make_agent(cfg, model, episode_seed(cfg.seed, i, 1), cfg.explore_noise)
        venv = make_venv(cfg, self.image_size, self.num_objects, self.seq_len)
        first = self.manifest["episodes"]
        base = episode_seed(cfg.seed, 2)  # online episode e (global number) is reset with seed base + e
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
        agent = make_agent(cfg, model, episode_seed(cfg.seed, i, 3), 0.0, check=True)
        venv = make_venv(cfg, self.image_size, self.num_objects, cfg.eval_steps)
        try:
            self.log(f"iteration {i}: evaluating on {cfg.eval_episodes} episodes of {cfg.eval_steps} steps")
            result = run_episodes(agent, venv, cfg.eval_episodes, seed=episode_seed(cfg.seed, 4))
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
        if agent.prediction_check is not None:  # does on-policy data teach the model its pushes?
            row["prediction_check"] = agent.prediction_check.summary()
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
