"""Settings that name one of a few options: one check and one error line for every config."""

from __future__ import annotations

from collections.abc import Sequence


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """``ValueError`` ``NAME must be one of A, B, got 'X'`` unless ``value`` is one of ``choices``
    (``name`` as the user wrote it: ``--planner`` for a flag's field, ``planner`` for a library's)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
