"""A model-agnostic trainer: it calls ``model.loss(batch)`` and steps ``model.optimizers()``.

The loop, per step::

    batch = next(batches)                       # uint8 frames moved to the device, cast there
    batch["transitions"] = recorded steps       # state heads that integrate the arm (see below)
    loss, metrics = model.loss(batch)           # a scalar, or a dict keyed like optimizers()
    for key, opt in optimizers:                 # e.g. {"model"} or a GAN's {"g", "d"}
        loss[key].backward(inputs=params_of(opt))
    average gradients over processes (DDP), measure gradient norms, clip if asked
    one host sync: all losses and norms finite? else stop (TrainingDivergedError), naming the step
    every optimiser steps
    at a checkpoint or a held-out score: BatchNorm statistics recomputed with these weights

``transitions``: a state head that integrates the arm (``state_arm="actions"``) also gets
``state_batch`` recorded steps from every training episode (``data.transitions``, read once) for
its arm and contact models. Precise BN: ``training.precise_bn``, ``TrainConfig.bn_batches``.

Reproducibility: the batch of step ``s`` is a pure function of ``(seed, s)``
(``training.batches``), so the data order needs no saved iterator state; the global RNG states
(torch, CUDA, NumPy, Python) go into the checkpoint with the weights and the optimiser states
(``training.checkpointing``). On the CPU, a run interrupted at a checkpoint and resumed reproduces
the uninterrupted loss curve and weights exactly (tests/test_trainer.py).

Outputs in the run folder ``RUN``: ``checkpoints/last.pt`` (+ ``step_XXXXXXX.pt`` when
``keep_every`` is set), ``tb/`` and ``metrics.jsonl`` (what they hold: ``training.run_log``; the
held-out ``eval/*`` and ``control/*`` scores: ``training.held_out``) and
``samples/step_XXXXXXX.gif`` (context | prediction | ground truth: ``training.samples``).

Safety: a checkpoint is never written with a NaN or infinite weight, buffer or optimiser state
(``atomic_save`` refuses it): when a diverging step has already spoiled the state (BatchNorm
statistics are updated by the forward pass that produced the NaN loss), the previous finite
checkpoint stays and ``TrainingDivergedError`` says so. ``resume`` refuses a non-finite checkpoint
and applies ``TrainConfig.lr`` (``--lr``) to the restored optimisers, so the learning rate the
checkpoint records is the one that ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from worldmodel.data.transitions import RecordedTransitions
from worldmodel.device import resolve_device
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.checkpoint import atomic_save, checkpoint_dict
from worldmodel.errors import CheckpointError
from worldmodel.training import distributed as D
from worldmodel.training.batches import SeededItems, StepBatchSampler, mix_seed, to_device
from worldmodel.training.checkpointing import (
    gathered_rng_states,
    nonfinite_state,
    read_resumable,
    set_rng_state,
)
from worldmodel.training.held_out import (
    EVAL_CONTROL_CANDIDATES,
    EVAL_CONTROL_K,
    held_out_items,
    held_out_scores,
    held_out_tags,
)
from worldmodel.training.optim_step import check_batch, grad_norm, loss_terms, value_names
from worldmodel.training.precise_bn import batch_norms, bn_kept, drawn_batches, recompute_bn
from worldmodel.training.run_log import hparam_value, open_writer, trim_metrics, write_hparams, write_scalars
from worldmodel.training.samples import fixed_batch, predict, write_samples
from worldmodel.training.train_config import TrainConfig, TrainingDivergedError, TrainResult

__all__ = [
    "EVAL_CONTROL_CANDIDATES",
    "EVAL_CONTROL_K",
    "SeededItems",
    "StepBatchSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "hparam_value",
]


class Trainer:
    """Trains any ``LatentDynamics`` on a dataset of fixed-length windows.

    Args:
        model: a fresh model, or one whose weights ``resume`` will replace.
        dataset: items are dicts with ``frames`` uint8 ``(T, H, W, 3)`` and ``actions`` float32
            ``(T, A)``, ``T == model.config.seq_len`` (e.g. ``open_dataset(..., seq_len=T)``).
        out_dir: the run folder (created; rank 0 writes to it).
        config: training settings.
        data_fingerprint: stored in checkpoints; ``resume`` refuses a different one. Defaults to
            ``dataset.fingerprint`` when the dataset has one.
        progress: show a tqdm progress bar (rank 0).
        eval_data: held-out sequences scored every ``config.eval_every`` steps
            (``training.held_out``): items like ``dataset``'s with ``T >= seq_len`` frames from a
            fixed start (e.g. ``open_dataset(..., split="test", random_offset=False)``); the
            first ``seq_len`` frames are scored, and the control diagnostics read whole items, so
            pass whole episodes (``seq_len=`` the episode length) for them to see a push. The
            first ``config.eval_sequences`` items are read once, at construction (main process).
    """

    def __init__(
        self,
        model: LatentDynamics,
        dataset: Dataset,
        out_dir: str | Path,
        config: TrainConfig | None = None,
        *,
        data_fingerprint: str | None = None,
        progress: bool = False,
        eval_data: Dataset | None = None,
    ) -> None:
        self.config = cfg = config or TrainConfig()
        for name in ("eval_sequences", "eval_samples"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: no held-out scores), got {cfg.eval_every}")
        self.device = resolve_device(cfg.device)
        self.dist = D.init(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.fingerprint = data_fingerprint or getattr(dataset, "fingerprint", None)
        self.progress = progress
        self.batch_size = int(cfg.batch_size or model.config.batch_size)
        self.amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "none")
        if self.amp not in ("bf16", "none"):
            raise ValueError(f"amp must be 'bf16', 'none' or 'auto', got {cfg.amp!r}")

        # Different model noise per process; the same initial weights everywhere (broadcast).
        torch.manual_seed(mix_seed(cfg.seed, self.dist.rank, 2))
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        D.broadcast_module(self.model)
        self.optimizers = self.model.optimizers()
        self._apply_lr()
        self._params = {
            k: [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
            for k, opt in self.optimizers.items()
        }
        self._loss_fn = torch.compile(self.model.loss) if cfg.compile else self.model.loss
        self._transitions = _state_transitions(self.model, dataset, progress and self.dist.is_main)
        self.step = 0
        self._saved_step = -1
        self._writer = None
        self._sample_batch = None
        if cfg.sample_every and self.dist.is_main:
            self._sample_batch = fixed_batch(dataset, cfg.num_samples, cfg.seed)
        self._eval_items: list[dict[str, Tensor]] | None = None
        self._control_k: int | None = None
        if eval_data is not None and cfg.eval_every and self.dist.is_main:
            self._eval_items, self._control_k = held_out_items(self.model, eval_data, cfg.eval_sequences)

    # --- public API ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        """``RUN/checkpoints/last.pt``."""
        return self.out_dir / "checkpoints" / "last.pt"

    def resume(self, path: str | Path | None = None) -> int:
        """Restore weights, optimisers, RNG states and the step from a checkpoint.

        ``config.lr``, when set, replaces the restored optimisers' learning rates. Lines of
        ``metrics.jsonl`` past the checkpoint's step (logged by a run killed after it) are dropped.

        Args:
            path: defaults to ``RUN/checkpoints/last.pt``.

        Returns:
            The step the checkpoint was written at (training continues after it).
        """
        path = Path(path) if path is not None else self.checkpoint_path
        ckpt = read_resumable(path, self.model, self.fingerprint, self.optimizers)
        self.model.load_state_dict(ckpt["weights"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][key])
        self._apply_lr()  # after the restore, which brings back the old run's learning rates
        rngs = ckpt.get("rng") or []
        if self.dist.rank < len(rngs):
            set_rng_state(rngs[self.dist.rank])
        self.step = self._saved_step = int(ckpt["step"])
        if self.dist.is_main:
            trim_metrics(self.out_dir, self.step)
        return self.step

    def _apply_lr(self) -> None:
        """``config.lr`` into every optimiser's parameter groups (``None``: leave them)."""
        if self.config.lr is None:
            return
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.config.lr

    def fit(self, steps: int | None = None) -> TrainResult:
        """Train up to ``steps`` total steps (default ``config.steps``), from ``self.step``."""
        total = int(steps if steps is not None else self.config.steps)
        history: dict[int, dict[str, float]] = {}
        last_ckpt: Path | None = None
        batches = self._batches(self.step + 1)
        window: list[list[float]] = []
        metrics_sum: dict[str, float] = {}
        if self.dist.is_main:
            self._tb()  # opened before the first step, so purge_step is the checkpoint's (see _tb)
            if self.step == 0:  # once per run: a resume does not add a second hparams entry
                self._write_hparams()
        t0, bar = time.perf_counter(), self._progress_bar(total)
        try:
            while self.step < total:
                batch = to_device(self._with_transitions(next(batches), self.step + 1), self.device)
                values, metrics = self.train_step(batch)  # raises TrainingDivergedError
                self.step += 1
                history[self.step] = dict(
                    zip(value_names(self.optimizers)[: len(self.optimizers)], values, strict=False)
                )
                window.append(values)
                for k, v in metrics.items():
                    metrics_sum[k] = metrics_sum.get(k, 0.0) + float(v)
                if bar is not None:
                    bar.update(1)
                last = self.step == total
                scoring = self._eval_items is not None and (self.step % self.config.eval_every == 0 or last)
                saving = self.step % self.config.ckpt_every == 0 or last
                paused = time.perf_counter()
                if saving:  # what is saved runs on statistics of its weights, and so does the rest
                    self.recompute_bn()
                held_out: dict[str, float] = {}
                if scoring:  # on such statistics too, put back after: scoring changes no training
                    with bn_kept(self.model, restore=not saving):
                        if not saving:
                            self.recompute_bn()
                        held_out = self.held_out_metrics()
                t0 += time.perf_counter() - paused  # frames/s counts training time only
                if self.step % self.config.log_every == 0 or last:
                    elapsed = time.perf_counter() - t0
                    self._log(window, metrics_sum, elapsed, bar, held_out)
                    window, metrics_sum, t0 = [], {}, time.perf_counter()
                elif held_out:
                    self._write_scalars(held_out)
                if self.step % self.config.ckpt_every == 0 or last:
                    last_ckpt = self.save()
                if self.config.sample_every and (self.step % self.config.sample_every == 0 or last):
                    paused = time.perf_counter()
                    self.write_samples()
                    t0 += time.perf_counter() - paused
            D.wait_for_all()  # every process leaves the run together (see wait_for_all)
        finally:
            if bar is not None:
                bar.close()
            if self._writer is not None:
                self._writer.flush()
        return TrainResult(step=self.step, history=history, checkpoint=last_ckpt)

    def train_step(self, batch: dict[str, Tensor]) -> tuple[list[float], dict[str, float]]:
        """One optimiser step on a device batch (every optimiser steps once).

        Returns:
            ``(values, metrics)``: the losses (one per optimiser, mean over processes) then the
            gradient norms, and the model's metrics. Raises ``TrainingDivergedError`` (weights
            untouched) if any is NaN or infinite.
        """
        check_batch(batch, self.model.config.seq_len)
        self.model.train()
        with self._autocast():
            loss, metrics = self._loss_fn(batch)
        losses = loss_terms(loss, self.optimizers, type(self.model).__name__)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        keys = list(self.optimizers)
        for i, key in enumerate(keys):
            losses[key].backward(inputs=self._params[key], retain_graph=i < len(keys) - 1)
        norms = []
        for key in keys:
            D.average_gradients(self._params[key])
            norms.append(grad_norm(self._params[key], self.config.grad_clip, self.device))
        stats = torch.stack([losses[k].detach().float() for k in keys] + norms)
        if D.active():
            torch.distributed.all_reduce(stats)
            stats /= self.dist.world_size
        names = list(metrics)
        extra = [torch.as_tensor(metrics[k], dtype=torch.float32, device=stats.device) for k in names]
        both = torch.cat([stats, torch.stack(extra).flatten()]) if extra else stats
        flat = both.tolist()  # the one host sync per step
        values = flat[: len(stats)]
        if not all(math.isfinite(v) for v in values):
            self._diverged(values)
        for opt in self.optimizers.values():
            opt.step()
        return values, dict(zip(names, flat[len(stats) :], strict=True))

    def save(self, path: str | Path | None = None) -> Path:
        """Write a resumable checkpoint (rank 0; every process takes part in gathering RNGs)."""
        rngs = gathered_rng_states(self.dist)
        path = Path(path) if path is not None else self.checkpoint_path
        spoiled = self._nonfinite_state(path)
        if spoiled is not None:
            raise TrainingDivergedError(f"training diverged by step {self.step}: {spoiled}")
        if not self.dist.is_main:
            self._saved_step = self.step
            return path
        ckpt = checkpoint_dict(
            self.model,
            self.step,
            optimizers={k: opt.state_dict() for k, opt in self.optimizers.items()},
            rng=rngs,
            data=self.fingerprint,
            extra={"train_config": dataclasses.asdict(self.config), "world_size": self.dist.world_size},
        )
        try:
            atomic_save(ckpt, path, check_finite=False)  # checked above, on every process
        except CheckpointError as err:  # a full disk: the message says the previous file survived
            held = f"; {path.name} holds step {self._saved_step}" if self._saved_step >= 0 else ""
            raise CheckpointError(f"step {self.step} not saved: {err}{held}") from err
        self._saved_step = self.step
        keep = self.config.keep_every
        if keep and self.step % keep == 0 and path == self.checkpoint_path:
            atomic_save(ckpt, path.with_name(f"step_{self.step:07d}.pt"), check_finite=False)
        return path

    def _nonfinite_state(self, path: Path) -> str | None:
        """``checkpointing.nonfinite_state`` of the model and optimisers now (every process)."""
        return nonfinite_state(
            self.model, self.optimizers, self.device, path=path, step=self.step, saved_step=self._saved_step
        )

    def recompute_bn(self) -> int:
        """Recompute the model's BatchNorm statistics with its current weights over
        ``config.bn_batches`` training batches (``training/precise_bn.py``), drawn as a function
        of ``(seed, step, rank)``; returns the batches used (0: off, or no BatchNorm)."""
        n = self.config.bn_batches
        if not n or not batch_norms(self.model):
            return 0
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, self.step, self.dist.rank, 4))
        batches = drawn_batches(self.dataset, n, self.batch_size // self.dist.world_size, gen)
        with self._autocast():
            return recompute_bn(self.model, (to_device(b, self.device) for b in batches))

    def held_out_metrics(self) -> dict[str, float]:
        """Score the model now on the fixed held-out sequences (``training.held_out``); writes nothing.

        Returns:
            ``{"eval/psnr": ..., ...}``, plus ``control/*`` when the model has a state head and the
            held-out items record ``states``; ``{}`` without ``eval_data`` (or ``eval_every`` 0)
            and on every process but the main one.
        """
        if self._eval_items is None:
            return {}
        return held_out_scores(
            self.model,
            self._eval_items,
            self._control_k,
            samples=self.config.eval_samples,
            seed=self.config.seed,
            device=self.device,
        )

    def _write_hparams(self) -> None:
        """The model and train configs as TensorBoard hparams in ``tb/`` itself, at step 0."""
        train: dict[str, Any] = dataclasses.asdict(self.config)
        train.update(batch_size=self.batch_size, amp=self.amp, device=str(self.device))
        train["world_size"] = self.dist.world_size
        for key, opt in self.optimizers.items():  # the learning rate that runs, preset or --lr
            train["lr" if len(self.optimizers) == 1 else f"lr.{key}"] = float(opt.param_groups[0]["lr"])
        values: dict[str, Any] = {"model": self.model.name}
        values.update({f"model.{k}": v for k, v in self.model.config_dict().items()})
        values.update({f"train.{k}": v for k, v in train.items()})
        if self.fingerprint:
            values["data"] = self.fingerprint
        metrics = value_names(self.optimizers)[: len(self.optimizers)]
        if self._eval_items is not None:
            metrics += held_out_tags(self.model, bool(self._control_k))
        write_hparams(self._tb(), values, metrics)

    def write_samples(self) -> Path | None:
        """Roll the model out on a fixed batch; write a TensorBoard image and video and a GIF."""
        if self._sample_batch is None:
            return None
        gt, pred = predict(self.model, self._sample_batch, self.device, self.config.seed)
        return write_samples(self._tb(), self.out_dir, self.step, gt, pred, self.model.config.n_past)

    # --- pieces of the loop -------------------------------------------------------------------
    def _batches(self, start_step: int) -> Iterator[dict[str, Tensor]]:
        sampler = StepBatchSampler(
            len(self.dataset),
            self.batch_size,
            self.config.seed,
            start_step,
            self.dist.rank,
            self.dist.world_size,
        )
        loader = DataLoader(
            SeededItems(self.dataset),
            batch_sampler=sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps the global RNG untouched
            persistent_workers=self.config.num_workers > 0,
        )
        return iter(loader)

    def _with_transitions(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """``batch`` with ``transitions``: ``state_batch`` recorded steps for the state head's arm
        and contact models (``data/transitions.py``), a pure function of ``(seed, step, rank)``
        as the windows are, when the model has such a head and the data records states."""
        if self._transitions is None:
            return batch
        gen = torch.Generator().manual_seed(mix_seed(self.config.seed, step, self.dist.rank, 3))
        return {**batch, "transitions": self._transitions.sample(self.model.config.state_batch, gen)}

    def _autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _diverged(self, values: list[float]) -> None:
        names = value_names(self.optimizers)
        bad = ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=False) if not math.isfinite(v))
        step = self.step + 1
        where = "no checkpoint was written yet"
        if self.step > 0:
            # The weights are still those after the last good step (nothing stepped on NaN), but
            # the failed forward pass may have spoiled buffers (BatchNorm statistics), or a huge
            # finite step the weights: then nothing is saved and the previous checkpoint stays.
            if self._saved_step < self.step:
                spoiled = self._nonfinite_state(self.checkpoint_path)
                if spoiled is not None:
                    head = f"training diverged at step {step}: non-finite {bad}"
                    raise TrainingDivergedError(f"{head}; {spoiled}")
                self.save()
            where = f"last good checkpoint: {self.checkpoint_path} (step {self.step})"
        raise TrainingDivergedError(f"training diverged at step {step}: non-finite {bad}; {where}")

    def _log(
        self,
        window: list[list[float]],
        metrics_sum: dict[str, float],
        elapsed: float,
        bar,
        extra: Mapping[str, float] | None = None,
    ) -> None:
        """The window's mean losses, norms and metrics, learning rates, frames/s, plus ``extra``
        (this step's held-out scores), to TensorBoard and ``metrics.jsonl``."""
        n = len(window)
        means = [sum(col) / n for col in zip(*window, strict=False)]
        scalars = dict(zip(value_names(self.optimizers), means, strict=False))
        scalars.update({f"metrics/{k}": v / n for k, v in metrics_sum.items()})
        for key, opt in self.optimizers.items():
            scalars["lr" if len(self.optimizers) == 1 else f"lr/{key}"] = float(opt.param_groups[0]["lr"])
        seq_len = self.model.config.seq_len
        scalars["frames_per_s"] = n * self.batch_size * seq_len / max(elapsed, 1e-9)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k.startswith("loss")})
        self._write_scalars({**scalars, **(extra or {})})

    def _write_scalars(self, scalars: Mapping[str, float]) -> None:
        """One step's scalars to TensorBoard and as one line of ``metrics.jsonl`` (main process)."""
        if not self.dist.is_main:
            return
        write_scalars(self._tb(), self.out_dir, self.step, scalars)

    def _progress_bar(self, total: int):
        if not (self.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _tb(self):
        if self._writer is None:
            self._writer = open_writer(self.out_dir, self.step)  # purges what a killed run logged
        return self._writer


def _state_transitions(model: LatentDynamics, dataset: Dataset, progress: bool) -> RecordedTransitions | None:
    """Every recorded step of ``dataset`` when ``model``'s state head integrates the arm (and
    the objects) from the actions and ``state_batch > 0``; else ``None``. Reads every episode
    once (a progress bar with ``progress``)."""
    head = model.state_head
    if head is None or not getattr(head, "arm_from_actions", False) or not model.config.state_batch:
        return None
    if not hasattr(dataset, "whole_episode"):
        return None
    if not progress:
        return RecordedTransitions.of(dataset)
    from tqdm.auto import tqdm

    with tqdm(total=len(dataset), unit="ep", desc="recorded steps", dynamic_ncols=True) as bar:
        return RecordedTransitions.of(dataset, progress=bar.update)
