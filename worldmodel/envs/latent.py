"""The real env seen through a world model: ``LatentObservation``.

Latent observations in the real sim (``LatentObservation``). A policy trained on
``obs="latent"`` sees the world model's ``features`` of the dreamed state. In the real sim it
sees the same model's features of the real frames: at every step the wrapper runs
``model.initial`` on the most recent real frames and the actions between them and returns
``features`` of that state, clipped to ``±latent_bound`` like the dream's. ``initial`` infers the
model's latent from each real frame (the posterior, as in training) and steps the predictor
through them, so the policy gets the model's reading of the recent real history. Choices, stated
because they are ours: (1) the window defaults to the model's training window ``seq_len``
(``n_past + n_future`` frames): the predictor has been trained to run that many steps on real
frames, and the cost per step stays constant (encoding the whole episode would cost quadratic time
in its length; ``window`` allows it). The dream's state after ``t`` steps has instead run
``n_past - 1 + t`` predictor steps, ``t`` of them on its own samples, so the two feature
distributions agree only as far as the model is accurate. (2) At the reset the sim has one frame
while ``initial`` needs ``n_past``: the first frame is repeated with ``REST_ACTION`` (no motion,
fingers open).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from worldmodel.dynamics.inference import for_inference
from worldmodel.envs.dream_core import resolve_dtype
from worldmodel.envs.push_table import REST_ACTION


class LatentObservation(gym.Wrapper):
    """Real pixel env → the world model's ``features`` of the real history (see the module docstring).

    Observation ``Box(-latent_bound, latent_bound, (F,), float32)``, as ``Dream-v0(obs="latent")``.
    ``render()`` is the wrapped env's (real frames).

    Args:
        env: a PushTable env (uint8 ``(H, W, 3)`` observations of the model's size, 4-d actions).
        model: the ``LatentDynamics`` the policy was trained in.
        window: frames encoded per step (the last ``window``, at least ``n_past``); ``None``:
            the model's training window ``model.config.seq_len``.
        latent_bound: clip, as the dream's ``latent_bound``.
        dtype: the dream's ``DreamConfig.dtype`` (``"auto"``: bf16 on CUDA for SVG, else float32).
        task_obs: the dream's ``DreamConfig.task_obs``: append the true end effector (the env's
            ``ee_pos``, proprioception) and the episode's goal (``goal_pos``), ``(F + 6,)``; with
            a state head that integrates the objects (``objects_from_actions``) also the target
            as the dream carries it, ``(F + 9,)``: from its position at the reset (``target_pos``,
            as the dream starts from its context's) along every executed action with the head's
            contact model and the arm's real moves, as ``MPCAgent`` carries it.
    """

    def __init__(
        self,
        env: gym.Env,
        model,
        *,
        window: int | None = None,
        latent_bound: float = 10.0,
        dtype: str = "auto",
        task_obs: bool = False,
    ) -> None:
        super().__init__(env)
        self.task_obs = bool(task_obs)
        head = getattr(model, "state_head", None)
        self.head = head if self.task_obs and getattr(head, "objects_from_actions", False) else None
        self._task = np.zeros(6 + 3 * (self.head is not None), np.float32)
        self._carried: tuple[Any, Any, Any] | None = None  # (target, arm, previous action)
        # The same inference copy and dtype as the dream's (DreamConfig.dtype), so a latent
        # policy sees the features it was trained on, bf16 rounding included.
        self.model = for_inference(model, dtype=resolve_dtype(model, dtype, model.device))
        self.context = int(model.config.n_past)
        window = model.config.seq_len if window is None else window
        self.window = max(int(window), self.context)
        self.latent_bound = float(latent_bound)
        b = self.latent_bound
        dim = model.feature_dim + len(self._task) * self.task_obs
        self.observation_space = gym.spaces.Box(-b, b, (dim,), np.float32)
        self._frames: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        frame, info = self.env.reset(**kwargs)
        self._carried = None
        self._note(info)
        self._frames = [frame] * self.context
        self._actions = [REST_ACTION] * (self.context - 1)  # the first frame held still
        return self._encode(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, np.float32).reshape(4), -1.0, 1.0)
        frame, reward, terminated, truncated, info = self.env.step(a)
        self._note(info, a)
        w = self.window
        self._frames = [*self._frames, frame][-w:]
        actions = [*self._actions, a]
        self._actions = actions[max(0, len(actions) - (w - 1)) :]
        return self._encode(), reward, terminated, truncated, info

    def _note(self, info: dict, action: np.ndarray | None = None) -> None:
        if self.task_obs:
            parts = [info["ee_pos"], info["goal_pos"]]
            if self.head is not None:
                parts.append(self._carry(info, action))
            self._task = np.concatenate(parts).astype(np.float32)

    def _carry(self, info: dict, action: np.ndarray | None) -> np.ndarray:
        """The target carried from the reset's ``target_pos`` along ``action`` (None: a reset)."""
        import torch

        dev = self.model.device
        arm = torch.as_tensor(np.asarray(info["ee_pos"], np.float32), device=dev)[None]
        if action is None or self._carried is None:
            target = torch.as_tensor(np.asarray(info["target_pos"], np.float32), device=dev)[None]
            previous = torch.as_tensor(REST_ACTION, device=dev)[None]
        else:
            target, before, previous = self._carried
            a = torch.as_tensor(action, device=dev)[None]
            with torch.no_grad():
                target = self.head.object_step(target, before, arm, a, previous).float()
            previous = a
        self._carried = (target, arm, previous)
        return target[0].cpu().numpy()

    def _encode(self) -> np.ndarray:
        import torch

        frames, actions = self._frames, self._actions
        dev = self.model.device
        with torch.no_grad():
            x = torch.from_numpy(np.stack(frames)[None]).to(dev)
            a = (
                torch.from_numpy(np.stack(actions)[None]).to(dev)
                if actions
                else torch.zeros(1, 0, 4, device=dev)
            )
            feats = self.model.features(self.model.initial(x, a)).float()[0].cpu().numpy()
        if self.task_obs:
            feats = np.concatenate([feats, self._task])
        b = self.latent_bound
        return np.clip(feats, -b, b).astype(np.float32)
