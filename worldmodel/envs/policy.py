"""A BAIR-like scripted exploration policy for PushTable and a ``rollout`` helper that records an episode.

BAIR's pushing data comes from random end-effector motion biased toward objects. ``RandomPushPolicy``
does the same: smooth random motion (an Ornstein–Uhlenbeck-like low-pass of Gaussian noise per axis,
pulled back from the workspace edges and toward a per-episode working height), and, in a share
``push_probability`` of episodes, a scripted push: rise, move behind a chosen object, descend with the
gripper closed, push straight through it, then go back to random motion. The pushed object is the
task's target with probability 1/2 (pushed toward the goal), otherwise any present object in a random
direction. All randomness comes from the policy's own ``np.random.Generator``.
"""

from __future__ import annotations

import numpy as np

from worldmodel.envs.push_table import MAX_OBJECTS, PushTableConfig, PushTableEnv

__all__ = ["RandomPushPolicy", "rollout"]

_HOVER_Z = 0.11  # above the tallest object (8 cm)
_PUSH_Z = 0.012  # fingertips just above the table
_STANDOFF = 0.075  # start this far behind the object centre (larger than any object's half-width + finger)


class RandomPushPolicy:
    """BAIR-like scripted exploration: smooth random EE motion, and with probability
    ``push_probability`` per episode it moves behind a random object and pushes through it.

    Call :meth:`reset` with the ``info`` of ``env.reset`` and then the policy with each step's
    ``info``; it returns float32 ``(4,)`` actions in [-1, 1] (gripper: +1 closed, as in the env).
    ``config`` must match the env's (action scale and end-effector box); the default matches the
    default env.
    """

    def __init__(
        self,
        seed: int,
        push_probability: float = 0.5,
        *,
        smoothing: float = 0.8,
        noise_scale: float = 0.6,
        config: PushTableConfig | None = None,
    ) -> None:
        if not 0.0 <= push_probability <= 1.0:
            raise ValueError(f"push_probability must be in [0, 1], got {push_probability}")
        self.push_probability = float(push_probability)
        self.smoothing = float(smoothing)
        self.noise_scale = float(noise_scale)
        self.config = config or PushTableConfig()
        self.rng = np.random.default_rng(seed)
        self.pushing = False  # whether this episode scripts a push
        self._phase = "wander"
        self._reset_state()

    def _reset_state(self) -> None:
        self._noise = np.zeros(4)
        self._prev = np.zeros(4)
        self._steps_in_phase = 0

    def reset(self, info: dict) -> None:
        """Start an episode; ``info`` is the one returned by ``env.reset``."""
        rng = self.rng
        self._reset_state()
        self._z_pref = rng.uniform(0.015, 0.08)
        self._noise = rng.normal(0.0, self.noise_scale, size=4)
        self.pushing = bool(rng.random() < self.push_probability)
        self._phase = "wander"
        self._wander_left = 0
        if not self.pushing:
            return
        n = int(info["num_objects"])
        toward_goal = rng.random() < 0.5
        self._obj = int(info["target"]) if toward_goal else int(rng.integers(n))
        obj = np.asarray(info["object_pos"], np.float64)[self._obj, :2]
        goal = np.asarray(info["goal_pos"], np.float64)[:2]
        self._dir = self._pick_direction(obj, goal if toward_goal else None)
        self._push_len = rng.uniform(0.08, 0.18)
        self._wander_left = int(rng.integers(0, 4))  # a little random motion first
        self._phase = "prelude"

    def _pick_direction(self, obj: np.ndarray, goal: np.ndarray | None) -> np.ndarray:
        """A unit push direction whose start point behind the object lies inside the EE box."""
        low, high = np.array(self.config.ee_low[:2]) + 0.01, np.array(self.config.ee_high[:2]) - 0.01
        candidates = []
        if goal is not None and np.linalg.norm(goal - obj) > 1e-6:
            candidates.append((goal - obj) / np.linalg.norm(goal - obj))
        for _ in range(16):
            angle = self.rng.uniform(-np.pi, np.pi)
            candidates.append(np.array([np.cos(angle), np.sin(angle)]))
        for d in candidates:
            start = obj - d * _STANDOFF
            if np.all(start >= low) and np.all(start <= high):
                return d
        d = -obj / max(np.linalg.norm(obj), 1e-6)  # toward the centre: its start is further out but clipped
        return d

    def __call__(self, info: dict) -> np.ndarray:
        ee = np.asarray(info["ee_pos"], np.float64)
        cfg = self.config
        phase = self._advance_phase(info, ee)
        if phase == "wander":
            a = self._wander(ee)
        else:
            a = 0.3 * self._smooth_noise()  # a little noise keeps scripted motion natural
            obj = np.asarray(info["object_pos"], np.float64)[self._obj]
            behind = obj[:2] - self._dir * _STANDOFF
            if phase == "approach":
                z = _HOVER_Z if np.linalg.norm(ee[:2] - behind) > 0.03 else _PUSH_Z
                goal_xyz = np.array([*behind, z])
                gain_xy = 1.0 if ee[2] > _HOVER_Z - 0.03 else 0.3  # rise before travelling
                cmd = (goal_xyz - ee) / cfg.action_scale
                cmd[:2] *= gain_xy
            else:  # push: go straight through the object along the push direction
                end = self._push_start + self._dir * (self._push_len + _STANDOFF)
                cmd = (np.array([*end, _PUSH_Z]) - ee) / cfg.action_scale
            cmd = np.clip(cmd, -0.9, 0.9)
            a[:3] = a[:3] + cmd
            a[3] = 1.0  # closed: the fingers form a solid block to push with
        # Low-pass the command so consecutive actions stay close (BAIR's motion is smooth).
        out = 0.35 * self._prev + 0.65 * np.clip(a, -1.0, 1.0)
        self._prev = out
        self._steps_in_phase += 1
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def _advance_phase(self, info: dict, ee: np.ndarray) -> str:
        if self._phase == "prelude":
            self._wander_left -= 1
            if self._wander_left < 0:
                self._set_phase("approach")
            else:
                return "wander"
        if self._phase == "approach":
            obj = np.asarray(info["object_pos"], np.float64)[self._obj]
            behind = obj[:2] - self._dir * _STANDOFF
            if np.linalg.norm(ee[:2] - behind) < 0.02 and ee[2] < _PUSH_Z + 0.015:
                self._push_start = ee[:2].copy()
                self._set_phase("push")
            elif self._steps_in_phase > 25:
                self._set_phase("wander")
        if self._phase == "push":
            progress = float(np.dot(ee[:2] - self._push_start, self._dir))
            if progress > self._push_len + _STANDOFF - 0.01 or self._steps_in_phase > 12:
                self._set_phase("wander")
        return self._phase

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._steps_in_phase = 0

    def _smooth_noise(self) -> np.ndarray:
        rho = self.smoothing
        eps = self.rng.normal(0.0, self.noise_scale, size=4)
        self._noise = rho * self._noise + np.sqrt(1.0 - rho * rho) * eps
        return self._noise.copy()

    def _wander(self, ee: np.ndarray) -> np.ndarray:
        cfg = self.config
        a = self._smooth_noise()
        low, high = np.array(cfg.ee_low), np.array(cfg.ee_high)
        margin = 0.04
        # Steer back from the edges of the end-effector box and toward the working height.
        a[:2] += np.clip((low[:2] + margin - ee[:2]) / cfg.action_scale, 0.0, 1.0)
        a[:2] -= np.clip((ee[:2] - high[:2] + margin) / cfg.action_scale, 0.0, 1.0)
        a[2] = 0.5 * a[2] + np.clip(0.5 * (self._z_pref - ee[2]) / cfg.action_scale, -0.7, 0.7)
        return a


def rollout(env: PushTableEnv, policy: RandomPushPolicy, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """Reset ``env`` with ``seed``, reset ``policy``, and record ``seq_len`` steps.

    Returns frames uint8 (T,H,W,3), actions float32 (T,4), states float32 (T,3) (end-effector
    position), objects float32 (T,MAX_OBJECTS,3) (NaN rows for absent objects), goal float32 (3,),
    target / num_objects int64 scalar arrays and pushed bool scalar array (the policy scripted a push).
    Alignment as in BAIR: ``frames[t]`` is observed, then ``actions[t]`` is applied, giving
    ``frames[t + 1]``; the frame after the last action is not recorded. A ``TimeLimit`` shorter than
    ``seq_len`` is ignored (stepping continues).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    obs, info = env.reset(seed=seed)
    policy.reset(info)
    frames = np.empty((seq_len, *obs.shape), np.uint8)
    actions = np.empty((seq_len, 4), np.float32)
    states = np.empty((seq_len, 3), np.float32)
    objects = np.full((seq_len, MAX_OBJECTS, 3), np.nan, np.float32)  # NaN rows: absent objects
    for t in range(seq_len):
        frames[t] = obs
        states[t] = info["ee_pos"]
        n = info["num_objects"]
        objects[t, :n] = info["object_pos"][:n]
        actions[t] = policy(info)
        obs, _, _, _, info = env.step(actions[t])
    return {
        "frames": frames,
        "actions": actions,
        "states": states,
        "objects": objects,
        "goal": np.asarray(info["goal_pos"], np.float32),
        "target": np.array(info["target"], np.int64),
        "num_objects": np.array(info["num_objects"], np.int64),
        "pushed": np.array(policy.pushing, np.bool_),
    }
