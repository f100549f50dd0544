"""Saving and loading an agent run without executing anything from it.

Loading a run executes nothing from it. ``RUN/checkpoints/last.zip`` is written by SB3's
``model.save`` (so SB3's own ``PPO.load``/``SAC.load`` still open it, at the risk of whoever calls
them: SB3 unpickles parts of it), but the scripts never load it that way. ``load_agent`` rebuilds the
algorithm from ``RUN/config.json`` and reads the zip with ``zipfile``: the weight entries
(``policy.pth``, the optimizers', ``pytorch_variables.pth``) with ``torch.load(weights_only=True)``,
which accepts tensors and plain containers only, and of the ``data`` entry (JSON) only the step,
update and episode counters; its cloudpickled ``:serialized:`` values are never decoded. SAC's
replay buffer is stored as arrays (``RUN/checkpoints/replay_buffer.npz``, read with
``allow_pickle=False``); a ``replay_buffer.pkl`` of an older run is never read.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from worldmodel.files import atomic_path
from worldmodel.rl.config import (
    RunConfig,
    algo_class,
    checkpoint_path,
    policy_name,
    replay_buffer_path,
    sb3_kwargs,
)


def save_agent(model, run: Path) -> Path:
    """``RUN/checkpoints/last.zip``, written under a temporary name and renamed."""
    path = checkpoint_path(run)
    with atomic_path(path) as tmp:  # the temporary keeps .zip, so SB3 does not append one
        model.save(tmp)
    return path


# ----------------------------------------------------------------------- loading an agent
AGENT_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")
"""The numbers taken from ``last.zip``'s ``data`` entry (all else there is the run's config)."""
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
"""The ``ReplayBuffer`` arrays in ``replay_buffer.npz`` (``next_observations`` unless SB3 shares it
with ``observations``), each up to its filled part, with ``pos`` and ``full``."""


def build_agent(cfg: RunConfig, env, device: str | None = None):
    """A new SB3 algorithm of the run's config on ``env``.

    ``env``: the training ``VecEnv``, or a ``gym.Env`` to act in only (evaluation): it is wrapped in
    a ``DummyVecEnv`` and SAC's replay buffer shrunk to one transition. An SB3 refusal of the
    settings is a ``ValueError``."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

    cls = algo_class(cfg.algo)
    kwargs = sb3_kwargs(cfg)
    if device is not None:
        kwargs["device"] = device
    acting_only = not isinstance(env, VecEnv)
    if acting_only:
        env = DummyVecEnv([lambda e=env: e])
        if cfg.algo == "sac":
            kwargs["buffer_size"] = 1
    try:
        with warnings.catch_warnings():
            if acting_only:  # e.g. PPO's batch size against n_steps of one env: no learning here
                warnings.simplefilter("ignore")
            return cls(policy_name(cfg.obs), env, **kwargs)
    except (AssertionError, ValueError, TypeError) as err:
        raise ValueError(f"SB3's {cls.__name__} refuses the run's settings: {_one_line(err)}") from None


def load_agent(cfg: RunConfig, path: str | os.PathLike, env, device: str | None = None):
    """The agent saved in ``path`` (a ``last.zip``), without executing anything from it.

    ``build_agent(cfg, env, device)``, then from the zip (read with ``zipfile``): the state dicts
    its class saves (``policy.pth``, the optimizers') and ``pytorch_variables.pth`` (SAC's
    ``log_ent_coef``), each through ``torch.load(weights_only=True)`` and checked against the
    rebuilt model (names, shapes); from the ``data`` entry, parsed as plain JSON, only the counters
    ``AGENT_COUNTERS`` (whole numbers). Any failure is a one-line ``ValueError`` naming the file."""
    model = build_agent(cfg, env, device)
    try:
        with zipfile.ZipFile(path) as archive:
            _read_agent_zip(model, archive)
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        # a damaged archive: bad CRC or deflate stream, encrypted, unknown compression...
        raise ValueError(f"{path}: not a readable agent checkpoint ({_one_line(err)})") from None
    except _BadAgent as err:
        raise ValueError(f"{path}: {err}") from None
    return model


class _BadAgent(Exception):
    pass


def _read_agent_zip(model, archive: zipfile.ZipFile) -> None:
    zipped = _AgentZip(model, archive)
    state_names, variable_names = model._get_torch_save_params()
    params = {}
    for name in state_names:
        params[name] = zipped.tensors(f"{name}.pth")
        if not isinstance(params[name], dict):
            raise _BadAgent(f"{name}.pth is not a state dict")
    try:
        model.set_parameters(params, exact_match=True, device=model.device)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise _BadAgent(f"its weights do not fit the run's config ({_one_line(err)})") from None
    _check_optimizer_state(model, state_names)
    if variable_names:
        _copy_variables(model, zipped.tensors("pytorch_variables.pth"), variable_names)
    try:
        data = json.loads(zipped.entry("data"))  # plain JSON: ":serialized:" values stay strings
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _BadAgent(f"its data entry is not JSON ({_one_line(err)})") from None
    if not isinstance(data, dict) or "num_timesteps" not in data:
        raise _BadAgent("its data entry holds no num_timesteps")
    for key in AGENT_COUNTERS:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _BadAgent(f"its data entry's {key} is not a whole number >= 0: {value!r}")
        setattr(model, key, value)


class _AgentZip:
    """The entries of an SB3 zip, tensors read with ``torch.load(weights_only=True)`` only."""

    def __init__(self, model, archive: zipfile.ZipFile) -> None:
        self.model, self.archive, self.names = model, archive, set(archive.namelist())

    def entry(self, name: str) -> bytes:
        if name not in self.names:
            raise _BadAgent(f"not an SB3 {type(self.model).__name__} checkpoint (no {name!r} entry)")
        return self.archive.read(name)

    def tensors(self, name: str):
        import torch

        raw = self.entry(name)
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal says it all
                warnings.simplefilter("ignore")
                return torch.load(io.BytesIO(raw), map_location=self.model.device, weights_only=True)
        except Exception as err:  # weights_only refuses anything but tensors and plain containers
            raise _BadAgent(f"{name} is not plain tensors ({_weights_only_reason(err)})") from None


def _check_optimizer_state(model, state_names: list[str]) -> None:
    """An optimizer's ``load_state_dict`` does not compare its state to the parameters: do."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    for name in state_names:
        opt = recursive_getattr(model, name)
        if not isinstance(opt, torch.optim.Optimizer):
            continue
        for param, state in opt.state.items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    raise _BadAgent(
                        f"{name}.pth: state {key!r} of shape {tuple(value.shape)} for a parameter "
                        f"of shape {tuple(param.shape)}"
                    )


def _copy_variables(model, variables, names: list[str]) -> None:
    """``pytorch_variables.pth`` into the model's tensors (SAC's ``log_ent_coef``), in place, so the
    optimizers that hold them keep holding them."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    if not isinstance(variables, dict):
        raise _BadAgent("pytorch_variables.pth is not a dict of tensors")
    for name in names:
        value, target = variables.get(name), recursive_getattr(model, name)
        if not torch.is_tensor(value) or not torch.is_tensor(target) or value.shape != target.shape:
            raise _BadAgent(f"pytorch_variables.pth: {name!r} does not fit the run's config")
        with torch.no_grad():
            target.copy_(value.to(target.device, target.dtype))


def _weights_only_reason(err: Exception) -> str:
    """What ``torch.load``'s (long) refusal names, e.g. ``Unsupported global: GLOBAL getattr``."""
    text = " ".join(str(err).split())
    if "WeightsUnpickler error:" not in text:
        return _one_line(err)
    reason = text.split("WeightsUnpickler error:", 1)[1].split(" was not an allowed", 1)[0]
    reason = reason.split(" Check the documentation", 1)[0].strip().rstrip(".")
    return _one_line(f"torch.load(weights_only=True) refused it: {reason}", limit=200)


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_replay_buffer(model, run: Path) -> Path | None:
    """Off-policy runs: the replay buffer as ``RUN/checkpoints/replay_buffer.npz`` (the arrays of
    ``BUFFER_ARRAYS`` up to the filled part, ``pos``, ``full``; atomic), so resume keeps it."""
    buffer = getattr(model, "replay_buffer", None)
    if buffer is None:
        return None
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:filled] for k in _buffer_arrays(buffer)}
    arrays["pos"], arrays["full"] = np.asarray(buffer.pos, np.int64), np.asarray(buffer.full, np.bool_)
    path = replay_buffer_path(run)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_replay_buffer(model, path: str | os.PathLike) -> None:
    """Fill ``model.replay_buffer`` from ``save_replay_buffer``'s file: ``np.load(allow_pickle=False)``,
    every array checked against the rebuilt buffer (names, dtypes, shapes); a one-line
    ``ValueError`` naming the file otherwise."""
    buffer = model.replay_buffer
    expected = set(_buffer_arrays(buffer))
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an .npz archive")
        with z:
            if set(z.files) != expected | {"pos", "full"}:
                raise ValueError(f"holds {sorted(z.files)}, not {sorted(expected | {'pos', 'full'})}")
            pos, full = z["pos"], z["full"]
            if pos.shape or pos.dtype.kind not in "iu" or full.shape or full.dtype != np.bool_:
                raise ValueError("pos and full are not an integer and a bool")
            pos, full = int(pos), bool(full)
            if not 0 <= pos < buffer.buffer_size:
                raise ValueError(f"pos {pos} outside the run's buffer of {buffer.buffer_size}")
            filled = buffer.buffer_size if full else pos
            for name in sorted(expected):
                array, target = z[name], getattr(buffer, name)
                want = (filled, *target.shape[1:])
                if array.dtype != target.dtype or array.shape != want:
                    raise ValueError(
                        f"{name} is {array.dtype} {array.shape}, the run's buffer needs {target.dtype} {want}"
                    )
                target[:filled] = array
    except (
        OSError,
        ValueError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise ValueError(f"{path}: not a replay buffer of this run ({_one_line(err)})") from None
    buffer.pos, buffer.full = pos, full


def _buffer_arrays(buffer) -> list[str]:
    arrays = [k for k in BUFFER_ARRAYS if isinstance(getattr(buffer, k, None), np.ndarray)]
    if "observations" not in arrays:
        raise ValueError(f"{type(buffer).__name__}: only array replay buffers are saved")
    return arrays
