"""Agent runs: training SB3 agents in a dream (or the real sim) and judging them in the real sim.

The library side of the ``agents/`` scripts, which only parse flags into a ``RunConfig`` and call
these:

- ``config``: ``RunConfig`` (``RUN/config.json``, what evaluation and ``--resume`` rebuild from),
  the SB3 hyperparameters a run may set, the run folder's files;
- ``envs``: the real env a run acts in (``make_real_env``, ``make_eval_env``; latent runs see it
  through ``worldmodel.envs.latent.LatentObservation``);
- ``evaluation``: ``evaluate_real`` (seeded real-sim episodes, success and final distance, video
  frames) and the ``RandomPolicy`` baseline;
- ``agent_eval``: ``evaluate_agent`` (a saved run, or random actions, judged in the real sim, with
  its JSON and video: ``agents.evaluate``);
- ``callbacks``: the periodic real evaluation and the progress bar;
- ``storage``: saving and loading an agent without executing anything from the run folder;
- ``loop``: ``train`` (create or resume, learn, evaluate, save) and ``prepare_run``;
- ``dream``: ``train_in_dream`` (the world model, its head and ``DreamVecEnv`` around ``train``:
  ``agents.train``).
"""

from __future__ import annotations

from worldmodel.rl.agent_eval import AgentEvalJob, evaluate_agent, summary_line
from worldmodel.rl.config import (
    ALGOS,
    CONFIG_NAME,
    EVAL_SEED,
    HYPER_DEFAULTS,
    HYPER_FLAGS,
    MIN_CNN_SIZE,
    OBS_TYPES,
    REWARDS,
    RunConfig,
    algo_class,
    checkpoint_path,
    policy_name,
    replay_buffer_path,
    sb3_kwargs,
)
from worldmodel.rl.dream import dream_head, make_dream_env, train_in_dream
from worldmodel.rl.envs import load_world_model, make_eval_env, make_real_env
from worldmodel.rl.evaluation import RandomPolicy, evaluate_real, write_episodes_video
from worldmodel.rl.loop import prepare_run, train
from worldmodel.rl.storage import build_agent, load_agent, load_replay_buffer, save_agent, save_replay_buffer

__all__ = [
    "ALGOS",
    "CONFIG_NAME",
    "EVAL_SEED",
    "HYPER_DEFAULTS",
    "HYPER_FLAGS",
    "MIN_CNN_SIZE",
    "OBS_TYPES",
    "REWARDS",
    "AgentEvalJob",
    "RandomPolicy",
    "RunConfig",
    "algo_class",
    "build_agent",
    "checkpoint_path",
    "dream_head",
    "evaluate_agent",
    "evaluate_real",
    "load_agent",
    "load_replay_buffer",
    "load_world_model",
    "make_dream_env",
    "make_eval_env",
    "make_real_env",
    "policy_name",
    "prepare_run",
    "replay_buffer_path",
    "save_agent",
    "save_replay_buffer",
    "sb3_kwargs",
    "summary_line",
    "train",
    "train_in_dream",
    "write_episodes_video",
]
