"""Every recorded step of a dataset, for the models that read no pixels.

A state head that integrates the arm and the objects from the actions (``state_arm`` /
``state_objects="actions"``, ``dynamics/heads.py``) has two small models that read no features:
the arm's move from the arm and the commands, and the contact model of the objects' moves. Each
training step of a world model sees only its batch of windows (16 windows of 10 steps in the
quick demo: 144 steps a step, 216k over 1,500 steps), and contacts are a small share of them, so
those two models were fitted on few contacts. ``RecordedTransitions`` holds every recorded step
of every training episode (states, objects and actions only, a few MB for thousands of episodes)
and draws a seeded batch of them per training step, for ``state_loss``'s one-step terms.

Measured (states only, 3,700 one-object push episodes, held-out moving steps): the contact model
fitted on 1,500 steps of 144 recorded steps was 4.96 cm off after 10 open-loop steps (stays put
10.42), on 1,500 steps of 2,048 it was 4.00 cm, and with the sim's true target at every plan the
learned planner's push success went from 0.10 to 0.30 (20 episodes each).

    transitions = RecordedTransitions.of(dataset)   # None when the data records no states
    step = transitions.sample(2048, generator)      # dict of (n, ...) tensors, see ``sample``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


class RecordedTransitions:
    """Every step ``t -> t + 1`` of a set of episodes that has a step before it (the arm lags
    its commands, so the previous action is an input of both models).

    Args:
        arm: float32 ``(N, 3)``: the end effector at each recorded step, the episodes end to end.
        actions: float32 ``(N, A)``: the action taken at each step.
        objects: float32 ``(N, K, 3)`` (NaN rows: absent) or ``None`` (data without objects).
        steps: int64 ``(M,)``: the rows ``r`` of ``arm`` whose step ``r -> r + 1`` and action
            ``r - 1`` lie in the same episode.
    """

    def __init__(self, arm: Tensor, actions: Tensor, objects: Tensor | None, steps: Tensor) -> None:
        if len(steps) == 0:
            raise ValueError("recorded transitions: no episode has 3 steps or more")
        self.arm, self.actions, self.objects, self.steps = arm, actions, objects, steps

    @classmethod
    def of(cls, dataset: Any, progress: Callable[[int], Any] | None = None) -> RecordedTransitions | None:
        """Every episode of ``dataset`` (a ``WindowDataset``: its whole episodes, not its
        windows), or ``None`` when it records no ``states``. ``progress(1)`` after each episode."""
        arms, actions, objects, steps, row = [], [], [], [], 0
        for i in range(len(dataset)):
            ep = dataset.whole_episode(i)
            if "states" not in ep:
                return None
            n = len(ep["actions"])
            arms.append(np.asarray(ep["states"], np.float32)[:, :3])
            actions.append(np.asarray(ep["actions"], np.float32))
            if "objects" in ep:
                objects.append(np.asarray(ep["objects"], np.float32))
            steps.append(np.arange(row + 1, row + n - 1))
            row += n
            if progress is not None:
                progress(1)
        if not arms:
            return None
        objs = torch.from_numpy(np.concatenate(objects)) if len(objects) == len(arms) else None
        return cls(
            torch.from_numpy(np.concatenate(arms)),
            torch.from_numpy(np.concatenate(actions)),
            objs,
            torch.from_numpy(np.concatenate(steps)).long(),
        )

    def __len__(self) -> int:
        return len(self.steps)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``n`` steps drawn uniformly (with replacement) with ``generator``: ``arm``, ``arm_next``
        ``(n, 3)``, ``action``, ``previous`` ``(n, A)`` and, where the data has objects,
        ``objects``, ``objects_next`` ``(n, K, 3)`` (NaN rows: absent)."""
        r = self.steps[torch.randint(len(self.steps), (n,), generator=generator)]
        out = {"arm": self.arm[r], "arm_next": self.arm[r + 1], "action": self.actions[r]}
        out["previous"] = self.actions[r - 1]
        if self.objects is not None:
            out["objects"], out["objects_next"] = self.objects[r], self.objects[r + 1]
        return out
