"""A stub world model the planners can trust, for the MPC tests (test_mpc, test_env_conventions).

The state is a point in [-1, 1]^2 read from pixel (0, 0) of the last context frame (its red and
green values) and drawn back there; ``pos' = pos + SPEED * a[:2]``, clipped to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, State

SIZE, SPEED = 8, 0.1


class PointModel(LatentDynamics):
    """The point dynamics above; features are the position itself (``(B, 2)``)."""

    name = "stub-point"

    def __init__(self) -> None:
        super().__init__(DynamicsConfig(image_size=SIZE, n_past=2))
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        return self.dummy * 0, {}

    def initial(self, frames: Tensor, actions: Tensor) -> State:
        return State(pos=frames[:, -1, 0, 0, :2].float() / 127.5 - 1)

    def step(self, state, action, *, sample=True, temperature=1.0, generator=None, noise=None):
        return State(pos=(state["pos"] + SPEED * action[:, :2].float()).clamp(-1, 1))

    def decode(self, state: State) -> Tensor:
        img = torch.zeros(len(state), 3, SIZE, SIZE)
        img[:, :2, 0, 0] = (state["pos"] + 1) / 2
        return img

    def features(self, state: State) -> Tensor:
        return state["pos"]

    @property
    def feature_dim(self) -> int:
        return 2
