"""Datasets: collection from the sim, the shard format, and readers for shards, BAIR and PNG folders.

``open_dataset`` is imported lazily so that light modules of this package (the collector's worker
processes, the policy) do not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dataset"]


def __getattr__(name: str) -> Any:
    if name == "open_dataset":
        from worldmodel.data.dataset import open_dataset

        return open_dataset
    raise AttributeError(f"module 'worldmodel.data' has no attribute {name!r}")
