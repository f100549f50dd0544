"""Environments: the real MuJoCo pushing world (and, later, learned dream environments).

Names are imported lazily so that ``import worldmodel.envs`` loads neither MuJoCo nor torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_OBJECTS", "PushTableConfig", "PushTableEnv"]

_LAZY = {
    "PushTableEnv": "worldmodel.envs.push_table",
    "PushTableConfig": "worldmodel.envs.push_table",
    "MAX_OBJECTS": "worldmodel.envs.scene",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
