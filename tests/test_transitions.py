"""Recorded transitions: every step of the training data for the state head's arm and contact models."""

import numpy as np
import pytest
import torch

from worldmodel import dynamics
from worldmodel.data.synthetic import SyntheticDataset, moving_square
from worldmodel.data.transitions import RecordedTransitions
from worldmodel.training.trainer import TrainConfig, Trainer


class _Episodes:
    """Episodes of different lengths whose every value says (episode, step): 100 e + t."""

    def __init__(self, lengths, objects=True, states=True):
        self.lengths, self.objects, self.states = lengths, objects, states

    def __len__(self):
        return len(self.lengths)

    def whole_episode(self, i):
        t = np.arange(self.lengths[i], dtype=np.float32) + 100 * i
        ep = {"actions": np.stack([t] * 4, 1)}
        if self.states:
            ep["states"] = np.stack([t] * 5, 1)
        if self.objects:
            objects = np.full((len(t), 2, 3), np.nan, np.float32)
            objects[:, 0] = t[:, None]
            ep["objects"] = objects
        return ep


def test_every_step_has_its_successor_and_the_action_before_it_in_the_same_episode():
    tr = RecordedTransitions.of(_Episodes([5, 4, 3]))
    assert len(tr) == 3 + 2 + 1  # steps 1 .. T-2 of each episode
    s = tr.sample(500, torch.Generator().manual_seed(0))
    assert s["arm"].shape == (500, 3) and s["action"].shape == (500, 4) and s["objects"].shape == (500, 2, 3)
    assert torch.equal(s["arm_next"] - s["arm"], torch.ones(500, 3))  # never across two episodes
    assert torch.equal(s["action"], s["arm"][:, :1].expand(-1, 4))
    assert torch.equal(s["previous"], s["action"] - 1)
    assert torch.equal(s["objects_next"][:, 0], s["arm_next"])
    assert torch.isnan(s["objects"][:, 1]).all() and torch.isnan(s["objects_next"][:, 1]).all()
    t = s["arm"][:, 0] % 100
    episode = (s["arm"][:, 0] // 100).long()
    assert (t >= 1).all() and (t <= torch.tensor([5, 4, 3])[episode] - 2).all()
    assert set(s["arm"][:, 0].tolist()) == {1.0, 2.0, 3.0, 101.0, 102.0, 201.0}  # every step drawn


def test_samples_are_a_function_of_the_generator_and_data_without_states_has_none():
    tr = RecordedTransitions.of(_Episodes([6, 6], objects=False))
    a, b = (tr.sample(8, torch.Generator().manual_seed(3)) for _ in range(2))
    assert "objects" not in a and all(torch.equal(a[k], b[k]) for k in a)
    assert RecordedTransitions.of(_Episodes([6], states=False)) is None
    with pytest.raises(ValueError, match="3 steps or more"):
        RecordedTransitions.of(_Episodes([2, 2]))


def _squares(n: int, t: int, seed: int) -> dict[str, torch.Tensor]:
    """Moving squares whose square is both the arm and the object (it moves with the arm)."""
    d = moving_square(n, t, image_size=16, seed=seed)
    objects = torch.full((n, t, 4, 3), float("nan"))
    objects[:, :, 0] = d["states"]
    return {**d, "objects": objects}


def _model(state_batch: int):
    torch.manual_seed(0)
    kw = {"state_head": True, "state_arm": "actions", "state_objects": "actions", "n_future": 2}
    return dynamics.make("jepa", preset="tiny", image_size=16, state_batch=state_batch, **kw)


def test_the_trainer_fits_the_contact_model_on_every_recorded_step(tmp_path):
    """Two windows a step show the contact model few moves; with the recorded steps of all 256
    sequences each step it follows the square better one step ahead on held-out sequences
    (measured: 0.031 frame widths off against 0.070 on the windows alone; stays put 0.091)."""
    errors = {}
    for state_batch in (0, 256):
        model = _model(state_batch)
        data = SyntheticDataset(_squares(256, model.config.seq_len, seed=0))
        cfg = TrainConfig(steps=60, batch_size=2, log_every=60, ckpt_every=60, sample_every=0, eval_every=0)
        trainer = Trainer(model, data, tmp_path / str(state_batch), cfg)
        assert (trainer._transitions is None) == (state_batch == 0)
        history = trainer.fit()
        assert len(history.history) == 60
        held = RecordedTransitions.of(SyntheticDataset(_squares(64, 12, seed=1)))
        s = held.sample(2000, torch.Generator().manual_seed(0))
        head = trainer.model.state_head.eval()
        with torch.no_grad():
            pred = head.object_step(s["objects"][:, 0], s["arm"], s["arm_next"], s["action"], s["previous"])
        errors[state_batch] = float((pred - s["objects_next"][:, 0])[:, :2].norm(dim=-1).mean())
        stays = float((s["objects"][:, 0] - s["objects_next"][:, 0])[:, :2].norm(dim=-1).mean())
    assert errors[256] < 0.5 * errors[0] and errors[256] < 0.4 * stays, (errors, stays)


def test_the_batch_of_a_step_is_the_same_on_a_rerun(tmp_path):
    model = _model(16)
    data = SyntheticDataset(_squares(8, model.config.seq_len, seed=0))
    trainer = Trainer(model, data, tmp_path, TrainConfig(steps=1, sample_every=0, eval_every=0))
    a, b = (trainer._with_transitions({}, 5)["transitions"] for _ in range(2))
    c = trainer._with_transitions({}, 6)["transitions"]
    assert all(torch.equal(a[k].nan_to_num(-1), b[k].nan_to_num(-1)) for k in a)  # NaN: absent objects
    assert not torch.equal(a["arm"], c["arm"])


def test_state_batch_must_be_a_count():
    with pytest.raises(ValueError, match="state_batch"):
        _model(-1)
