"""What every env here does alike when asked to render."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def warn_no_render_mode(env: Any) -> None:
    """Gymnasium's warning for ``render()`` on an env made without ``render_mode``."""
    spec = getattr(env, "spec", None)
    name = spec.id if spec is not None else type(env).__name__
    gym.logger.warn(
        "You are calling render method without specifying any render mode. You can specify the "
        f'render_mode at initialization, e.g. gym.make("{name}", render_mode="rgb_array")'
    )
