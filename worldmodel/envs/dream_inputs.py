"""What callers pass a dream, checked: their own start contexts and actions.

The caller's own start contexts. As mbrl-lib's ``ModelEnv`` and torchrl's world-model env start
imagination from the caller's states, ``reset(options=...)`` takes a start context (``frames``,
``actions``, ``states``, ``objects``, ``num_objects``, ``goal``, ``target``, ``goal_image``:
``CONTEXT_KEYS``, a dataset item's names, so a replay buffer's or a dataset's window passes as
it is) for Dyna/MBPO-style branched rollouts; ``initial`` runs on it at the reset. The reset
draws from ``self.np_random`` exactly what a pool reset draws (the unused pool entry included),
so a pool entry passed back as options with the same seed dreams the same episode. The batched
envs take the same options batched (``DreamVecEnv.reset_from``, ``DreamVectorEnv.reset(options=)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodel.envs.dream_config import DreamConfig, reads_ee
from worldmodel.envs.task import MAX_OBJECTS, TaskSpec

CONTEXT_KEYS = ("frames", "actions", "states", "objects", "num_objects", "goal", "target", "goal_image")
"""A caller's start context (``reset(options=...)``), named as a dataset item's keys
(``worldmodel.data.open_dataset``): ``frames`` uint8 ``(T0, H, W, 3)`` (``T0`` the dream's
context length, ``DreamCore.context``: ``context_frames`` or the model's ``n_past``; required);
``actions`` ``(T0 - 1, 4)`` (or ``(T0, 4)``, a dataset window's: the last, applied after the last
frame, is dropped; required when ``T0 > 1``); ``states`` ``(3,)`` or ``(T0, 3)``: the end
effector at the last frame; ``objects`` ``(n, 3)`` or ``(T0, n, 3)``, ``n <= MAX_OBJECTS``: the
object centres at the last frame (NaN rows: absent; required by ``reward="learned"`` on an object
task); ``num_objects`` int (rows after it are absent; else the finite rows); ``goal`` ``(3,)``,
``target`` int (drawn as for a pool entry without a task when missing); ``goal_image`` uint8
``(H, W, 3)`` (required by ``reward="goal-image"``; black otherwise)."""


def check_context(
    options: Any, config: DreamConfig, spec: TaskSpec, context: int, head: Any
) -> dict[str, Any]:
    """A caller's start context (``reset(options=...)``, see ``CONTEXT_KEYS``) checked and
    normalised for a dream of ``config`` and task ``spec`` with ``context`` context frames and
    state head ``head`` (or None): ``frames`` uint8 ``(T0, H, W, 3)``, ``actions`` float32
    ``(T0 - 1, 4)``, ``objects`` float32 ``(MAX_OBJECTS, 3)`` (NaN rows: absent), ``num_objects``
    int, ``states`` float32 ``(3,)`` (NaN: unknown), ``goal`` ``(3,)`` or None, ``target`` int or
    None, ``goal_image`` uint8 ``(H, W, 3)`` or None. Bad input: ``ValueError`` naming the key."""
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict of context arrays, got {type(options).__name__}")
    unknown = sorted(set(options) - set(CONTEXT_KEYS))
    if unknown:
        raise ValueError(
            f"options: unknown key {unknown[0]!r} (a start context has {', '.join(CONTEXT_KEYS)})"
        )
    cfg, c, size = config, context, config.image_size
    if "frames" not in options:
        raise ValueError("options['frames'] is missing: a start context needs its frames")
    frames = _uint8(options, "frames", (c, size, size, 3), f"the dream's {c} context frames")
    actions = _real(options, "actions", [(c - 1, 4), (c, 4)], required=c > 1, what="actions")
    actions = np.zeros((0, 4), np.float32) if actions is None else actions[: c - 1]
    states = _real(options, "states", [(3,), (c, 3)], required=False, what="end-effector position")
    states = np.full(3, np.nan, np.float32) if states is None else states.reshape(-1, 3)[-1]
    objects, n = _context_objects(options, c)
    target = None
    if "target" in options:
        target = _integer(options, "target", 0, max(n, 1) - 1)
        if spec.uses_objects and n == 0:
            raise ValueError("options['target'] names an object but options['objects'] gives none")
    goal = _real(options, "goal", [(3,)], required=False, what="goal")
    goal_image = None
    if "goal_image" in options:
        goal_image = _uint8(options, "goal_image", (size, size, 3), "the goal image")
    elif cfg.reward == "goal-image":
        raise ValueError("options['goal_image'] is missing: reward='goal-image' scores against it")
    if cfg.reward == "learned" and spec.uses_objects and n == 0:
        raise ValueError("options['objects'] is missing: the state head finds the target by its start")
    relative = getattr(head, "ee_relative", False) and reads_ee(cfg)
    if cfg.reward == "learned" and relative and not np.isfinite(states).all():
        raise ValueError("options['states'] is missing: this state head reads the arm relative to it")
    if goal is None and spec.name == "recorded-goal":
        raise ValueError("options['goal'] is missing: a recorded-goal context needs its recorded goal")
    return {
        "frames": frames,
        "actions": actions,
        "objects": objects,
        "num_objects": n,
        "states": states,
        "goal": goal,
        "target": target,
        "goal_image": goal_image,
    }


def _real(
    options: dict, key: str, shapes: list[tuple[int, ...]], *, required: bool, what: str
) -> np.ndarray | None:
    """``options[key]`` as finite float32 of one of ``shapes`` (None when absent and not required)."""
    if key not in options:
        if required:
            raise ValueError(f"options[{key!r}] is missing: a start context of this length needs its {what}")
        return None
    a = np.asarray(options[key])
    if a.dtype.kind not in "iuf" or a.shape not in shapes or not np.isfinite(a).all():
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(
            f"options[{key!r}] must be finite real numbers of shape {want} ({what}), got {a.dtype} {a.shape}"
        )
    return a.astype(np.float32)


def _uint8(options: dict, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``options[key]`` as a uint8 array of ``shape`` (images)."""
    a = np.asarray(options[key])
    if a.dtype != np.uint8 or a.shape != shape:
        raise ValueError(f"options[{key!r}] must be uint8 {shape} ({what}), got {a.dtype} {a.shape}")
    return a


def _context_objects(options: dict, c: int) -> tuple[np.ndarray, int]:
    """``options["objects"]`` (and ``num_objects``) as float32 ``(MAX_OBJECTS, 3)`` with NaN rows
    for absent objects, and the number present."""
    objects = np.full((MAX_OBJECTS, 3), np.nan, np.float32)
    if "objects" in options:
        raw = np.asarray(options["objects"])
        if raw.ndim == 3 and len(raw) == c:  # a dataset window: the last context frame's
            raw = raw[-1]
        if raw.ndim != 2 or raw.shape[1] != 3 or len(raw) > MAX_OBJECTS or raw.dtype.kind not in "iuf":
            raise ValueError(
                f"options['objects'] must be real ({MAX_OBJECTS}, 3) (or ({c}, {MAX_OBJECTS}, 3)) object "
                f"centres, NaN rows absent, got {raw.dtype} {raw.shape}"
            )
        objects[: len(raw)] = raw
    present = np.isfinite(objects).all(-1)
    if "num_objects" in options:
        n = _integer(options, "num_objects", 0, MAX_OBJECTS)
        if not present[:n].all():
            raise ValueError(f"options['num_objects'] is {n} but options['objects'] has fewer finite rows")
        objects[n:] = np.nan
        return objects, n
    n = int(present.sum())
    if not present[:n].all():
        raise ValueError("options['objects']: the present objects (finite rows) must come first")
    return objects, n


def _integer(options: dict, key: str, low: int, high: int) -> int:
    v = options[key]
    arr = np.asarray(v)
    if arr.shape != () or arr.dtype.kind not in "iu" or isinstance(v, bool) or not low <= int(arr) <= high:
        raise ValueError(f"options[{key!r}] must be an integer in {low}..{high}, got {v!r}")
    return int(arr)


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """float32 actions of ``shape``, clipped to [-1, 1]; ``ValueError`` on a wrong shape or NaN/Inf."""
    a = np.asarray(actions, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"action must have shape {shape} (dx, dy, dz, gripper), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action contains NaN or Inf: {actions!r}")
    return np.clip(a, -1.0, 1.0)
