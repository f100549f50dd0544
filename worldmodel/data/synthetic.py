"""A tiny synthetic dataset whose frames depend on the actions: a coloured square pushed around.

``moving_square`` makes sequences in the same layout as the real datasets (see ``batch.py``):
frames uint8 ``(N, T, H, W, 3)``, actions float32 ``(N, T, A)`` with BAIR alignment (``a_t`` moves
frame ``x_t`` to ``x_{t+1}``, so the last action is unused), and states float32 ``(N, T, 3)``.

The actions are drawn independently per step, so the square's motion cannot be guessed from the
past frames: a predictor beats copy-last-frame only if it reads the actions. That makes it the
smallest honest test of action conditioning (tests/test_svg.py) and a fast trainer fixture.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

# Saturated colours (RGB, 0..255) on a dark background: easy to tell apart from the background.
_PALETTE = torch.tensor(
    [
        [255, 64, 64],
        [64, 255, 64],
        [64, 128, 255],
        [255, 255, 64],
        [255, 64, 255],
        [64, 255, 255],
    ],
    dtype=torch.uint8,
)
_BACKGROUND = 16


def moving_square(
    num_sequences: int,
    seq_len: int,
    *,
    image_size: int = 16,
    square: int = 3,
    seed: int = 0,
    action_dim: int = 4,
    max_step: int = 2,
) -> dict[str, torch.Tensor]:
    """Sequences of one coloured square moved by the actions.

    Frames uint8 ``(N, T, H, W, 3)``, actions float32 ``(N, T, A)``, states float32 ``(N, T, 3)``.
    A square of ``square`` pixels (colour drawn per sequence from a 6-colour palette) sits on a
    uniform dark background (value 16). Between frames it moves by ``round(action[:2] * max_step)``
    pixels (``action[0]`` → x/columns, ``action[1]`` → y/rows), so ``a_t`` moves ``x_t`` → ``x_{t+1}``;
    positions are clamped at the walls. Actions are i.i.d. uniform in [-1, 1] (all ``A`` dims; dims
    beyond the first two are ignored by the dynamics, like noise channels). The start position is
    uniform over the valid positions. States are ``(cx, cy, 0)``: the square's centre divided by
    ``image_size``. Everything is a pure function of the arguments (``seed`` included).

    Args:
        num_sequences: ``N``.
        seq_len: ``T`` frames per sequence.
        image_size: frame height and width ``H = W``.
        square: side of the square in pixels (``<= image_size``).
        seed: seed for the start positions, colours and actions.
        action_dim: ``A >= 2``.
        max_step: pixels moved per step at ``|action| = 1``.
    """
    if num_sequences < 1 or seq_len < 1:
        raise ValueError(f"num_sequences and seq_len must be >= 1, got {num_sequences}, {seq_len}")
    if action_dim < 2:
        raise ValueError(f"action_dim must be >= 2 (x and y), got {action_dim}")
    if not 1 <= square <= image_size:
        raise ValueError(f"square must be in [1, image_size={image_size}], got {square}")
    gen = torch.Generator().manual_seed(int(seed))
    n, t_len, size = num_sequences, seq_len, image_size
    hi = size - square  # largest valid top-left coordinate
    actions = torch.rand(n, t_len, action_dim, generator=gen) * 2 - 1
    start = torch.randint(0, hi + 1, (n, 2), generator=gen)
    colour = _PALETTE[torch.randint(0, len(_PALETTE), (n,), generator=gen)]

    moves = torch.round(actions[:, :-1, :2] * max_step).long()  # (N, T-1, 2)
    pos = torch.empty(n, t_len, 2, dtype=torch.long)
    pos[:, 0] = start
    for t in range(1, t_len):
        pos[:, t] = (pos[:, t - 1] + moves[:, t - 1]).clamp(0, hi)

    coords = torch.arange(size)
    x0 = pos[..., 0, None]  # (N, T, 1)
    y0 = pos[..., 1, None]
    in_x = (coords >= x0) & (coords < x0 + square)  # (N, T, W)
    in_y = (coords >= y0) & (coords < y0 + square)  # (N, T, H)
    mask = in_y[..., :, None] & in_x[..., None, :]  # (N, T, H, W)
    frames = torch.full((n, t_len, size, size, 3), _BACKGROUND, dtype=torch.uint8)
    frames = torch.where(mask[..., None], colour[:, None, None, None, :], frames)

    centre = (pos.float() + square / 2) / size
    states = torch.cat([centre, torch.zeros(n, t_len, 1)], dim=-1)
    return {"frames": frames.contiguous(), "actions": actions.float(), "states": states.float()}


class SyntheticDataset(Dataset):
    """Wraps a ``moving_square``-style dict; item ``i`` is ``{key: tensor[i]}`` for every key.

    ``SyntheticDataset.moving_square(N, T, **kw)`` builds one directly.
    """

    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        if not data:
            raise ValueError("SyntheticDataset needs at least one tensor")
        sizes = {k: v.shape[0] for k, v in data.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"SyntheticDataset tensors disagree on the sequence count: {sizes}")
        self.data = dict(data)
        self._len = next(iter(sizes.values()))

    @classmethod
    def moving_square(cls, num_sequences: int, seq_len: int, **kw) -> SyntheticDataset:
        """``SyntheticDataset(moving_square(num_sequences, seq_len, **kw))``."""
        return cls(moving_square(num_sequences, seq_len, **kw))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.data.items()}

    def whole_episode(self, index: int) -> dict[str, np.ndarray]:
        """Sequence ``index``'s arrays (every item is a whole sequence), as the readers give them."""
        return {k: v[index].numpy() for k, v in self.data.items()}
