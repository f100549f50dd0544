"""Loading the perceptual networks' weights from local files without running code
(``torch.load(weights_only=True)``): ``load_i3d`` and ``load_lpips``.

The expected layouts (state dicts of the common PyTorch I3D port, of ``lpips.LPIPS`` or of
torchvision's trunks plus the reference's lin layers) are documented in
``worldmodel.training.perceptual``. Every problem with a file is a one-line ``CheckpointError``
naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from worldmodel.errors import CheckpointError
from worldmodel.training.perceptual_nets import I3D, LPIPS


def _summary(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _read_state_dict(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """A state dict from ``path`` without running code; one-line ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} weights not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, pickled code, TorchScript, not a torch file
        raise CheckpointError(
            f"{path}: not a readable {what} state dict (torch.load weights_only: {_summary(err)})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a {what} state dict (expected a dict of tensors)")
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} holds NaN or infinite values")
    return state


def _load_into(module: nn.Module, state: dict[str, Tensor], path: Path, what: str, extra_ok) -> None:
    """Strict load of ``module``'s keys from ``state``: missing, mis-shaped or unexpected keys are
    one-line errors (``extra_ok(key)`` names the keys that may be ignored)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path}: not {what} weights: missing {', '.join(missing[:3])}{more}")
    unexpected = [k for k in state if k not in own and not extra_ok(k)]
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise CheckpointError(f"{path}: not {what} weights: unexpected {', '.join(unexpected[:3])}{more}")
    for k, v in own.items():
        if k in state and state[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: not {what} weights: {k} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> I3D:
    """The Kinetics-400 I3D from a local state dict (layout in the ``worldmodel.training.perceptual``
    docstring), in eval mode."""
    path = Path(path)
    state = _read_state_dict(path, "I3D")
    logits = state.get("logits.conv3d.weight")
    if logits is not None and logits.dim() == 5 and logits.shape[0] != 400:
        raise CheckpointError(
            f"{path}: I3D with {logits.shape[0]} classes; FVD uses the 400 Kinetics-400 logits"
        )
    net = I3D()
    _load_into(net, state, path, "I3D (Kinetics-400)", lambda k: k.endswith("num_batches_tracked"))
    return net.to(device).eval().requires_grad_(False)


def _lpips_trunk(state: dict[str, Tensor], path: Path) -> str:
    first = state.get("net.slice1.0.weight", state.get("features.0.weight"))
    if first is None or first.dim() != 4:
        raise CheckpointError(
            f"{path}: not LPIPS weights: no trunk (net.slice1.0.weight as lpips.LPIPS saves it, or "
            "features.0.weight as torchvision's alexnet/vgg16)"
        )
    kernel = first.shape[-1]
    if kernel not in (11, 3):
        raise CheckpointError(
            f"{path}: not LPIPS weights: first kernel {kernel}×{kernel} is neither AlexNet nor VGG16"
        )
    return "alex" if kernel == 11 else "vgg"


def load_lpips(path: str | os.PathLike, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS (AlexNet or VGG16 trunk, read off the file) from a local state dict, in eval mode."""
    path = Path(path)
    state = _read_state_dict(path, "LPIPS")
    net = LPIPS(_lpips_trunk(state, path))
    aliases = {}
    for key in net.state_dict():
        if key.startswith("net.slice"):  # torchvision's name: features.{index}.{param}
            aliases["features." + key.split(".", 2)[2]] = key
    renamed: dict[str, Tensor] = {}
    for k, v in state.items():
        if k in aliases:
            k = aliases[k]
        elif k.startswith("lins."):  # lpips' ModuleList duplicate of lin{k}
            k = "lin" + k.removeprefix("lins.")
        if k.startswith("lin") and k.endswith(".model.0.weight"):  # saved without dropout
            k = k.removesuffix("0.weight") + "1.weight"
        renamed.setdefault(k, v)
    _load_into(
        net,
        renamed,
        path,
        f"LPIPS ({net.net_name})",
        lambda k: k.startswith(("scaling_layer.", "classifier.")),
    )
    return net.to(device).eval().requires_grad_(False)
