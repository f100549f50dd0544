"""Control diagnostics: does the model's dream follow the actions, and does the planner's objective
prefer what was actually done?

PSNR and SSIM (``evaluate.py``) say how the frames look; a planner needs two other things. First,
that the dreamed state follows the actions: the arm goes where the actions send it and the
object it pushes moves with it. Second, that the objective the planner scores candidates with
ranks the action sequence that really reached a goal above other plausible sequences. This
module measures both on held-out recorded episodes, with the model run exactly as the planner
and the dream run it (the inference copy, sampled prior, features only).

Protocol, per episode (dataset items of at least ``context + max(ks)`` steps). Windows start at
step 0 (``windows="start"``) or, with ``windows="moving"`` (what ``worldmodel eval`` uses), where
the episode's objects move most: the start ``s`` that maximises the largest xy displacement of
any object from frame ``s + context - 1`` to frame ``s + context - 1 + rank_k``. The scripted
pushes of collected data begin some 15 steps in, so windows from step 0 rarely see an object move
by step 10; choosing the window by the recorded objects is fair to every model (it reads no
prediction) and puts the diagnostics where the task is.

1. ``initial`` on the first ``context`` frames and the actions between them, then ``rollout``
   along the recorded actions ``a_{c-1} ..`` (``c = context``; ``a_t`` drives ``x_t`` to
   ``x_{t+1}``), sampling the prior from one seeded generator. Step ``k`` is the dreamed state of
   frame ``c - 1 + k``, ``k`` steps after the last context frame.
2. State errors at each ``k`` in ``ks``, read off the features by the state head (the model's
   ``state_head`` or a separately trained ``ObjectHead``):

   - ``ee_error_cm``: mean 3-D distance between the dreamed and the recorded end effector;
     ``ee_static_cm``: the same for "the arm stays put" (its position at the last context frame).
   - ``object_error_cm`` / ``object_static_cm``: mean xy distance (the tasks' distance) between
     the head's answer for an object (queried with its position at the last context frame) and
     its recorded position, over every (episode, present object) that moved more than
     ``moved_threshold`` (xy) since the last context frame; ``objects_moved`` counts them. The
     static baseline is "the object stays where it was", so only objects that moved are scored:
     on still ones a head that never predicts motion is perfect.
   - ``target_*``: the same for each episode's target, the object that moved most (xy) by step
     ``k``, over the episodes whose target moved more than ``moved_threshold``
     (``target_episodes``).
   - ``*_ratio``: error over static baseline (below 1: the dream beats "nothing moves").

3. Action ranking at step ``rank_k`` (``ranking``), the recorded-goal task of
   ``worldmodel.envs.task``: for each episode whose target moved, the goal is the target's
   recorded position ``rank_k`` steps after the context, the head's query its position at the
   last context frame, and the goal image the recorded frame at that step. Candidates: the
   episode's own ``rank_k`` recorded actions and those of up to ``candidates`` other episodes
   over the same window (drawn with a seeded generator), scored by the planner's objectives on
   the final step (``frames="last"``) with common random numbers: ``learned``
   (``LearnedReward(head, task="recorded-goal")``, needs a head) and ``pixels``
   (``GoalImage("pixels")``, needs none). Per objective: ``rank_score``, the mean over episodes
   of the fraction of other candidates the recorded sequence beats (ties count one half, so 1.0
   is always best and 0.5 is chance, also for a model that ignores its actions and ties
   everything), ``top1``, the share of episodes where it is the best (a tie for best with ``t``
   others counts ``1 / (t + 1)``), and ``episodes``. Data without ``objects`` (BAIR) has no
   target, so nothing is ranked there (``episodes`` 0).

The result is plain JSON: numbers, lists, dicts, and ``None`` where a value is undefined (no moved
object, a zero baseline, no head); ``json.dumps`` would write NaN, which is not JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.heads import arm_along, objects_along
from worldmodel.training.control_metrics import check_args, moved_target, num, state_errors

__all__ = ["control_diagnostics"]

NO_HEAD = (
    "has no state head and no head was passed; train with --set state_head=true or run "
    "`worldmodel train-head`"
)


@dataclasses.dataclass(frozen=True)
class _Run:
    """How the dreams are sampled and batched (shared by the state errors and the ranking)."""

    temperature: float
    seed: int
    batch_size: int


@torch.no_grad()
def control_diagnostics(
    model: LatentDynamics,
    items: Sequence[dict[str, Tensor]],
    *,
    head: nn.Module | None = None,
    ks: Sequence[int] = (5, 10, 20),
    candidates: int = 31,
    rank_k: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    context: int | None = None,
    moved_threshold: float = 0.02,
    state_metrics: bool = True,
    reach_weight: float | None = None,
    batch_size: int = 64,
    max_rollouts: int = 512,
    windows: str = "start",
) -> dict[str, Any]:
    """State errors along open-loop dreams and the ranking of recorded actions (module docstring).

    Args:
        model: the world model (any device, left unchanged); rollouts run on ``for_inference(model)``.
        items: held-out dataset items (a list or a ``Dataset``): ``frames`` uint8 ``(T, H, W, 3)``,
            ``actions`` ``(T, A)``, ``states`` ``(T, >=3)`` (the end effector, metres) and, for the
            object errors and the ranking, ``objects`` ``(T, K, 3)`` (NaN rows: absent);
            ``T >= context + max(ks, rank_k)``. Windows are read from step 0.
        head: an ``ObjectHead`` (or anything with its ``end_effector`` / ``__call__`` interface);
            default ``model.state_head``.
        ks: steps after the last context frame at which the state errors are reported.
        candidates: other episodes' action sequences ranked against each recorded one (fewer when
            there are fewer other episodes).
        rank_k: horizon of the ranking (default ``max(ks)``: in collected data the scripted pushes
            start some 15 steps in, so windows from step 0 rarely see a target move by step 10).
        seed: seeds the rollouts, the choice of candidates and the objectives' noise.
        temperature: the prior's sampling temperature (0: its mean, no sampling).
        context: context frames (default ``model.config.n_past``).
        moved_threshold: an object counts as moved when its xy position changed by more than this
            (metres) since the last context frame.
        state_metrics: report the head's state errors and the learned ranking; ``False`` runs the
            pixel ranking only (no head or ``states`` needed).
        reach_weight: the learned objective's shaping weight (``None``: the task's).
        batch_size: episodes per rollout and per objective call.
        max_rollouts: most rollouts per model call inside the objectives.
        windows: ``"start"`` (from step 0) or ``"moving"`` (where the objects move most; see the
            module docstring).

    Returns:
        ``{"ks", "context", "rank_k", "episodes", "candidates" (other sequences per ranked
        episode), "temperature", "seed", "moved_threshold_cm", "per_k": {"5": {...}, ...},
        "ranking": {"learned": {...}, "pixels": {...}}}``; ``per_k`` is empty and ``learned``
        absent when ``state_metrics`` is false. ``ranking`` holds one block per objective only.

    Raises:
        ValueError: bad ``ks``, ``rank_k``, ``candidates``, ``context``, ``moved_threshold`` or
            ``temperature``; empty ``items`` or items too short for the windows; ``state_metrics``
            with items that have no ``states`` or a model without a head.
    """
    from worldmodel.dynamics.inference import for_inference

    ks, context, rank_k = check_args(model, ks, candidates, rank_k, context, moved_threshold, temperature)
    if batch_size < 1 or max_rollouts < 1:
        raise ValueError(f"batch_size and max_rollouts must be >= 1, got {batch_size}, {max_rollouts}")
    head = _resolve_head(model, head) if state_metrics else None
    if windows not in ("start", "moving"):
        raise ValueError(f"windows must be 'start' or 'moving', got {windows!r}")
    length = context + max(max(ks), rank_k)
    ep = _episodes(
        items, length, context, with_states=head is not None, moving=(windows == "moving") and rank_k
    )

    fast = for_inference(model)
    reader = None if head is None else copy.deepcopy(head).to(fast.device).eval()
    run = _Run(temperature=float(temperature), seed=int(seed), batch_size=int(batch_size))
    per_k = {} if reader is None else _dream_errors(fast, reader, ep, ks, context, moved_threshold, run)
    ranking = _ranking(
        fast, reader, ep, context, rank_k, candidates, moved_threshold, reach_weight, max_rollouts, run
    )
    return {
        "ks": list(ks),
        "context": context,
        "rank_k": rank_k,
        "episodes": len(ep["frames"]),
        "candidates": min(candidates, len(ep["frames"]) - 1),
        "temperature": float(temperature),
        "seed": int(seed),
        "moved_threshold_cm": 100.0 * float(moved_threshold),
        "windows": windows,
        "per_k": per_k,
        "ranking": ranking,
    }


def _resolve_head(model: LatentDynamics, head: nn.Module | None) -> nn.Module:
    """``head``, else the model's ``state_head``; ``ValueError`` naming ``head`` if neither fits."""
    head = model.state_head if head is None else head
    if head is None:
        raise ValueError(f"head: {type(model).__name__} {NO_HEAD}")
    fd = getattr(head, "feature_dim", None)
    if fd is not None and fd != model.feature_dim:
        raise ValueError(f"head: it reads {fd} features, the model gives {model.feature_dim}")
    return head


def _episodes(
    items: Sequence[dict[str, Tensor]], window: int, context: int, *, with_states: bool, moving: int = 0
) -> dict[str, Tensor | None]:
    """``window`` steps of every item, stacked: ``frames`` uint8 ``(n, W, H, W, 3)``, ``actions``
    ``(n, W, A)``, ``states`` ``(n, W, 3)`` (when ``with_states``) and ``objects`` ``(n, W, K, 3)``
    (``None`` unless every item has them). From step 0, or with ``moving = k > 0`` from the start
    where the objects move most over ``k`` steps after the context (``_moving_start``)."""
    items = [items[i] for i in range(len(items))]
    if not items:
        raise ValueError("items: no episodes to diagnose")
    for i, it in enumerate(items):
        if "frames" not in it or "actions" not in it:
            raise ValueError(f"items: episode {i} lacks frames or actions")
        length = min(len(it["frames"]), len(it["actions"]))
        if length < window:
            raise ValueError(
                f"ks: windows of context + max(ks) = {context} + {window - context} = {window} steps, "
                f"but episode {i} of items has {length}"
            )
    if with_states and not all("states" in it for it in items):
        raise ValueError(
            "items: no 'states' (recorded end-effector positions) in the data; the state "
            "diagnostics need them (state_metrics=False runs the pixel ranking alone)"
        )
    has_objects = all("objects" in it for it in items)
    starts = [
        _moving_start(it["objects"].float(), window, context, moving) if moving and has_objects else 0
        for it in items
    ]
    cut = [slice(s, s + window) for s in starts]
    return {
        "frames": torch.stack([it["frames"][c] for it, c in zip(items, cut, strict=True)]),
        "actions": torch.stack([it["actions"][c] for it, c in zip(items, cut, strict=True)]).float(),
        "states": torch.stack([it["states"][c, :3] for it, c in zip(items, cut, strict=True)]).float()
        if with_states
        else None,
        "objects": torch.stack([it["objects"][c] for it, c in zip(items, cut, strict=True)]).float()
        if has_objects
        else None,
    }


def _moving_start(objects: Tensor, window: int, context: int, k: int) -> int:
    """The window start ``s`` whose largest object displacement (xy) from frame ``s + context - 1``
    to ``s + context - 1 + k`` is largest (the earliest on ties); ``objects`` ``(T, K, 3)``."""
    last = objects.shape[0] - window
    a = objects[context - 1 : context - 1 + last + 1, :, :2]
    b = objects[context - 1 + k : context - 1 + k + last + 1, :, :2]
    moved = torch.nan_to_num((b - a).norm(dim=-1), nan=0.0).amax(dim=-1)  # (last + 1,)
    best = moved >= moved.max() - 1e-6  # float rounding must not pick a later window of the same motion
    return int(torch.nonzero(best)[0])


def _unpack(ep: dict[str, Tensor | None], fast: LatentDynamics):
    """``frames``, ``actions``, ``objects``, the episode count and the model's device."""
    return ep["frames"], ep["actions"], ep["objects"], len(ep["frames"]), fast.device


def _dream_errors(
    fast: LatentDynamics,
    reader: nn.Module,
    ep: dict[str, Tensor | None],
    ks: tuple[int, ...],
    c: int,
    threshold: float,
    run: _Run,
) -> dict[str, Any]:
    """``per_k``: the head's readings of the dreams along the recorded actions vs the records."""
    temperature, seed, batch_size = run.temperature, run.seed, run.batch_size
    frames, actions, objects, n, dev = _unpack(ep, fast)
    has_ee = bool(getattr(reader, "has_end_effector", True))
    steps = (torch.tensor(ks) - 1).to(dev)
    ee_pred = torch.full((n, len(ks), 3), math.nan)
    obj_pred = None if objects is None else torch.full((n, len(ks), objects.shape[2], 3), math.nan)
    gen = torch.Generator(dev).manual_seed(seed)
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        b = j - i
        state = fast.initial(frames[i:j, :c].to(dev), actions[i:j, : c - 1].to(dev))
        _, feats = fast.rollout(
            state,
            actions[i:j, c - 1 : c - 1 + max(ks)].to(dev),
            sample=temperature > 0,
            temperature=temperature,
            generator=gen,
            decode=False,
        )
        f = feats[:, steps].float()  # (b, len(ks), F): the states k steps after the context
        if has_ee:  # from the arm's start (proprioception), for heads that read it relative to it
            start = ep["states"][i:j, c - 1].to(dev)
            if getattr(reader, "arm_from_actions", False):  # integrated along every recorded action
                acts = actions[i:j, c - 1 : c - 1 + max(ks)].to(dev)
                previous = actions[i:j, c - 2].to(dev) if c >= 2 else torch.zeros_like(acts[:, 0])
                ee_pred[i:j] = reader.arm_rollout(start, previous, acts)[:, steps].cpu()
            else:
                ee_pred[i:j] = arm_along(reader, f, start).cpu()
        if obj_pred is not None and getattr(reader, "objects_from_actions", False):
            acts = actions[i:j, c - 1 : c - 1 + max(ks)].to(dev)  # from the records where it starts
            previous = actions[i:j, c - 2].to(dev) if c >= 2 else torch.zeros_like(acts[:, 0])
            start, query = ep["states"][i:j, c - 1].to(dev), objects[i:j, c - 1].to(dev)
            obj_pred[i:j] = objects_along(reader, start, query, previous, acts)[:, steps].cpu()
        elif obj_pred is not None:
            kk = objects.shape[2]
            query = objects[i:j, c - 1]  # (b, K, 3): every object where the dream starts
            present = torch.isfinite(query).all(-1)
            q = query.nan_to_num(0.0)[:, None].expand(b, len(ks), kk, 3).to(dev)
            fk = f[:, :, None].expand(-1, -1, kk, -1)
            pos = reader(fk.flatten(0, 2), q.flatten(0, 2)).view(b, len(ks), kk, 3).cpu()
            obj_pred[i:j] = torch.where(present[:, None, :, None], pos, math.nan)
    return {
        str(k): state_errors(
            ee_pred[:, i] if has_ee else None,
            None if obj_pred is None else obj_pred[:, i],
            ep["states"],
            objects,
            c,
            k,
            threshold,
        )
        for i, k in enumerate(ks)
    }


def _ranking(
    fast: LatentDynamics,
    reader: nn.Module | None,
    ep: dict[str, Tensor | None],
    c: int,
    k: int,
    candidates: int,
    threshold: float,
    reach_weight: float | None,
    max_rollouts: int,
    run: _Run,
) -> dict[str, Any]:
    """``ranking``: the recorded actions among other episodes', by the planner's objectives."""
    from worldmodel.planning.objectives import GoalImage, LearnedReward

    temperature, seed, batch_size = run.temperature, run.seed, run.batch_size
    frames, actions, objects, n, dev = _unpack(ep, fast)
    m = min(candidates, n - 1)
    out: dict[str, Any] = {}
    if objects is not None and m > 0:
        target, moved = moved_target(objects, c, k, threshold)
        eligible = torch.nonzero(moved).flatten()
    else:
        target, eligible = torch.zeros(n, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    pick = torch.Generator().manual_seed(seed + 1)
    others = [_others(int(e), n, m, pick) for e in eligible]
    options = {
        "frames": "last",
        "sample": temperature > 0,
        "temperature": temperature,
        "max_batch": max_rollouts,
    }
    objectives = {}
    if reader is not None:
        objectives["learned"] = LearnedReward(
            reader, task="recorded-goal", reach_weight=reach_weight, **options
        )
    objectives["pixels"] = GoalImage("pixels", **options)
    gens = {name: torch.Generator(dev).manual_seed(seed + 2) for name in objectives}  # the same noise
    scores: dict[str, list[Tensor]] = {name: [] for name in objectives}
    for i in range(0, len(eligible), batch_size):
        rows = eligible[i : i + batch_size]
        cand = torch.cat([rows[:, None], torch.stack(others[i : i + batch_size])], 1)  # recorded first
        state = fast.initial(frames[rows, :c].to(dev), actions[rows, : c - 1].to(dev))  # once per chunk
        task = _task(objects, frames, target, rows, c, k)
        if ep["states"] is not None:
            task.ee_start = ep["states"][rows, c - 1]
            last = actions[rows, c - 2] if c >= 2 else torch.zeros_like(actions[rows, 0])
            task.last_action = last.float()
        for name, objective in objectives.items():
            ready = objective.prepare(fast, task)
            scored = objective(fast, state, ready, actions[cand, c - 1 : c - 1 + k], gens[name])
            scores[name].append(scored.float().cpu())
    for name, rows_scores in scores.items():
        out[name] = _rank(torch.cat(rows_scores) if rows_scores else torch.zeros(0, 1 + m))
    return out


def _others(e: int, n: int, m: int, gen: torch.Generator) -> Tensor:
    """``m`` episodes other than ``e`` out of ``n``, drawn without replacement."""
    perm = torch.randperm(n - 1, generator=gen)[:m]
    return perm + (perm >= e).long()  # skip e


def _task(objects: Tensor, frames: Tensor, target: Tensor, ep: Tensor, c: int, k: int):
    """The recorded-goal task of episodes ``ep``: the target's position at ``c - 1 + k`` (goal) and
    at ``c - 1`` (query), and the recorded frame at ``c - 1 + k`` (goal image)."""
    from worldmodel.planning.objectives import Task

    t = target[ep]
    return Task(
        goal_pos=objects[ep, c - 1 + k, t],
        query=objects[ep, c - 1, t],
        goal_image=frames[ep, c - 1 + k],
    )


def _rank(scores: Tensor) -> dict[str, Any]:
    """``rank_score``, ``top1`` and ``episodes`` from scores ``(P, 1 + m)``, the recorded sequence
    first (ties: one half for the rank score, shared for the top-1)."""
    p = scores.shape[0]
    if p == 0 or scores.shape[1] < 2:
        return {"rank_score": None, "top1": None, "episodes": 0}
    own, rest = scores[:, :1], scores[:, 1:]
    beats = (own > rest).double().sum(1) + 0.5 * (own == rest).double().sum(1)
    best = (own >= rest).all(1)
    top1 = torch.where(best, 1.0 / (1 + (own == rest).double().sum(1)), 0.0)
    return {
        "rank_score": num((beats / rest.shape[1]).mean()),
        "top1": num(top1.mean()),
        "episodes": p,
    }
