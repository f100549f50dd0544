"""The demo's settings: ``DemoConfig`` (every stage's size), its named profiles and the per-model
config overrides, and how ``--quick`` / ``--full``, ``--model`` and ``--set`` pick them.

Profiles: ``quick`` fits a 2-core CPU in under 15 minutes; ``full`` (the default on a GPU) is
larger. ``plan_args`` and ``agent_args`` are extra flags of ``worldmodel plan`` and
``agents.train``, read with those commands' parsers when their stage runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class DemoConfig:
    """Sizes of every stage. ``PROFILES`` holds the named settings."""

    model: str = "svg-lp"
    """World model (registry name): svg-lp, svg-fp, videoflow, vgan."""
    preset: str = "tiny"
    """Model preset."""
    image_size: int = 64
    """Frame size of the data and the model (64: PushTable-v0's and BAIR's)."""
    model_set: tuple[str, ...] = ()
    """Extra model config overrides (``KEY=VALUE``, as ``worldmodel train --set``); ``()`` picks
    ``MODEL_SETS[model]``."""
    state_head: bool = True
    """Train the model's state head with it (``--set state_head=true``): the planner's and the
    dream's learned reward read the arm and the objects through it (``state_arm``,
    ``state_objects``)."""
    state_arm: str = "actions"
    """How the state head knows the arm (``--set state_arm=...``): ``actions`` integrates it from
    proprioception and the actions, ``features`` reads it off the features only. Measured on the
    quick demo: the dreamed arm 0.58 / 0.95 / 1.69 cm off at 5 / 10 / 20 steps against 0.92 / 2.20
    / 8.09 cm read off the features; dream-trained PPO on reach 1.00 against 0.45."""
    state_objects: str = "actions"
    """How the state head knows the objects (``--set state_objects=...``): ``actions`` carries
    them from their positions at an episode's start along the actions with a contact model
    (needs ``state_arm=actions``), ``features`` reads them off the features. Measured on the
    quick demo: the dreamed target 4.55 / 10.67 cm off at 10 / 20 steps against 5.99 / 12.47 cm
    read off the features (stays put 8.90 / 15.65); recorded-action rank 0.94 against 0.87."""
    episodes: int = 2048
    """Episodes collected (about 30 s on 2 cores, 750 MB). The world model's 1,500 steps see a
    small share of them; the state head's arm and contact models are also fitted on every
    recorded step (``state_batch``), and the contact model is what gains from more: fitted alone
    (1,500 steps of 2,048 recorded steps) on 487 / 1,800 / 3,700 training episodes, its target
    was 4.97 / 4.14 / 4.00 cm off after 10 open-loop steps on 225 held-out pushes (stays put
    10.42). 4,096 took the demo past 15 minutes on the 2-core VM."""
    episode_len: int = 30
    """Frames per episode (BAIR has 30)."""
    push_probability: float = 1.0
    """Share of collected episodes with a deliberate push (``collect --push-probability``).
    Contact-rich data: with 1.0 instead of collect's 0.5, the same model's dreamed target error at
    10 steps fell from 6.9 to 5.7 cm (stays put 8.3), the arm's from 3.1 to 2.3 cm, and the
    recorded-goal planner went from 1/20 to 2/20 (measured on the same held-out episodes)."""
    workers: int = 2
    """Collection worker processes."""
    train_steps: int = 1500
    """World-model optimiser steps."""
    batch_size: int = 16
    """World-model batch size."""
    head_steps: int = 1000
    """Object-head optimiser steps."""
    eval_sequences: int = 25
    """Test sequences scored (the quick data's test split holds 25: every 20th of 512 episodes)."""
    eval_samples: int = 10
    """Samples per test sequence (best-of-N)."""
    plan_episodes: int = 20
    """Real-sim episodes per planner (model, oracle, random) and task."""
    tasks: tuple[str, ...] = ("push", "recorded-goal", "reach")
    """Tasks the planners are judged on (``worldmodel plan --task``)."""
    planner: str = "cem"
    """``cem`` or ``icem``."""
    plan_args: tuple[str, ...] = (
        "--population", "256", "--elites", "26", "--horizon", "6", "--iterations", "3",
        "--replan-every", "3", "--oracle-budget", "16", "--envs", "10", "--num-objects", "1",
        "--push-offset", "0.05",
    )  # fmt: skip
    """Extra flags for ``worldmodel plan`` (budgets; see ``worldmodel plan --help``). With the
    objects integrated the learned planner does not run the model, so 256 candidates cost less
    than 64 did (1.6 ms per action); ``--push-offset 0.05`` draws the arm behind the target (the
    oracle's push success went from 0.60 to 0.75 with it, recorded goal from 0.80 to 0.95)."""
    agent_algo: str = "ppo"
    """SB3 algorithm trained in the dream."""
    agent_obs: str = "latent"
    """Agent observations: ``latent`` (model features) or ``pixels``."""
    agent_args: tuple[str, ...] = (
        "--n-steps", "16", "--n-epochs", "10", "--gamma", "0.95", "--lr", "1e-3", "--batch-size", "256",
    )  # fmt: skip
    """Extra flags for ``agents.train`` (SB3 settings; with its defaults, 128 steps per env per
    rollout, 100k steps are only 12 PPO updates and the agent learned nothing in the dream)."""
    agent_timesteps: int = 400_000
    """Dream transitions for the agent."""
    agent_envs: int = 64
    """Batched dream envs."""
    agent_task: str = "reach"
    """Task the dream agent trains on and is judged on (``agents.train --task``)."""
    agent_eval_episodes: int = 20
    """Real-sim episodes scoring the agent."""
    device: str = "auto"
    """auto | cpu | cuda."""
    seed: int = 0
    """Seed of every stage."""

    def __post_init__(self) -> None:
        from worldmodel.choices import check_choice
        from worldmodel.dynamics.base import STATE_ARMS
        from worldmodel.envs.task import TASKS

        check_choice("--set state_arm", self.state_arm, STATE_ARMS)
        check_choice("--set state_objects", self.state_objects, STATE_ARMS)
        if self.state_objects == "actions" and self.state_arm != "actions":
            raise ValueError(
                "--set state_objects=actions integrates the objects with the arm: set state_arm=actions"
            )
        self.tasks = tuple(self.tasks)
        bad = [t for t in (*self.tasks, self.agent_task) if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"--set tasks/agent_task: unknown task(s) {bad}; known: {', '.join(TASKS)}")
        from worldmodel.dynamics.registry import available

        if self.model not in available():  # before any data is collected
            raise ValueError(
                f"--model: unknown world model {self.model!r}; choose one of {', '.join(available())}"
            )
        for name in ("episodes", "train_steps", "plan_episodes", "agent_eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--set {name}: must be >= 1, got {getattr(self, name)}")

    PROFILES = {  # noqa: RUF012 - class-level table of named configs, not a field
        "quick": {},
        "full": {
            "preset": "paper",
            "episodes": 2000,
            "train_steps": 20_000,
            "batch_size": 32,
            "head_steps": 2000,
            "eval_sequences": 128,
            "eval_samples": 100,
            "plan_episodes": 20,
            "plan_args": ("--envs", "10"),
            "agent_timesteps": 500_000,
            "agent_envs": 256,
            "agent_eval_episodes": 50,
        },
    }


PLAN_FILES = {"push": "plan.json", "recorded-goal": "plan_recorded.json", "reach": "plan_reach.json"}
"""The planning stages' reports in the demo folder, by task (each with its ``.gif`` beside it)."""

# What a model's tiny preset needs at 64 px: VGAN's 16-px tiny preset has 8-frame clips, and at
# 64 px (4 temporal up-sampling levels) a clip must be a multiple of 16 frames.
# SVG's tiny preset predicts 5 frames per window, so its state head would only ever learn on 5-step
# rollouts while the planner and the dream look further; 8 (as the quick demo measured) costs 1.5x
# per training step. The reference experiments found longer windows helped the object most.
MODEL_SETS: dict[str, tuple[str, ...]] = {
    "vgan": ("clip_len=16", "n_future=15"),
    "svg-lp": ("n_future=8",),
    "svg-fp": ("n_future=8",),
    "svg-det": ("n_future=8",),
    "jepa": ("n_future=8",),
}


def demo_config(profile: str, model: str | None, sets: dict[str, Any]) -> DemoConfig:
    """The profile's config with ``--model`` and ``--set`` applied; unknown fields raise."""
    fields = {f.name: f for f in dataclasses.fields(DemoConfig)}
    values = dict(DemoConfig.PROFILES[profile])
    if model:
        values["model"] = model
    unknown = sorted(set(sets) - set(fields))
    if unknown:
        raise ValueError(f"--set: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    for key, value in sets.items():
        if key in ("plan_args", "model_set", "tasks", "agent_args"):
            value = tuple(str(value).split()) if isinstance(value, str) else tuple(map(str, value))
        values[key] = value
    tiny = values.get("preset", DemoConfig.preset) == "tiny"
    if not values.get("model_set") and values.get("image_size", 64) >= 64 and tiny:
        values["model_set"] = MODEL_SETS.get(values.get("model", DemoConfig.model), ())
    return DemoConfig(**values)


def choose_profile(quick: bool, full: bool, cuda: bool) -> str:
    """``--quick`` / ``--full`` as asked; neither: the full profile when a CUDA device is present."""
    if quick and full:
        raise ValueError("--quick and --full exclude each other")
    return "full" if full or (not quick and cuda) else "quick"
