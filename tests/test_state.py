"""The batched rollout ``State``: indexing, tiling order, masking, concatenation, devices."""

import pytest
import torch

from worldmodel.dynamics import State


def _state(b: int = 3) -> State:
    return State(h=torch.arange(b * 2, dtype=torch.float32).view(b, 2), c=torch.arange(b * 6).view(b, 2, 3))


def test_len_keys_and_name_indexing():
    s = _state()
    assert len(s) == s.batch_size == 3
    assert set(s) == {"h", "c"}
    assert s["c"].shape == (3, 2, 3)


def test_batch_indexing_returns_state():
    s = _state(4)
    sub = s[1:3]
    assert isinstance(sub, State) and len(sub) == 2
    assert torch.equal(sub["h"], s["h"][1:3])
    picked = s[torch.tensor([3, 0])]
    assert torch.equal(picked["c"], s["c"][[3, 0]])
    masked = s[torch.tensor([True, False, True, False])]
    assert torch.equal(masked["h"], s["h"][[0, 2]])


def test_repeat_interleave_ordering():
    s = _state(2)
    t = s.repeat_interleave(3)
    assert len(t) == 6
    # rows [s0, s0, s0, s1, s1, s1]: candidate n of context b is row b * N + n
    for row in range(6):
        assert torch.equal(t["h"][row], s["h"][row // 3])
        assert torch.equal(t["c"][row], s["c"][row // 3])


def test_where_picks_rows():
    a, b = _state(3), _state(3).map(lambda x: x + 100)
    mask = torch.tensor([True, False, True])
    w = a.where(mask, b)
    assert torch.equal(w["h"][0], b["h"][0]) and torch.equal(w["h"][1], a["h"][1])
    assert torch.equal(w["c"][2], b["c"][2]) and torch.equal(w["c"][1], a["c"][1])


def test_cat_and_replace():
    a, b = _state(2), _state(3)
    c = State.cat([a, b])
    assert len(c) == 5 and torch.equal(c["h"][2:], b["h"])
    r = a.replace(h=torch.zeros(2, 2), z=torch.ones(2, 5))
    assert torch.equal(r["h"], torch.zeros(2, 2)) and r["z"].shape == (2, 5)
    assert torch.equal(a["h"], _state(2)["h"])  # the original is untouched


def test_to_and_detach():
    s = _state().map(lambda x: x.float().requires_grad_())
    d = s.detach().to("cpu")
    assert d.device.type == "cpu" and not d["h"].requires_grad


@pytest.mark.gpu
def test_to_cuda_round_trip():
    s = _state()
    g = s.to("cuda")
    assert g.device.type == "cuda" and torch.equal(g.to("cpu")["c"], s["c"])


def test_mismatched_batch_raises():
    with pytest.raises(ValueError, match="batch size"):
        State(h=torch.zeros(2, 3), c=torch.zeros(3, 3))
