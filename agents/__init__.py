"""Stable-Baselines3 agents that learn in a world model's dream and act in the real PushTable sim.

Scripts (each explains its flags with ``--help``):

- ``python -m agents.train``: PPO or SAC on ``DreamVecEnv`` (pixels or latent observations,
  learned or goal-image reward), evaluated periodically in the real ``worldmodel/PushTable-v0``.
- ``python -m agents.train_real``: the same algorithms trained in the real sim (the model-free
  baseline at equal real-sample budgets).
- ``python -m agents.evaluate RUN``: success rate and final distance in the real sim, with a video.

A run folder ``RUN`` holds ``config.json`` (everything needed to rebuild the agent and its
environments), ``checkpoints/last.zip`` (SB3's format, read back by ``worldmodel.rl.load_agent``,
which executes nothing from the run folder; SAC adds ``checkpoints/replay_buffer.npz``), ``tb/``
(TensorBoard), ``videos/`` (real episodes) and ``eval.jsonl`` (one line per periodic real
evaluation). The scripts use only the public API of ``worldmodel`` and SB3, so they double as
examples to copy.
"""
