"""Environments: the real MuJoCo pushing world and the learned dream environments (single, batched).

``task`` holds the facts every face of the task shares (goals, success, reward, info keys);
``policy`` is the scripted pushing policy and ``collect`` writes datasets of its episodes
(``worldmodel collect``). Names are imported lazily so that ``import worldmodel.envs`` loads
neither MuJoCo nor torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_OBJECTS", "DreamEnv", "DreamVecEnv", "PushTableConfig", "PushTableEnv"]

_LAZY = {
    "PushTableEnv": "worldmodel.envs.push_table",
    "PushTableConfig": "worldmodel.envs.push_table",
    "MAX_OBJECTS": "worldmodel.envs.scene",
    "DreamEnv": "worldmodel.envs.dream",
    "DreamVecEnv": "worldmodel.envs.dream_vec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
