"""Exceptions for bad input. Each message names the file or argument at fault."""

from __future__ import annotations


class WorldModelError(ValueError):
    """Base class: bad input that the user can fix (the CLI prints it as one line)."""


class DataError(WorldModelError):
    """A dataset file or folder is missing, corrupt, truncated or inconsistent."""


class CheckpointError(WorldModelError):
    """A checkpoint is missing, corrupt, or does not fit the requested model."""
