"""Where an object is in a real frame: the state head's pixel reader (our extension).

``ObjectReader`` answers "where is the object now that was near ``query``?" from one frame, the
way a robot's perception would: a small convolutional net ends in a spatial softmax (Levine, Finn
et al., deep spatial autoencoders for visuomotor learning, 2016), whose ``K`` feature maps each give
an expected image position (``K`` keypoints, ``(x, y)`` in [-1, 1]); an MLP of the keypoints and
the normalised query gives the object's move from the query, ``pos = query + MLP([kp, q]) · s``
(zero-initialised: it starts as "the object is at the query"). Keypoints carry positions, not
appearance, so the net does not depend on the objects' colours; the query says which object
(PushTable's slots carry no visual identity).

Why it exists: measured on the quick demo's svg-lp (``state_head=True``, exact queries), the
features' reading of the target at a real anchor frame was exactly as far off as its query, at
every step of held-out episodes (0.0 cm gained over the query: 2.6 cm off with a 2.6 cm stale
query, 9.4 cm with the episode's start position): SVG's skip connections carry the still scene,
so the latent need not hold the objects, and a planner re-anchored mid-episode did not know
where the target was (the prediction check's 6.9 cm anchor error). The reader gives the
planner the target's position at every anchor; the state head then integrates it along a plan
(``ObjectHead.state_rollout``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ObjectReader(nn.Module):
    """``(frames uint8 (B, H, W, 3), query (B, 3)) -> position (B, 3)`` in metres.

    ``keypoints`` spatial-softmax maps; ``hidden`` the MLP's width; ``pos_mean`` / ``pos_scale``
    normalise the query (set by the owning head, shared with it).
    """

    def __init__(self, keypoints: int = 16, hidden: int = 128, channels: int = 32) -> None:
        super().__init__()
        self.keypoints = int(keypoints)
        self.conv = nn.Sequential(
            nn.Conv2d(3, channels, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, self.keypoints, 3, padding=1),
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * self.keypoints + 3, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3),
        )
        # A sharp softmax from the start: near-uniform maps put every keypoint at the centre and
        # learn slowly (measured on the quick demo's frames: 2.85 cm after 600 steps with 10,
        # 3.07 with 1, where the 3 cm-jittered query alone is 3.6 cm off).
        self.temperature = nn.Parameter(torch.tensor(10.0))
        nn.init.zeros_(self.mlp[-1].weight)  # starts as "the object is at its query"
        nn.init.zeros_(self.mlp[-1].bias)

    def keypoints_of(self, frames: Tensor) -> Tensor:
        """Expected image positions ``(B, 2K)`` in [-1, 1] of the ``K`` maps' softmax over pixels."""
        x = frames.movedim(-1, -3).float() / 255.0 - 0.5  # (B, 3, H, W)
        maps = self.conv(x) * self.temperature
        b, k, h, w = maps.shape
        prob = maps.flatten(2).softmax(-1).view(b, k, h, w)
        ys = torch.linspace(-1, 1, h, device=maps.device, dtype=prob.dtype)
        xs = torch.linspace(-1, 1, w, device=maps.device, dtype=prob.dtype)
        ex = (prob.sum(2) * xs).sum(-1)  # (B, K)
        ey = (prob.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], 1)

    def forward(self, frames: Tensor, query: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """The object's position ``(B, 3)``: ``query`` ``(B, 3)`` plus its move read off
        ``frames`` uint8 ``(B, H, W, 3)``; ``mean`` / ``scale`` ``(3,)`` normalise positions."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 (B, H, W, 3), got {tuple(frames.shape)}")
        q = (query - mean) / scale
        return query + self.mlp(torch.cat([self.keypoints_of(frames), q], 1)) * scale
