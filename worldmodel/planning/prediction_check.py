"""What a learned planner's model predicted about the target object, against what the sim then did.

A learned MPC on an object task (push, recorded goal) can fail in two opposite ways that the
held-out diagnostics of ``worldmodel eval`` (rollouts of *recorded* actions) do not tell apart:
the model does not see its own pushes coming (the plans' actions are not the data's), or the
planner exploits it (it finds actions the model wrongly believes move the target). This check
scores the model on the planner's own actions. At every plan the model's state head reads the
target from the anchor state (the model's estimate of where it is now) and from the mean rollout
of the chosen plan's first ``replan_every`` actions, the ones the agent then executes (where the
model expects them to take it); the sim says where the target is at this plan and at the next.
Over consecutive plans of an episode, in metres on the table (xy):

- ``anchor_error``: |estimate now - sim now|, how well the model knows where the target is;
- ``predicted_move`` and ``real_move``: |predicted after the actions - estimate now| and |sim at
  the next plan - sim now|: whether the model expects the executed actions to move the target,
  and whether they did (``predicted_move`` far below ``real_move``: pushes it does not predict;
  far above: pushes it only imagines);
- ``error`` against ``stays_put``: |predicted after the actions - sim at the next plan| against
  |sim now - sim at the next plan|, also on the ``moved`` plans alone (the target moved more than
  ``MOVED`` in the sim), where "stays put" is a real baseline;
- ``direction_moved``: on the moved plans, the mean cosine between the predicted move and the real
  one (1: the model knows which way its pushes go; 0 for a plan whose predicted move is under
  ``MOVED`` / 10, a model that expects nothing).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from worldmodel.planning.objectives import LearnedReward

MOVED = 0.005
"""A target that moved more than this (m) between two plans counts as pushed."""

_KEYS = ("anchor_error", "predicted_move", "real_move", "error", "stays_put")


@dataclasses.dataclass(frozen=True)
class PlanReading:
    """One plan of one env: the episode step, and xy positions (m) of the target."""

    t: int
    real: np.ndarray
    """``(2,)`` the sim's target at the plan."""
    estimate: np.ndarray
    """``(2,)`` the head's reading of the anchor state."""
    predicted: np.ndarray
    """``(2,)`` the head's reading after the plan's executed actions (mean rollout)."""


class PredictionCheck:
    """Pairs consecutive ``PlanReading`` s of each episode into the figures of the module docstring.

    Args:
        replan_every: actions executed per plan; two readings pair when the second comes that many
            steps after the first, in the same episode.
    """

    def __init__(self, replan_every: int) -> None:
        self.replan_every = int(replan_every)
        self.rows: list[dict[str, float]] = []
        self._last: dict[int, tuple[Any, PlanReading]] = {}

    def add(self, env: int, episode: Any, reading: PlanReading) -> None:
        """Record env ``env``'s reading; ``episode`` is any object that is the same (``is``) for
        every plan of one episode and new for the next."""
        prev = self._last.get(env)
        if prev is not None and prev[0] is episode and reading.t == prev[1].t + self.replan_every:
            self.rows.append(_row(prev[1], reading.real))
        self._last[env] = (episode, reading)

    def reset(self) -> None:
        self.rows, self._last = [], {}

    def summary(self) -> dict[str, float | int]:
        """Means (m) over the paired plans, ``pairs`` their count, ``moved`` the count where the sim's
        target moved more than ``MOVED``, with ``error_moved`` and ``stays_put_moved`` over those
        (NaN where there are none)."""
        moved = [r for r in self.rows if r["real_move"] > MOVED]
        out: dict[str, float | int] = {k: _mean(self.rows, k) for k in _KEYS}
        out.update(pairs=len(self.rows), moved=len(moved))
        out.update(error_moved=_mean(moved, "error"), stays_put_moved=_mean(moved, "stays_put"))
        out["direction_moved"] = _mean(moved, "direction")
        return out


def checkable(objective: Any) -> bool:
    """Whether a planner on ``objective`` reads a target object the check can score: a
    ``LearnedReward`` on an object task (push, recorded goal)."""
    return isinstance(objective, LearnedReward) and objective.spec.uses_objects


def describe(summary: dict[str, float | int]) -> str:
    """One line of ``PredictionCheck.summary()`` in cm (empty when no plans paired)."""
    if not summary.get("pairs"):
        return ""
    cm = {k: 100 * float(summary[k]) for k in _KEYS}
    return (
        f"the model on its own plans (target object, {summary['pairs']} plans, {summary['moved']} "
        f"pushed): it reads the target {cm['anchor_error']:.1f} cm off; expects each plan to move it "
        f"{cm['predicted_move']:.2f} cm, the plans moved it {cm['real_move']:.2f} (direction agreement "
        f"{summary['direction_moved']:.2f}); {cm['error']:.1f} cm off after them vs {cm['stays_put']:.1f} "
        "for stays put"
    )


def _row(plan: PlanReading, real_next: np.ndarray) -> dict[str, float]:
    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))

    predicted, real = plan.predicted - plan.estimate, real_next - plan.real
    size = float(np.linalg.norm(predicted) * np.linalg.norm(real))
    expects = np.linalg.norm(predicted) > MOVED / 10
    return {
        "anchor_error": dist(plan.estimate, plan.real),
        "predicted_move": dist(plan.predicted, plan.estimate),
        "real_move": dist(real_next, plan.real),
        "error": dist(plan.predicted, real_next),
        "stays_put": dist(plan.real, real_next),
        "direction": float(predicted @ real) / size if expects and size > 0 else 0.0,
    }


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")
