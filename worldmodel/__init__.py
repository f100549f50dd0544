"""worldmodel: stochastic video predictors as world models for model-based RL from pixels.

Importing the package registers the Gymnasium ids ``worldmodel/PushTable-v0`` (the real MuJoCo
pushing world) and ``worldmodel/Dream-v0`` (a learned world model behind the same spaces).
Registration is by string, so importing ``worldmodel`` loads neither MuJoCo nor a model.

Episode length. Both ids register ``max_episode_steps=worldmodel.envs.task.MAX_EPISODE_STEPS``
(50), so ``gym.make`` wraps them in a ``TimeLimit`` and ``env.spec.max_episode_steps`` says so;
under ``gym.make`` that is the one setting of the episode length: ``gym.make(id,
max_episode_steps=k)`` changes it for either env. Neither env truncates on its own by default
(``Dream-v0``'s ``horizon`` is ``None``); a ``horizon=k`` given to ``Dream-v0`` truncates it at
``k`` as well, which only ever shortens episodes under the ``TimeLimit`` (pass ``max_episode_steps=k``
for longer ones). ``gym.make_vec`` passes ``max_episode_steps`` to the batched dream as its
``horizon`` unless one is given.
"""

from __future__ import annotations

import gymnasium as gym

from worldmodel.envs.task import MAX_EPISODE_STEPS

__version__ = "0.1.0"

PUSH_TABLE_ID = "worldmodel/PushTable-v0"
DREAM_ID = "worldmodel/Dream-v0"


def _register() -> None:
    if PUSH_TABLE_ID not in gym.registry:
        gym.register(
            id=PUSH_TABLE_ID,
            entry_point="worldmodel.envs.push_table:PushTableEnv",
            max_episode_steps=MAX_EPISODE_STEPS,
        )
    if DREAM_ID not in gym.registry:
        # The TimeLimit ends gym.make's episodes (the env's horizon defaults to None): one setting.
        gym.register(
            id=DREAM_ID,
            entry_point="worldmodel.envs.dream:DreamEnv",
            vector_entry_point="worldmodel.envs.dream_vec:make_dream_vector_env",
            max_episode_steps=MAX_EPISODE_STEPS,
        )


_register()

__all__ = ["DREAM_ID", "PUSH_TABLE_ID", "__version__"]
