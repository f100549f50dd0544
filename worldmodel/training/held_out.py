"""Held-out scores during training: ``eval/*`` and ``control/*`` on fixed held-out sequences.

Every ``eval_every`` steps and at the last, given held-out data (the trainer's ``eval_data``; the
CLI passes the dataset's test split): ``eval/psnr``, ``eval/ssim`` (best of ``eval_samples``,
means over the future frames), ``eval/psnr_mean_of_n``, ``eval/ssim_mean_of_n``, the
copy-last-frame baselines ``eval/psnr_copy_last``, ``eval/ssim_copy_last`` and, for likelihood
models, ``eval/bpp``: ``training.evaluate.evaluate`` on the first ``eval_sequences`` held-out
sequences (fixed for the run) with ``seed``, so the curve compares like with like. When the model
has a state head and the held-out data records states, also the control diagnostics
(``training.control.control_diagnostics`` on the same episodes, ``windows="moving"``, at
``k = min(EVAL_CONTROL_K, T - n_past)`` steps, ``EVAL_CONTROL_CANDIDATES`` other episodes'
actions): ``control/ee_error_cm`` and ``control/ee_static_cm`` (dreamed end effector vs "stays
put"), ``control/target_error_cm`` and ``control/target_static_cm`` (the pushed object) and
``control/rank_learned``, ``control/rank_pixels`` (rank score of the recorded actions: 1 best, 0.5
chance); a value the episodes leave undefined (no target moved) is not logged. Only the main
process evaluates, under its own generators: the training RNG streams (hence resumes) are
unaffected.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from worldmodel.dynamics.base import LatentDynamics

EVAL_CONTROL_K = 10
"""Steps after the context at which the in-training control diagnostics are read (fewer when the
held-out episodes are shorter)."""
EVAL_CONTROL_CANDIDATES = 7
"""Other episodes' action sequences ranked against each recorded one during training."""

EVAL_TAGS = (
    "eval/psnr",
    "eval/ssim",
    "eval/psnr_mean_of_n",
    "eval/ssim_mean_of_n",
    "eval/psnr_copy_last",
    "eval/ssim_copy_last",
)
CONTROL_TAGS = (
    "control/ee_error_cm",
    "control/ee_static_cm",
    "control/target_error_cm",
    "control/target_static_cm",
    "control/rank_learned",
    "control/rank_pixels",
)


def held_out_items(
    model: LatentDynamics, data: Dataset, n: int
) -> tuple[list[dict[str, Tensor]], int | None]:
    """The first ``n`` items of ``data``, and the ``k`` of the control diagnostics (``None``: the
    model has no state head or the items no ``states``)."""
    n = min(n, len(data))
    if n < 1:
        raise ValueError("eval_data: the held-out dataset is empty")
    items = [data[i] for i in range(n)]
    if not all("frames" in it and "actions" in it for it in items):
        raise ValueError("eval_data: held-out items need 'frames' and 'actions'")
    length = min(min(len(it["frames"]), len(it["actions"])) for it in items)
    cfg = model.config
    if length < cfg.seq_len:
        raise ValueError(
            f"eval_data: held-out items have {length} frames, the model scores n_past + n_future "
            f"= {cfg.seq_len}"
        )
    control = getattr(model, "state_head", None) is not None and all("states" in it for it in items)
    return items, min(EVAL_CONTROL_K, length - cfg.n_past) if control else None


def held_out_tags(model: LatentDynamics, control: bool) -> list[str]:
    """The tags ``held_out_scores`` can log for ``model`` (with the control diagnostics or not)."""
    tags = [*EVAL_TAGS, *(["eval/bpp"] if getattr(model, "bits_per_dim", None) else [])]
    return tags + list(CONTROL_TAGS) if control else tags


def held_out_scores(
    model: LatentDynamics,
    items: list[dict[str, Tensor]],
    control_k: int | None,
    *,
    samples: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Score ``model`` now on the held-out ``items`` (module docstring); writes nothing.

    Returns:
        ``{"eval/psnr": ..., ...}``, plus ``control/*`` when ``control_k`` is given.
    """
    from worldmodel.training.evaluate import score_predictions

    cfg = model.config
    was_training = model.training
    model.eval()
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        # evaluate samples from its own seeded generators, but its DataLoader draws a seed from
        # the global RNG: the fork keeps the training streams (and so resumes) as without it.
        with torch.random.fork_rng(devices=cuda):
            report = score_predictions(
                model,
                items,
                n_past=cfg.n_past,
                n_future=cfg.n_future,
                samples=samples,
                video_sequences=0,
                seed=seed,
            ).to_json()
            control = _control_scores(model, items, control_k, seed) if control_k else {}
    finally:
        model.train(was_training)
    return {**eval_scores(report), **control}


def eval_scores(report: dict[str, Any]) -> dict[str, float]:
    """The ``eval/*`` tags of an ``evaluate`` report (``score_predictions(...).to_json()``)."""
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
    return out


def _control_scores(
    model: LatentDynamics, items: list[dict[str, Tensor]], k: int, seed: int
) -> dict[str, float]:
    """``control/*`` of ``control_diagnostics`` on the held-out items (undefined ones left out)."""
    from worldmodel.training.control import control_diagnostics

    result = control_diagnostics(
        model,
        items,
        ks=(k,),
        candidates=EVAL_CONTROL_CANDIDATES,
        seed=seed,
        context=model.config.n_past,
        windows="moving",
    )
    return control_scores(result, k)


def control_scores(result: dict[str, Any], k: int) -> dict[str, float]:
    """The ``control/*`` tags of a ``control_diagnostics`` result read at ``k`` steps (values the
    episodes leave undefined are left out)."""
    row = result["per_k"][str(k)]
    names = ("ee_error_cm", "ee_static_cm", "target_error_cm", "target_static_cm")
    out = {f"control/{n}": row[n] for n in names}
    for name, scores in result["ranking"].items():
        out[f"control/rank_{name}"] = scores["rank_score"]
    return {tag: float(v) for tag, v in out.items() if v is not None}
