"""The oracle: the same planner, with the real simulator as its (perfect) model.

``SimOracle`` scores candidates ``(P, N, H, A)`` by restoring each problem's simulator state
(``PushTableEnv.get_state`` / ``set_state``) in a private copy of the sim and stepping the
candidate's actions, one candidate after another. It is exact and slow: its cost is
``P * N * H`` physics steps per call, so its population is the budget to set on a CPU.

The copy never renders: pixels are not needed to score, and rendering costs about twice the
physics (``_Blind`` returns a constant image instead; the physics and the info are the sim's own).

Cost per step: minus the task's reward (``worldmodel.envs.task.reward``, the env's own): for
the object tasks the target object's xy distance to the goal plus ``reach_weight`` times the 3-D
distance from the end effector to the target object, for ``reach`` the end effector's distance
to the goal. The reach term is shaping: without it every candidate that does not touch the
object scores the same, and a short horizon rarely touches it by chance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldmodel.choices import check_choice
from worldmodel.envs import task as tasks
from worldmodel.planning.objectives import FRAMES


def _blind_env(config):
    from worldmodel.envs.push_table import PushTableEnv

    class _Blind(PushTableEnv):
        """PushTable without rendering (a constant black frame)."""

        def _render_frame(self) -> np.ndarray:
            s = self.config.image_size
            return np.zeros((s, s, 3), np.uint8)

    return _Blind(config=config)


class SimOracle:
    """Scores action sequences in a copy of the PushTable simulator; higher is better.

    Args:
        config: the ``PushTableConfig`` of the env being controlled (physics must match).
        reach_weight: weight of the end-effector-to-target distance in the cost (shaping).
        frames: ``"all"`` (sum over the horizon) or ``"last"`` (final step only).
        discount: per-step discount of the sum.
    """

    def __init__(self, config=None, *, reach_weight: float = 0.5, frames: str = "all", discount: float = 1.0):
        check_choice("frames", frames, FRAMES)
        from worldmodel.envs.push_table_config import PushTableConfig

        self.config = config if config is not None else PushTableConfig()
        self.spec = self.config.task_spec()
        self.reach_weight, self.frames, self.discount = float(reach_weight), frames, float(discount)
        self._sim = None
        self.steps = 0  # physics env steps taken so far (for budgets)

    @property
    def sim(self):
        if self._sim is None:
            self._sim = _blind_env(self.config)
        return self._sim

    def cost(self, info: dict) -> float:
        """One step's cost from the sim's ``info``."""
        target = np.asarray(info["object_pos"][info["target"]], np.float64)
        ee, goal = np.asarray(info["ee_pos"], np.float64), np.asarray(info["goal_pos"], np.float64)
        return -float(tasks.reward(self.spec, target, ee, goal, self.reach_weight))

    def __call__(self, states: list[dict], actions: Tensor) -> Tensor:
        """Scores ``(P, N)`` (minus the summed cost) of ``actions`` ``(P, N, H, A)`` from ``states``
        (one ``get_state()`` dict per problem)."""
        p, n, h, _ = actions.shape
        if len(states) != p:
            raise ValueError(f"actions: {p} problems but {len(states)} simulator states")
        acts = actions.detach().cpu().double().numpy()
        weights = self.discount ** np.arange(h)
        if self.frames == "last":
            weights = np.zeros(h)
            weights[-1] = 1.0
        sim = self.sim
        scores = np.empty((p, n))
        for i in range(p):
            for j in range(n):
                sim.set_state(states[i])
                total = 0.0
                for t in range(h):
                    *_, info = sim.step(acts[i, j, t])
                    if weights[t]:
                        total += weights[t] * self.cost(info)
                scores[i, j] = -total
        self.steps += p * n * h
        return torch.from_numpy(scores).to(actions.device, torch.float32)

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
