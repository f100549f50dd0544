"""Planning with world models: CEM / iCEM, MPPI, gradient ascent, objectives on a ``LatentDynamics``,
and MPC agents.

``CEM``, ``MPPI`` and ``GradientPlanner`` are pure batched optimisers over action sequences
``(P, N, H, A)`` with one interface (``optimize``, ``warm_start``, ``CEMResult``); objectives roll a
model forward from a tiled state and score the candidates; ``MPCAgent`` re-plans in a real env
behind SB3's ``predict``; ``OracleAgent`` runs the same planner on the simulator itself
(``SimOracle``), ``RandomAgent`` is the baseline. ``run_episodes`` runs any of them with SB3's
``evaluate_policy`` and reports success, final distance and planning time per action.
"""

from __future__ import annotations

from worldmodel.planning.agent import PlanningAgent
from worldmodel.planning.box import BoxPlanner
from worldmodel.planning.cem import CEM, CEMConfig, CEMResult, WarmStart, colored_noise
from worldmodel.planning.episodes import evaluate, run_episodes
from worldmodel.planning.gradient import GradientConfig, GradientPlanner
from worldmodel.planning.mpc import MPCAgent, OracleAgent, RandomAgent
from worldmodel.planning.mppi import MPPI, MPPIConfig, mppi_weights
from worldmodel.planning.objectives import GoalImage, LearnedReward, Objective, Task, goal_features
from worldmodel.planning.oracle import SimOracle
from worldmodel.planning.task_source import TaskInfo

__all__ = [
    "CEM",
    "MPPI",
    "BoxPlanner",
    "CEMConfig",
    "CEMResult",
    "GoalImage",
    "GradientConfig",
    "GradientPlanner",
    "LearnedReward",
    "MPCAgent",
    "MPPIConfig",
    "Objective",
    "OracleAgent",
    "PlanningAgent",
    "RandomAgent",
    "SimOracle",
    "Task",
    "TaskInfo",
    "WarmStart",
    "colored_noise",
    "evaluate",
    "goal_features",
    "mppi_weights",
    "run_episodes",
]
