"""Datasets: the on-disk formats and their readers (own shards, BAIR TFRecords, PNG folders).

Data knows nothing of models or envs: collection from the sim (``worldmodel.envs.collect``) and
its scripted policy (``worldmodel.envs.policy``) live next to the simulator and write through
``shards.py``. ``open_dataset`` is imported lazily so that the collector's worker processes, which
import ``shards``, do not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dataset"]


def __getattr__(name: str) -> Any:
    if name == "open_dataset":
        from worldmodel.data.dataset import open_dataset

        return open_dataset
    raise AttributeError(f"module 'worldmodel.data' has no attribute {name!r}")
