"""worldmodel: stochastic video predictors as world models for model-based RL from pixels.

Importing the package registers the Gymnasium ids ``worldmodel/PushTable-v0`` (the real MuJoCo
pushing world) and ``worldmodel/Dream-v0`` (a learned world model behind the same spaces).
Registration is by string, so importing ``worldmodel`` loads neither MuJoCo nor a model.
"""

from __future__ import annotations

import gymnasium as gym

__version__ = "0.1.0"

PUSH_TABLE_ID = "worldmodel/PushTable-v0"
DREAM_ID = "worldmodel/Dream-v0"


def _register() -> None:
    if PUSH_TABLE_ID not in gym.registry:
        gym.register(
            id=PUSH_TABLE_ID,
            entry_point="worldmodel.envs.push_table:PushTableEnv",
            max_episode_steps=50,
        )
    if DREAM_ID not in gym.registry:
        # No max_episode_steps: the env truncates at its own `horizon` option (default 50).
        gym.register(
            id=DREAM_ID,
            entry_point="worldmodel.envs.dream:DreamEnv",
            vector_entry_point="worldmodel.envs.dream_vec:make_dream_vector_env",
        )


_register()

__all__ = ["DREAM_ID", "PUSH_TABLE_ID", "__version__"]
