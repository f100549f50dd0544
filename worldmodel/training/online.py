"""Online model-based RL, one loop (PlaNet's, Dreamer's, mbrl-lib's): act with the learned planner in
the real sim, add the episodes to the dataset, fine-tune the model on the grown data, repeat.

Iteration 0 is the starting point: the given checkpoint (``OnlineConfig.checkpoint``) or a model
trained on the initial data (``model``, ``preset``, ``initial_steps``), evaluated as it is. Each
iteration ``i >= 1`` then

1. **collects** ``episodes_per_iter`` episodes of ``seq_len`` steps (the dataset's episode length)
   in ``worldmodel/PushTable-v0`` on the task, with ``MPCAgent`` + ``LearnedReward`` on the model's
   own state head (as ``worldmodel plan`` builds it), the executed actions the plan's plus
   Gaussian exploration noise (``explore_noise``, PlaNet's 0.3 by default; clipped to [-1, 1]; the
   agent's context holds the executed action). Each episode is recorded as
   ``worldmodel.envs.policy.rollout`` records one (frames, actions, states, objects, goal, target,
   num_objects, pushed = False) and the batch is appended to the dataset as one new shard
   (``worldmodel.envs.collect.append_episodes``): the manifest grows atomically, finished shards
   are never written again;
2. **fine-tunes** the model for ``train_steps`` more optimiser steps on the grown dataset's train
   split, resuming ``last.pt`` with ``Trainer`` (weights, optimiser states, RNG streams, step) as
   ``worldmodel train --resume`` does;
3. **evaluates** the fine-tuned planner without exploration noise on ``eval_episodes`` episodes of
   the task's budget (``TaskSpec.budget``, or ``max_steps``), the same episodes (seeds) at every
   iteration, so the curve compares models, not draws.

**Real steps** (``real_steps`` in a row) count every environment step recorded in the dataset:
the initial collection's ``episodes × seq_len`` plus the loop's. Evaluation episodes are not
counted and never added to the data (PlaNet's and Dreamer's test episodes; ``agents.train_real``
does not count its evaluations in ``--timesteps`` either). A ``recorded-goal`` reset records a
scripted push internally to find its goal: part of the task's set-up, not counted. Collection
episodes last ``seq_len`` steps (every record of a dataset has the same length), which for
``push`` (50) and ``recorded-goal`` (2k) is shorter than the evaluation budget. The dataset's split
rule holds for the new episodes too (every 20th is held out of training).

**The run folder** ``OUT`` holds the settings, the growing dataset (``OUT/data``), the Trainer's run
folder (``OUT/model``), stage markers and the report (``online.json``, ``online.html``); its layout
is in ``worldmodel.training.online_folder``.

**Resuming** (the same call again, e.g. after ``kill -9``): the dataset's manifest is the record of
collection (an iteration whose shard it lists is never collected again; a shard file written
before the kill but not listed is overwritten), ``train`` resumes ``last.pt`` up to the step the
iteration aims at (the collecting model's step + ``train_steps``), and a stage with its marker is
skipped. So no episode is duplicated or lost, whatever the moment of the kill.

**Model-free baseline** (``ppo_run``): an ``agents.train_real`` run on the same task drawn on the
same axes (``worldmodel.training.online_report``); the loop never runs it.

Layout: ``online_config`` (``OnlineConfig``), ``online_acting`` (the agent, the envs, recording
episodes), ``online_folder`` (the run folder's set-up and markers), ``online_stages`` (collect,
fine-tune, evaluate), ``online_report`` (PPO baseline, report); this module runs the loop.
"""

from __future__ import annotations

from typing import Any

from worldmodel.planning.prediction_check import describe
from worldmodel.training.online_acting import NoisyMPC, record_episodes
from worldmodel.training.online_config import OnlineConfig
from worldmodel.training.online_folder import Log
from worldmodel.training.online_report import ppo_command, read_ppo_run, write_report
from worldmodel.training.online_stages import OnlineRun

__all__ = [
    "NoisyMPC",
    "OnlineConfig",
    "ppo_command",
    "read_ppo_run",
    "record_episodes",
    "run_online",
    "write_report",
]


def run_online(cfg: OnlineConfig, log: Log | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the loop of the module docstring to ``cfg.iterations``; writes
    ``OUT/online.json`` and ``OUT/online.html`` after every iteration.

    Args:
        cfg: the settings.
        log: called with one line per stage (progress); the library prints nothing itself.
        progress: show the Trainer's progress bars.

    Returns:
        The summary written to ``online.json``: ``rows`` (one per iteration, 0 first: ``iteration,
        real_steps, episodes, online_episodes, success_rate, successes, ci95, final_distance,
        eval_episodes, train_step, train_steps, collect_success_rate, collect_final_distance,
        ms_per_action, seconds_collect, seconds_train, seconds_eval, seconds, ppo_success_rate,
        ppo_timesteps``), ``ppo`` (the baseline's evaluations or ``None``), ``ppo_command`` and the
        settings.
    """
    run = OnlineRun(cfg, log, progress)
    run.prepare()
    run.initial_model()
    say = run.log
    for i in range(cfg.iterations + 1):
        if i:
            collected = run.collect(i)
            run.train(i, collected)
        row = run.evaluate(i)
        said = describe(row.get("prediction_check") or {})
        say(
            f"iteration {i}: success {row['success_rate']:.2f} ({row['ci95'][0]:.2f}-{row['ci95'][1]:.2f}) "
            f"after {row['real_steps']} real steps, model step {row['train_step']}"
            + (f"; {said}" if said else "")
        )
        write_report(cfg.out, run.summary())
    return run.summary()
