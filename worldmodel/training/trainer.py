"""A model-agnostic trainer: it calls ``model.loss(batch)`` and steps ``model.optimizers()``.

The loop, per step::

    batch = next(batches)                       # uint8 frames moved to the device, cast there
    loss, metrics = model.loss(batch)           # a scalar, or a dict keyed like optimizers()
    for key, opt in optimizers:                 # e.g. {"model"} or a GAN's {"g", "d"}
        loss[key].backward(inputs=params_of(opt))
    average gradients over processes (DDP), measure gradient norms, clip if asked
    one host sync: all losses and norms finite? else stop (TrainingDivergedError), naming the step
    every optimiser steps

Reproducibility: the batch of step ``s`` (sequence indices and the seeds of their random window
offsets) is a pure function of ``(seed, s)``, so the data order needs no saved iterator state; the
global RNG states (torch, CUDA, NumPy, Python) go into the checkpoint with the weights and the
optimiser states. On the CPU, a run interrupted at a checkpoint and resumed reproduces the
uninterrupted loss curve and weights exactly (tests/test_trainer.py).

Outputs in the run folder ``RUN``: ``checkpoints/last.pt`` (+ ``step_XXXXXXX.pt`` when
``keep_every`` is set), ``tb/`` (TensorBoard, below), ``samples/step_XXXXXXX.gif`` (context |
prediction | ground truth) and ``metrics.jsonl`` (the scalars of ``tb/``, one JSON line per step
that logged any: a log step's line also holds that step's held-out scores; a resume first drops
the lines a killed run logged after its checkpoint, so every step appears once).

What goes to ``tb/`` (one TensorBoard run per run folder; tests/test_tensorboard.py lists the tags):

- every ``log_every`` steps: ``loss`` and ``grad_norm`` (``loss/<key>``, ``grad_norm/<key>`` for
  several optimisers), ``lr`` (``lr/<key>``), ``frames_per_s`` (the time spent on held-out
  scores and samples not counted) and the model's ``metrics/<name>``;
- every ``sample_every`` steps and at the last: ``samples/grid`` (an image) and ``samples/video``
  (an animated GIF, TensorBoard's video format);
- every ``eval_every`` steps and at the last, given held-out data (``eval_data``; the CLI passes
  the dataset's test split): ``eval/psnr``, ``eval/ssim`` (best of ``eval_samples``, means over
  the future frames), ``eval/psnr_mean_of_n``, ``eval/ssim_mean_of_n``, the copy-last-frame
  baselines ``eval/psnr_copy_last``, ``eval/ssim_copy_last`` and, for likelihood models,
  ``eval/bpp``: ``training.evaluate.evaluate`` on the first ``eval_sequences`` held-out
  sequences (fixed for the run) with ``seed``, so the curve compares like with like. When the
  model has a state head and the held-out data records states, also the control diagnostics
  (``training.control.control_diagnostics`` on the same episodes, ``windows="moving"``, at
  ``k = min(EVAL_CONTROL_K, T - n_past)`` steps, ``EVAL_CONTROL_CANDIDATES`` other episodes'
  actions): ``control/ee_error_cm`` and ``control/ee_static_cm`` (dreamed end effector vs "stays
  put"), ``control/target_error_cm`` and ``control/target_static_cm`` (the pushed object) and
  ``control/rank_learned``, ``control/rank_pixels`` (rank score of the recorded actions: 1 best,
  0.5 chance); a value the episodes leave undefined (no target moved) is not logged. Only the
  main process evaluates, under its own generators: the training RNG streams (hence resumes)
  are unaffected;
- once, when a fresh run starts: the model config (``model.<field>``), the train config
  (``train.<field>``, resolved batch size, learning rate, amp and device) and the data
  fingerprint as TensorBoard hparams, with the loss and the held-out tags as its metrics, so the
  HParams tab shows each run's latest (final) values. They are written into ``tb/`` itself (not
  a timestamped subfolder as ``SummaryWriter.add_hparams`` makes), so a resumed run, which does
  not write them again, stays one row.

A resumed writer purges the events a killed run logged after its checkpoint (``purge_step``); a
fresh one purges whatever an earlier attempt left in ``tb/``.

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
import json
import math
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from worldmodel.data.batch import frames_to_uint8
from worldmodel.device import resolve_device
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.checkpoint import (
    atomic_save,
    check_finite,
    checkpoint_dict,
    first_nonfinite,
    read,
)
from worldmodel.errors import CheckpointError
from worldmodel.files import write_text_atomic
from worldmodel.training import distributed as D
from worldmodel.video import add_tensorboard_video, write_video


class TrainingDivergedError(RuntimeError):
    """A loss or gradient became NaN or infinite; the message names the step and the last good
    checkpoint."""


@dataclasses.dataclass
class TrainConfig:
    """How to train (the model's own settings live in its config)."""

    steps: int = 1000
    """Total optimiser steps (a resumed run continues up to this count)."""
    batch_size: int | None = None
    """Sequences per step over all processes; ``None`` takes the model config's ``batch_size``."""
    lr: float | None = None
    """Override the learning rate of every optimiser (``None``: the model's preset)."""
    log_every: int = 50
    """Steps between scalar logs (TensorBoard, metrics.jsonl, progress bar)."""
    ckpt_every: int = 1000
    """Steps between checkpoints (``last.pt``); the final step is always saved."""
    keep_every: int | None = None
    """Also keep ``step_XXXXXXX.pt`` every this many steps (``None``: only ``last.pt``)."""
    sample_every: int = 1000
    """Steps between sample grids/videos; 0 disables them."""
    num_samples: int = 4
    """Sequences in the sample grids."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    """Seed of the data order, window offsets, initial weights and model noise."""
    device: str = "auto"
    """``auto`` picks CUDA when present."""
    amp: str = "auto"
    """``bf16`` (autocast), ``none``, or ``auto`` (bf16 on CUDA, none on CPU)."""
    compile: bool = False
    """``torch.compile`` the loss function."""
    channels_last: bool = False
    """Put the model's conv weights in channels-last memory format (CUDA)."""
    grad_clip: float | None = None
    """Clip each optimiser's gradient norm (the SVG reference uses none)."""
    eval_every: int = 1000
    """Steps between held-out scores (``eval/*``, ``control/*``; also at the last step) when the
    trainer has ``eval_data``; 0 disables them."""
    eval_sequences: int = 16
    """Held-out sequences scored (the first ones of ``eval_data``, the same at every evaluation)."""
    eval_samples: int = 4
    """Samples per held-out sequence (best-of-N)."""


@dataclasses.dataclass
class TrainResult:
    """What a ``Trainer.fit`` call did."""

    step: int
    """Last completed step."""
    history: dict[int, dict[str, float]]
    """Per step of this call: every loss term, named like the optimisers (``loss/<key>``)."""
    checkpoint: Path | None
    """The last checkpoint written."""


EVAL_CONTROL_K = 10
"""Steps after the context at which the in-training control diagnostics are read (fewer when the
held-out episodes are shorter)."""
EVAL_CONTROL_CANDIDATES = 7
"""Other episodes' action sequences ranked against each recorded one during training."""

_EVAL_TAGS = (
    "eval/psnr",
    "eval/ssim",
    "eval/psnr_mean_of_n",
    "eval/ssim_mean_of_n",
    "eval/psnr_copy_last",
    "eval/ssim_copy_last",
)
_CONTROL_TAGS = (
    "control/ee_error_cm",
    "control/ee_static_cm",
    "control/target_error_cm",
    "control/target_static_cm",
    "control/rank_learned",
    "control/rank_pixels",
)


# --- data -----------------------------------------------------------------------------------------


def _mix(*values: int) -> int:
    """A 62-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0]) >> 2


class StepBatchSampler(Sampler):
    """Yields, for steps ``start, start+1, ...``, this process's share of the global batch as
    ``(index, item_seed)`` pairs.

    Indices run through seeded permutations of the dataset, epoch after epoch (no repeats within
    an epoch); everything is a function of ``(seed, step)``, so resuming needs no iterator state.
    Process ``rank`` of ``world`` takes the slice ``[rank * B / world, (rank + 1) * B / world)``.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("the training dataset is empty")
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world} processes")
        self.n, self.global_batch, self.seed, self.start_step = n, global_batch, seed, start_step
        self.per_rank = global_batch // world
        self.offset = rank * self.per_rank
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch))
            )
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The ``(index, item_seed)`` pairs of ``step`` (1-based) for this process."""
        first = (step - 1) * self.global_batch + self.offset
        idx = [int(self._perm(p // self.n)[p % self.n]) for p in range(first, first + self.per_rank)]
        seeds = [_mix(self.seed, step, self.offset + j, 1) for j in range(self.per_rank)]
        return list(zip(idx, seeds, strict=False))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class SeededItems(Dataset):
    """``dataset[index]`` with torch's global RNG seeded by ``item_seed`` (then restored), so random
    window offsets depend only on the item's seed, in the main process and in workers alike."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    # uint8 frames travel as uint8 (4x less than float32); the model casts on the device.
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# --- RNG state as plain tensors and numbers (loads with weights_only=True) -----------------------


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the trainer ----------------------------------------------------------------------------------


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
        eval_data: held-out sequences scored every ``config.eval_every`` steps (module
            docstring): items like ``dataset``'s with ``T >= seq_len`` frames from a fixed start
            (e.g. ``open_dataset(..., split="test", random_offset=False)``); the first
            ``seq_len`` frames are scored, and the control diagnostics read whole items, so pass
            whole episodes (``seq_len=`` the episode length) for them to see a push. The first
            ``config.eval_sequences`` items are read once, at construction (main process).
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
        torch.manual_seed(_mix(cfg.seed, self.dist.rank, 2))
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
        self.step = 0
        self._saved_step = -1
        self._writer = None
        self._sample_batch = self._fixed_batch() if cfg.sample_every and self.dist.is_main else None
        self._eval_items: list[dict[str, Tensor]] | None = None
        self._control_k: int | None = None
        if eval_data is not None and cfg.eval_every and self.dist.is_main:
            self._eval_items, self._control_k = self._held_out_items(eval_data)

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
        ckpt = read(path)
        if ckpt["config"] != self.model.config_dict():
            raise CheckpointError(
                f"{path}: the checkpoint's model config differs from the model being trained"
            )
        if self.fingerprint and ckpt.get("data") and ckpt["data"] != self.fingerprint:
            raise CheckpointError(
                f"{path}: trained on different data (fingerprint {ckpt['data']}, now {self.fingerprint})"
            )
        missing = sorted(set(self.optimizers) - set(ckpt.get("optimizers") or {}))
        if missing:
            raise CheckpointError(f"{path}: no optimizer state for {', '.join(missing)}; cannot resume")
        check_finite(ckpt, path, optimizers=True)
        self.model.load_state_dict(ckpt["weights"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][key])
        self._apply_lr()  # after the restore, which brings back the old run's learning rates
        rngs = ckpt.get("rng") or []
        if self.dist.rank < len(rngs):
            _set_rng_state(rngs[self.dist.rank])
        self.step = self._saved_step = int(ckpt["step"])
        if self.dist.is_main:
            self._trim_metrics(self.step)
        return self.step

    def _apply_lr(self) -> None:
        """``config.lr`` into every optimiser's parameter groups (``None``: leave them)."""
        if self.config.lr is None:
            return
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = self.config.lr

    def _trim_metrics(self, step: int) -> None:
        """Rewrite ``metrics.jsonl`` (atomically) without the lines past ``step`` and any torn last
        line, which a run killed after its last checkpoint leaves; the resumed run logs them anew."""
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        text = path.read_text(encoding="utf-8")
        kept = []
        for line in text.splitlines(keepends=True):
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            if line.endswith("\n") and isinstance(row, dict) and int(row.get("step", 0)) <= step:
                kept.append(line)
        if "".join(kept) != text:
            write_text_atomic(path, "".join(kept), fsync=True)

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
                batch = _to_device(next(batches), self.device)
                values, metrics = self.train_step(batch)  # raises TrainingDivergedError
                self.step += 1
                history[self.step] = dict(
                    zip(self._value_names()[: len(self.optimizers)], values, strict=False)
                )
                window.append(values)
                for k, v in metrics.items():
                    metrics_sum[k] = metrics_sum.get(k, 0.0) + float(v)
                if bar is not None:
                    bar.update(1)
                last = self.step == total
                held_out: dict[str, float] = {}
                if self._eval_items is not None and (self.step % self.config.eval_every == 0 or last):
                    paused = time.perf_counter()
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
        self._check_batch(batch)
        self.model.train()
        with self._autocast():
            loss, metrics = self._loss_fn(batch)
        losses = self._loss_terms(loss)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        keys = list(self.optimizers)
        for i, key in enumerate(keys):
            losses[key].backward(inputs=self._params[key], retain_graph=i < len(keys) - 1)
        norms = []
        for key in keys:
            D.average_gradients(self._params[key])
            norms.append(self._grad_norm(self._params[key]))
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
        rng = _rng_state()
        rngs = [rng]
        if D.active():
            rngs = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rngs, {k: v for k, v in rng.items() if k != "cuda"})
            rngs[self.dist.rank] = rng
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
        """``None`` when every weight, buffer and optimiser state is finite on every process, else
        why the state will not be saved to ``path`` and which checkpoint stays (one line)."""
        bad = first_nonfinite(
            {
                "weights": self.model.state_dict(),
                "optimizers": {k: opt.state_dict()["state"] for k, opt in self.optimizers.items()},
            }
        )
        flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
        if D.active():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not float(flag):
            return None
        what = f"{bad} holds NaN or infinite values" if bad else "another process's state is non-finite"
        if self._saved_step >= 0:
            kept = f"kept the previous checkpoint {path} (step {self._saved_step})"
        elif path.exists():
            kept = f"left {path} as it was"
        else:
            kept = "no checkpoint was written"
        return f"after step {self.step} {what}, so that state was not saved; {kept}"

    def held_out_metrics(self) -> dict[str, float]:
        """Score the model now on the fixed held-out sequences (module docstring); writes nothing.

        Returns:
            ``{"eval/psnr": ..., ...}``, plus ``control/*`` when the model has a state head and the
            held-out items record ``states``; ``{}`` without ``eval_data`` (or ``eval_every`` 0)
            and on every process but the main one.
        """
        if self._eval_items is None:
            return {}
        from worldmodel.training.evaluate import score_predictions

        cfg = self.model.config
        was_training = self.model.training
        self.model.eval()
        cuda = []
        if self.device.type == "cuda":
            cuda = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        try:
            # evaluate samples from its own seeded generators, but its DataLoader draws a seed from
            # the global RNG: the fork keeps the training streams (and so resumes) as without it.
            with torch.random.fork_rng(devices=cuda):
                report = score_predictions(
                    self.model,
                    self._eval_items,
                    n_past=cfg.n_past,
                    n_future=cfg.n_future,
                    samples=self.config.eval_samples,
                    video_sequences=0,
                    seed=self.config.seed,
                ).to_json()
                control = self._control_scores() if self._control_k else {}
        finally:
            self.model.train(was_training)
        out = {
            "eval/psnr": report["psnr_mean"],
            "eval/ssim": report["ssim_mean"],
            "eval/psnr_mean_of_n": report["mean_of_n"]["psnr_mean"],
            "eval/ssim_mean_of_n": report["mean_of_n"]["ssim_mean"],
            "eval/psnr_copy_last": report["baseline"]["psnr_mean"],
            "eval/ssim_copy_last": report["baseline"]["ssim_mean"],
        }
        if "bpp_mean" in report:
            out["eval/bpp"] = report["bpp_mean"]
        return {**out, **control}

    def _control_scores(self) -> dict[str, float]:
        """``control/*`` of ``control_diagnostics`` on the held-out items (undefined ones left out)."""
        from worldmodel.training.control import control_diagnostics

        k = self._control_k
        result = control_diagnostics(
            self.model,
            self._eval_items,
            ks=(k,),
            candidates=EVAL_CONTROL_CANDIDATES,
            seed=self.config.seed,
            context=self.model.config.n_past,
            windows="moving",
        )
        row = result["per_k"][str(k)]
        names = ("ee_error_cm", "ee_static_cm", "target_error_cm", "target_static_cm")
        out = {f"control/{n}": row[n] for n in names}
        for name, scores in result["ranking"].items():
            out[f"control/rank_{name}"] = scores["rank_score"]
        return {tag: float(v) for tag, v in out.items() if v is not None}

    def _held_out_items(self, data: Dataset) -> tuple[list[dict[str, Tensor]], int | None]:
        """The first ``eval_sequences`` items of ``data``, and the ``k`` of the control diagnostics
        (``None``: the model has no state head or the items no ``states``)."""
        n = min(self.config.eval_sequences, len(data))
        if n < 1:
            raise ValueError("eval_data: the held-out dataset is empty")
        items = [data[i] for i in range(n)]
        if not all("frames" in it and "actions" in it for it in items):
            raise ValueError("eval_data: held-out items need 'frames' and 'actions'")
        length = min(min(len(it["frames"]), len(it["actions"])) for it in items)
        cfg = self.model.config
        if length < cfg.seq_len:
            raise ValueError(
                f"eval_data: held-out items have {length} frames, the model scores n_past + n_future "
                f"= {cfg.seq_len}"
            )
        control = getattr(self.model, "state_head", None) is not None and all("states" in it for it in items)
        return items, min(EVAL_CONTROL_K, length - cfg.n_past) if control else None

    def _write_hparams(self) -> None:
        """The model and train configs as TensorBoard hparams in ``tb/`` itself, at step 0."""
        from torch.utils.tensorboard.summary import hparams

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
        metrics = self._value_names()[: len(self.optimizers)]
        if self._eval_items is not None:
            metrics += [*_EVAL_TAGS, *(["eval/bpp"] if getattr(self.model, "bits_per_dim", None) else [])]
            if self._control_k:
                metrics += list(_CONTROL_TAGS)
        plain = {k: hparam_value(v) for k, v in values.items() if v is not None}
        # The HParams tab reads each metric's latest scalar of this run: the values here are unused.
        file_writer = self._tb()._get_file_writer()
        for summary in hparams(plain, dict.fromkeys(metrics, 0.0)):
            file_writer.add_summary(summary, 0)
        self._writer.flush()  # on disk now: a run killed soon after is resumed without rewriting them

    def write_samples(self) -> Path | None:
        """Roll the model out on a fixed batch; write a TensorBoard image and video and a GIF."""
        if self._sample_batch is None:
            return None
        gt, pred = self._predict(self._sample_batch)
        n_past = self.model.config.n_past
        frames = _side_by_side(pred, gt, n_past)  # (T, H', W', 3) uint8
        writer = self._tb()
        writer.add_image("samples/grid", _strip(pred, gt, n_past), self.step, dataformats="HWC")
        add_tensorboard_video(writer, "samples/video", frames, self.step, fps=4)
        path = self.out_dir / "samples" / f"step_{self.step:07d}.gif"
        write_video(path, frames.numpy(), fps=4)
        return path

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

    def _check_batch(self, batch: Mapping[str, Tensor]) -> None:
        seq_len = self.model.config.seq_len
        frames = batch.get("frames")
        if frames is None or frames.dim() != 5 or frames.shape[1] != seq_len:
            shape = None if frames is None else tuple(frames.shape)
            raise ValueError(
                f"training batches need frames (B, {seq_len}, H, W, 3) (seq_len = n_past + n_future), "
                f"got {shape}"
            )

    def _autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss_terms(self, loss: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(loss, Mapping):
            terms = dict(loss)
        elif len(self.optimizers) == 1:
            terms = {next(iter(self.optimizers)): loss}
        else:
            raise ValueError(
                f"{type(self.model).__name__}.loss returned one loss for optimizers {list(self.optimizers)}"
            )
        if set(terms) != set(self.optimizers):
            raise ValueError(f"loss keys {sorted(terms)} do not match optimizers {sorted(self.optimizers)}")
        return terms

    def _grad_norm(self, params: list[torch.nn.Parameter]) -> Tensor:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        if self.config.grad_clip is not None:
            return torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip).float()
        return torch.nn.utils.get_total_norm(grads).float()

    def _value_names(self) -> list[str]:
        keys = list(self.optimizers)
        loss_names = ["loss"] if keys == ["model"] else [f"loss/{k}" for k in keys]
        norm_names = ["grad_norm"] if keys == ["model"] else [f"grad_norm/{k}" for k in keys]
        return loss_names + norm_names

    def _diverged(self, values: list[float]) -> None:
        bad = ", ".join(
            f"{n}={v}" for n, v in zip(self._value_names(), values, strict=False) if not math.isfinite(v)
        )
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
        scalars = dict(zip(self._value_names(), means, strict=False))
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
        writer = self._tb()
        for name, value in scalars.items():
            writer.add_scalar(name, value, self.step)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **scalars}) + "\n")

    def _progress_bar(self, total: int):
        if not (self.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _tb(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard drops the events of earlier files at and after purge_step. A resumed run
            # continues after its checkpoint's step, so what a killed run logged past it goes (the
            # checkpoint's own step stays: it is not logged again); a fresh run drops everything
            # an earlier attempt left, its hparams included.
            purge = self.step + 1 if self.step else 0
            tb = self.out_dir / "tb"
            if not self.step:  # a fresh run: an earlier attempt's curves are obsolete
                # (purge_step alone is not enough here: TensorBoard applies it in file-name order,
                # and the writers' counters sort as text, "…10" before "…9")
                for old in tb.glob("events.out.tfevents.*"):
                    old.unlink()
            self._writer = SummaryWriter(str(tb), purge_step=purge)
        return self._writer

    # --- samples ------------------------------------------------------------------------------
    def _fixed_batch(self) -> dict[str, Tensor]:
        n = min(self.config.num_samples, len(self.dataset))
        items = [SeededItems(self.dataset)[(i, _mix(self.config.seed, i, 3))] for i in range(n)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    @torch.no_grad()
    def _predict(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Ground truth and (context + predicted) frames, uint8 ``(N, T, H, W, 3)`` on the CPU."""
        cfg = self.model.config
        frames = batch["frames"].to(self.device)
        actions = batch["actions"].to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            gen = torch.Generator(self.device).manual_seed(self.config.seed)
            state = self.model.initial(frames[:, : cfg.n_past], actions[:, : cfg.n_past - 1])
            _, pred = self.model.rollout(state, actions[:, cfg.n_past - 1 : -1], generator=gen)
        finally:
            self.model.train(was_training)
        pred = torch.cat([frames[:, : cfg.n_past], frames_to_uint8(pred.float())], dim=1)
        return frames.cpu(), pred.cpu()


# --- sample pictures ------------------------------------------------------------------------------

_GREEN = torch.tensor([0, 200, 0], dtype=torch.uint8)
_RED = torch.tensor([220, 0, 0], dtype=torch.uint8)


def _framed(frames: Tensor, n_past: int, predicted: bool) -> Tensor:
    """Pad every frame (N, T, H, W, 3) with a 1-pixel border: green for ground truth and context,
    red for predicted frames."""
    n, t, h, w, _ = frames.shape
    out = torch.empty(n, t, h + 2, w + 2, 3, dtype=torch.uint8)
    out[:] = _GREEN
    if predicted:
        out[:, n_past:] = _RED
    out[:, :, 1:-1, 1:-1] = frames
    return out


def _side_by_side(pred: Tensor, gt: Tensor, n_past: int) -> Tensor:
    """Video frames (T, N*H', 2*W', 3): each row is one sequence, prediction | ground truth."""
    pairs = torch.cat([_framed(pred, n_past, True), _framed(gt, n_past, False)], dim=3)  # (N, T, H', 2W', 3)
    return pairs.permute(1, 0, 2, 3, 4).flatten(1, 2)


def _strip(pred: Tensor, gt: Tensor, n_past: int) -> np.ndarray:
    """One image (2*N*H', T*W', 3): per sequence, a row of context + prediction over a row of
    ground truth."""
    rows = torch.stack([_framed(pred, n_past, True), _framed(gt, n_past, False)], dim=1).flatten(0, 1)
    return rows.permute(0, 2, 1, 3, 4).flatten(0, 1).flatten(1, 2).numpy()  # (2N*H', T*W', 3)


def hparam_value(value: Any) -> int | float | str:
    """A config value as TensorBoard hparams take it: numbers and text as they are, booleans as
    ``true``/``false``, sequences as ``--set`` writes them (``0.5,0.999``), anything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(hparam_value(v)) for v in value)
    return str(value)
