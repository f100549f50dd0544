"""The interface every world model implements, and the batched rollout state it passes around.

A ``LatentDynamics`` holds weights only. Rollout state lives in a ``State``: a flat mapping of
named tensors that all share the leading batch axis ``B``. Planners tile one context into many
candidates with ``state.repeat_interleave(N)``; batched environments keep thousands of episodes in
one ``State`` and replace finished ones with ``state.where(mask, fresh)``.

Time alignment (BAIR): ``a_t`` drives frame ``x_t`` to ``x_{t+1}``. ``initial`` consumes the
context frames ``x_0..x_{T0-1}`` and the actions between them ``a_0..a_{T0-2}``; each ``step``
then takes the next action and produces the next frame.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from worldmodel.choices import check_choice
from worldmodel.data.batch import Batch


class State(Mapping[str, Tensor]):
    """Batched rollout state: named tensors sharing the leading batch axis ``B``.

    Supports indexing by name (``state["h"]``) and by batch index or mask (``state[idx]`` returns a
    ``State``), ``len``, ``repeat_interleave``, ``to(device)``, ``cat`` and ``where``.
    """

    __slots__ = ("_tensors",)

    def __init__(self, tensors: Mapping[str, Tensor] | None = None, **kw: Tensor) -> None:
        merged = {**(tensors or {}), **kw}
        sizes = {t.shape[0] for t in merged.values()}
        if len(sizes) > 1:
            shapes = {k: tuple(v.shape) for k, v in merged.items()}
            raise ValueError(f"State tensors disagree on the batch size: {shapes}")
        self._tensors: dict[str, Tensor] = merged

    # Mapping protocol (by name) plus batch indexing.
    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._tensors[key]
        return State({k: v[key] for k, v in self._tensors.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        """The batch size ``B`` (0 for an empty state)."""
        return next(iter(self._tensors.values())).shape[0] if self._tensors else 0

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._tensors.items())
        return f"State({inner})"

    @property
    def batch_size(self) -> int:
        """The leading batch axis ``B``."""
        return len(self)

    @property
    def device(self) -> torch.device:
        """Device of the tensors (all share one)."""
        return next(iter(self._tensors.values())).device

    def replace(self, **kw: Tensor) -> State:
        """A new state with some tensors replaced or added."""
        return State({**self._tensors, **kw})

    def map(self, fn) -> State:
        """Apply ``fn`` to every tensor."""
        return State({k: fn(v) for k, v in self._tensors.items()})

    def to(self, device: torch.device | str) -> State:
        """Move every tensor to ``device``."""
        return self.map(lambda t: t.to(device))

    def repeat_interleave(self, repeats: int) -> State:
        """Tile each batch row ``repeats`` times: rows ``[s0, s0, ..., s1, s1, ...]``."""
        return self.map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> State:
        """Detach every tensor from the autograd graph."""
        return self.map(lambda t: t.detach())

    def where(self, mask: Tensor, other: State) -> State:
        """Rows of ``other`` where ``mask`` (``(B,)`` bool) is true, rows of ``self`` elsewhere."""
        out = {}
        for k, v in self._tensors.items():
            m = mask.view(-1, *([1] * (v.dim() - 1)))
            out[k] = torch.where(m, other[k], v)
        return State(out)

    @staticmethod
    def cat(states: list[State]) -> State:
        """Concatenate states along the batch axis."""
        keys = states[0].keys()
        return State({k: torch.cat([s[k] for s in states], dim=0) for k in keys})


STATE_ARMS = ("features", "actions")
"""``DynamicsConfig.state_arm``'s and ``state_objects``' choices."""


@dataclasses.dataclass
class DynamicsConfig:
    """Fields every model config has. Models subclass this with their own fields."""

    image_size: int = 64
    """Frame height and width in pixels."""
    channels: int = 3
    """Colour channels."""
    action_dim: int = 4
    """Action size ``A`` (4 for BAIR and PushTable: dx, dy, dz, gripper)."""
    n_past: int = 2
    """Context frames used by ``initial`` during training and evaluation."""
    n_future: int = 10
    """Frames predicted after the context during training."""
    lr: float = 2e-3
    """Adam learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    batch_size: int = 100
    """Training batch size (the trainer's default)."""
    state_head: bool = False
    """Train a state head with the model (our extension; see ``LatentDynamics.state_loss``): the
    end effector and every object's position read off ``features`` along open-loop rollouts.
    Needs data that records ``states`` (objects too, where the data has them)."""
    state_weight: float = 1.0
    """Weight of the state head's loss (normalised squared error, see ``state_loss``)."""
    state_hidden: int = 128
    """Hidden width of the state head's MLPs."""
    state_arm: str = "features"
    """How the state head knows the end effector (our extension): ``"features"`` reads it off the
    features relative to its start; ``"actions"`` integrates it from its start (proprioception)
    and the actions (``ObjectHead.arm_step``), exact over long dreams where the features drift."""
    state_objects: str = "features"
    """How the state head knows the objects (our extension): ``"features"`` reads each off the
    features with its start position as the query; ``"actions"`` (needs ``state_arm="actions"``)
    integrates each from its position where the rollout starts along the actions, with a contact
    model of the object relative to the arm (``ObjectHead.state_rollout``)."""
    state_batch: int = 2048
    """Recorded steps per training step for the state head's arm and contact models
    (``state_arm`` / ``state_objects="actions"``), drawn from every episode of the training data
    (``data/transitions.py``: they read no pixels, so they need not wait for the windows); 0:
    the windows' own steps only."""
    state_query_noise: float = 0.0
    """Std (m) of Gaussian noise on the object queries' xy while training the state head: the head
    then has to find each object in the features rather than echo its query (see ``state_loss``)."""

    def __post_init__(self) -> None:
        """Checks every model shares; subclasses call it first, then check their own fields."""
        self._check_positive("channels", "n_past", "n_future", "batch_size", "state_hidden")
        if self.action_dim < 0 or self.state_weight < 0 or not self.state_query_noise >= 0:
            raise ValueError(
                "action_dim, state_weight and state_query_noise must be >= 0, got "
                f"{self.action_dim}, {self.state_weight} and {self.state_query_noise}"
            )
        if not isinstance(self.state_batch, int) or self.state_batch < 0:
            raise ValueError(f"state_batch must be an int >= 0, got {self.state_batch!r}")
        check_choice("state_arm", self.state_arm, STATE_ARMS)
        check_choice("state_objects", self.state_objects, STATE_ARMS)
        if self.state_objects == "actions" and self.state_arm != "actions":
            raise ValueError(
                "state_objects=actions integrates the objects with the arm: set state_arm=actions too"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")

    def _check_positive(self, *names: str) -> None:
        """``ValueError`` naming the first of the fields ``names`` that is below 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def seq_len(self) -> int:
        """Window length the trainer samples: ``n_past + n_future``."""
        return self.n_past + self.n_future


class Sampling(NamedTuple):
    """The sampling keywords of ``LatentDynamics.step`` and ``rollout``, packed for the models'
    ``_step`` and ``_rollout`` (see ``step`` for their meaning)."""

    sample: bool = True
    temperature: float = 1.0
    generator: torch.Generator | None = None
    noise: Tensor | None = None  # (B, noise_dim) for a step, (B, H, noise_dim) for a rollout

    def at(self, t: int) -> Sampling:
        """The options of step ``t`` of a rollout: the same, with ``noise[:, t]``."""
        return self if self.noise is None else self._replace(noise=self.noise[:, t])


def param_dtype(module: nn.Module) -> torch.dtype:
    """dtype of ``module``'s first parameter (its compute dtype outside autocast)."""
    return next(module.parameters()).dtype


class LatentDynamics(nn.Module, ABC):
    """An action-conditioned stochastic video predictor seen as latent dynamics.

    Subclasses set ``name`` (the registry key) and take one config dataclass. They hold weights,
    never rollout state: everything that changes along a rollout is in the ``State`` they return.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[DynamicsConfig]] = DynamicsConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # step is concrete (it checks and packs, then calls _step), so abstractmethod cannot
        # require one of the two: check here, when the class is made, instead.
        super().__init_subclass__(**kwargs)
        if cls.step is LatentDynamics.step and cls._step is LatentDynamics._step:
            raise TypeError(f"{cls.__name__} implements neither _step nor step")

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__()
        self.config = config
        self.state_head: nn.Module | None = None

    def build_state_head(self) -> None:
        """Create ``state_head`` when the config asks for it; subclasses call this at the end of
        ``__init__``, once ``feature_dim`` is known (``dynamics/state_loss.py``: ``make_state_head``)."""
        if self.config.state_head:
            from worldmodel.dynamics.state_loss import make_state_head  # it imports this module

            self.state_head = make_state_head(self)

    def state_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The state head's loss on an open-loop rollout of the model along the recorded actions,
        and its metrics ``state_ee_cm`` and ``state_obj_cm`` (``dynamics/state_loss.py``)."""
        from worldmodel.dynamics.state_loss import state_loss  # it imports this module

        return state_loss(self, batch)

    def add_state_loss(self, batch: Batch, loss: Tensor, metrics: dict) -> Tensor:
        """``loss`` plus ``state_weight`` times ``state_loss`` when the model has a state head
        (``metrics`` gains its entries); ``loss`` unchanged otherwise. Models call it in ``loss``."""
        if self.state_head is None:
            return loss
        extra, m = self.state_loss(batch)
        metrics.update(m)
        return loss + self.config.state_weight * extra

    # --- training -----------------------------------------------------------------------------
    @abstractmethod
    def loss(self, batch: Batch) -> tuple[Tensor | dict[str, Tensor], dict[str, float | Tensor]]:
        """Training objective on one batch.

        Args:
            batch: ``frames`` uint8 ``(B, T, H, W, 3)``, ``actions`` float32 ``(B, T, A)`` on the
                model's device, ``T == config.seq_len``.

        Returns:
            ``(loss, metrics)``. ``loss`` is a scalar tensor, or a dict of scalars keyed like
            ``optimizers()`` for models with several optimisers (a GAN's ``"g"`` and ``"d"``).
            ``metrics`` maps names to floats or detached scalar tensors for logging (tensors let
            the trainer read everything in one host sync per step).
        """

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam over all parameters by default; override for several parameter groups.

        Each optimiser only ever steps on the parameters it owns, with gradients of the loss of
        the same key (see ``loss``).
        """
        return {"model": torch.optim.Adam(self.parameters(), lr=self.config.lr, betas=self.config.betas)}

    # --- rollouts -------------------------------------------------------------------------------
    @abstractmethod
    def initial(self, frames: Tensor, actions: Tensor) -> State:
        """Condition on a context.

        Args:
            frames: uint8 ``(B, T0, H, W, 3)`` context frames ``x_0..x_{T0-1}``, ``T0 >= 1``.
            actions: float32 ``(B, T0 - 1, A)``, the actions taken between the context frames.

        Returns:
            The state after the last context frame; ``decode`` of it gives that frame's
            reconstruction.
        """

    def step(
        self,
        state: State,
        action: Tensor,
        *,
        sample: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> State:
        """Advance one step.

        Args:
            state: from ``initial`` or a previous ``step``, batch ``B``.
            action: float32 ``(B, A)`` in [-1, 1], ``a_t``: the action applied to the frame the
                state stands for. Its finiteness is checked for CPU tensors only (on a GPU the
                check would cost a host sync per step); ``initial`` and ``loss`` always check.
            sample: draw the latent (``True``) or take its mean (``False``).
            temperature: scales the prior's standard deviation (0 gives the mean).
            generator: source of randomness, for seeded rollouts.
            noise: optional standard normals ``(B, noise_dim)`` used instead of drawing from
                ``generator`` (scaled by ``temperature`` inside the model; ignored when
                ``sample=False``). Batched environments pass per-episode noise so that row ``i``
                of a batched call equals a batch-of-one call; planners pass common random
                numbers.

        Models implement ``_step``, which gets the checked action and the packed keywords.
        """
        on_cpu = action.device.type == "cpu"
        self._check_actions(action, (len(state), self.config.action_dim), "action", finite=on_cpu)
        return self._step(state, action, Sampling(sample, temperature, generator, noise))

    def _step(self, state: State, action: Tensor, opts: Sampling) -> State:
        """``step`` after its action check. Models implement this, or override ``step`` whole
        (as the tests' small models do)."""
        raise NotImplementedError

    @property
    def noise_dim(self) -> int:
        """Standard normals one ``step`` draws per batch row (the width of ``noise``); 0 if none."""
        return 0

    @abstractmethod
    def decode(self, state: State) -> Tensor:
        """The frame the state stands for: float ``(B, 3, H, W)`` in [0, 1]."""

    @abstractmethod
    def features(self, state: State) -> Tensor:
        """A compact float32 summary ``(B, F)`` for policies, reward heads and planners."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """``F``, the width of ``features``."""

    # --- helpers ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    def prepare_for_inference(self) -> None:
        """Model-specific rewrites of an inference copy, in place (``for_inference`` calls it on
        its frozen eval-mode copy, never on a model that trains). Default: none."""

    def inference_half_modules(self) -> list[nn.Module]:
        """Sub-modules that may hold bf16 weights in an inference copy (``dynamics.inference``).

        A model that lists any casts its inputs and outputs at their boundaries itself. Default:
        none, so ``for_inference(model, dtype="bfloat16")`` refuses the model.
        """
        return []

    def rollout(
        self,
        state: State,
        actions: Tensor,
        *,
        sample: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        decode: bool = True,
    ) -> tuple[State, Tensor]:
        """Step through ``actions`` (``(B, H, A)``); ``noise`` is ``(B, H, noise_dim)`` or None.

        Returns the final state and either decoded frames ``(B, H, 3, Hpx, Wpx)`` or features
        ``(B, H, F)``. Models with a cheaper batched rollout (VGAN) override ``_rollout``.
        """
        return self._rollout(state, actions, Sampling(sample, temperature, generator, noise), decode)

    def _rollout(self, state: State, actions: Tensor, opts: Sampling, decode: bool) -> tuple[State, Tensor]:
        """``rollout`` with its sampling keywords packed: one ``step`` per action (the public one,
        so a model that overrides ``step`` whole rolls out with it too)."""
        outs = []
        for t in range(actions.shape[1]):
            state = self.step(state, actions[:, t], **opts.at(t)._asdict())
            outs.append(self.decode(state) if decode else self.features(state))
        return state, torch.stack(outs, dim=1)

    # --- input checks shared by the models --------------------------------------------------
    def _check_frames(self, frames: Tensor, what: str = "frames") -> None:
        """``ValueError`` naming ``what`` unless ``frames`` is uint8 ``(B, T, H, W, C)`` of the config."""
        c = self.config
        want = (c.image_size, c.image_size, c.channels)
        if not isinstance(frames, Tensor) or frames.dim() != 5 or tuple(frames.shape[2:]) != want:
            got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"{what}: expected uint8 (B, T, {want[0]}, {want[1]}, {want[2]}), got {got}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"{what}: expected dtype uint8, got {frames.dtype}")

    def _check_context(self, frames: Tensor, actions: Tensor) -> tuple[int, int]:
        """``initial``'s checks: ``frames`` ``(B, T0, H, W, C)`` uint8 with ``B, T0 >= 1`` and
        finite ``actions`` ``(B, T0 - 1, A)``; returns ``(B, T0)``."""
        self._check_frames(frames)
        b, t0 = frames.shape[:2]
        if b < 1 or t0 < 1:
            raise ValueError(f"frames: need B >= 1 and T0 >= 1 context frames, got {tuple(frames.shape)}")
        self._check_actions(actions, (b, t0 - 1, self.config.action_dim), "actions")
        return b, t0

    def _check_actions(self, actions: Tensor, shape: tuple[int, ...], what: str, finite: bool = True) -> None:
        """``ValueError`` naming ``what`` unless ``actions`` is a float tensor of ``shape`` (finite
        when ``finite``)."""
        if not isinstance(actions, Tensor) or tuple(actions.shape) != shape:
            got = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
            raise ValueError(
                f"{what}: expected shape {shape} (action_dim={self.config.action_dim}), got {got}"
            )
        if not actions.is_floating_point():
            raise ValueError(f"{what}: expected a float tensor, got {actions.dtype}")
        # The check syncs with the device; under torch.compile it would also break the graph, and a
        # NaN action then shows up as the trainer's non-finite-loss error instead.
        if finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(actions).all()):
            raise ValueError(f"{what}: contains NaN or Inf")

    def config_dict(self) -> dict[str, Any]:
        """The config as plain Python types (what a checkpoint stores)."""
        return _plain(dataclasses.asdict(self.config))


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively, so a config survives ``weights_only`` loading."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
