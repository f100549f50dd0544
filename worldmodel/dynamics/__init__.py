"""World models behind one interface: ``make(name, ...)``, ``load(path)``, ``LatentDynamics``.

Names: ``svg-lp``, ``svg-fp`` (and ``svg-det``, the deterministic ablation); ``videoflow`` (flow-based,
exact likelihood, see ``videoflow.py``);
``vgan`` (two-stream video GAN generating clips from a context frame, see ``vgan.py``); ``jepa``
(decoder-free: predicts the next latent, SIGReg against collapse, optional detached decoder, see
``jepa.py``).
"""

from worldmodel.device import resolve_device
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, State
from worldmodel.dynamics.checkpoint import load, save
from worldmodel.dynamics.registry import available, build_config, make, register

__all__ = [
    "DynamicsConfig",
    "LatentDynamics",
    "State",
    "available",
    "build_config",
    "load",
    "make",
    "register",
    "resolve_device",
    "save",
]
