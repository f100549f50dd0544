"""Run any agent with an SB3-style ``predict`` for a number of episodes and report how it did:
``run_episodes`` (success rate with its 95 % Wilson interval, final task distance, planning time
per action) and its deprecated name ``evaluate``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from worldmodel.envs.task import wilson_interval


def run_episodes(agent: Any, env: Any, episodes: int, *, seed: int | None = None) -> dict[str, Any]:
    """Run ``agent`` for ``episodes`` episodes with SB3's ``evaluate_policy``.

    Args:
        agent: anything with ``predict`` (``MPCAgent``, ``OracleAgent``, ``RandomAgent``); it is
            attached to ``env`` first.
        env: an SB3 VecEnv over PushTable, or a ``DreamVecEnv`` (its ``info`` has ``distance``
            and ``is_success``).
        seed: seeds the VecEnv before its first reset (same seed, same episodes for every agent).

    Returns:
        ``success_rate``, ``successes``, ``ci95`` (the 95 % Wilson interval of the success rate,
        ``[low, high]``), ``final_distance`` (mean task distance in metres at the end of the
        episodes), ``ms_per_action`` (the agent's planning time per action), ``episodes``.
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    finals: list[tuple[bool, float]] = []

    def on_step(local: dict, _: dict) -> None:
        if local["done"]:
            info = local["info"]
            finals.append((bool(info["is_success"]), float(info["distance"])))

    agent.attach(env)
    agent.reset_stats()
    if hasattr(agent, "reset"):
        agent.reset()
    if seed is not None:
        env.seed(seed)
    evaluate_policy(agent, env, n_eval_episodes=episodes, deterministic=True, callback=on_step, warn=False)
    successes = sum(s for s, _ in finals)
    return {
        "success_rate": float(np.mean([s for s, _ in finals])) if finals else float("nan"),
        "successes": int(successes),
        "ci95": list(wilson_interval(int(successes), len(finals))),
        "final_distance": float(np.mean([d for _, d in finals])) if finals else float("nan"),
        "ms_per_action": float(agent.ms_per_action),
        "episodes": len(finals),
    }


def evaluate(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deprecated name of ``run_episodes`` ("evaluate" named five different things)."""
    warnings.warn("worldmodel.planning.evaluate is now run_episodes", DeprecationWarning, 2)
    return run_episodes(*args, **kwargs)
