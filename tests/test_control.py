"""Control diagnostics (``worldmodel.training.control``) against models whose answers are known, bad
inputs, and the ``control`` section of ``worldmodel eval``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from worldmodel import dynamics
from worldmodel.dynamics.base import DynamicsConfig, LatentDynamics, State
from worldmodel.dynamics.heads import ObjectHead, fit_record, head_path_for, save_head
from worldmodel.training.control import control_diagnostics

SIZE, SPAN, STEP = 16, 0.3, 0.02  # pixels, half-width of the rendered table (m), metres per unit action


def _advance(pos: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # the data and the stub alike
    return pos + STEP * action[..., :3]


def _render(ee: torch.Tensor, objs: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)``: the end effector a blob in red, the objects blobs in green, the
    episode number in the blue channel of pixel (0, 0) (the stub's key to its scene table)."""
    grid = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE * 2 * SPAN - SPAN
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")

    def blob(xy):  # (B, 2) -> (B, H, W)
        d2 = (xx - xy[:, 0, None, None]) ** 2 + (yy - xy[:, 1, None, None]) ** 2
        return torch.exp(-d2 / (2 * 0.03**2))

    g = sum(blob(objs[:, i]) for i in range(objs.shape[1]))
    img = torch.stack([blob(ee), g.clamp(max=1), torch.zeros_like(g)], -1)
    img = (img * 255).round().to(torch.uint8)
    img[:, 0, 0, 2] = ident.to(torch.uint8)
    return img


def recorded_episodes(n: int = 12, t: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Episodes with kinematic pushing: object 0 rides along with the end effector (it moves by the
    same delta every step), object 1 never moves, slots 2 and 3 are absent (NaN)."""
    g = torch.Generator().manual_seed(seed)
    ee = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.2, 0.2, 0.04]) + torch.tensor([0, 0, 0.08])
    sign = torch.randint(0, 2, (n, 2), generator=g) * 2 - 1
    heading = sign * (0.6 + 0.4 * torch.rand(n, 2, generator=g))  # every push moves > 1.5 cm a step
    xy = (heading[:, None] + 0.3 * torch.randn(n, t, 2, generator=g)).clamp(-1, 1)
    dz = (0.3 * torch.randn(n, t, 1, generator=g)).clamp(-1, 1)
    actions = torch.cat([xy, dz, -torch.ones(n, t, 1)], -1)
    obj = torch.stack([ee + torch.tensor([0.03, 0.0, -0.05]), (torch.rand(n, 3, generator=g) - 0.5) * 0.3], 1)
    ees, objs = [ee], [obj]
    for i in range(t - 1):
        ee = _advance(ee, actions[:, i])
        obj = torch.stack([_advance(obj[:, 0], actions[:, i]), obj[:, 1]], 1)
        ees.append(ee)
        objs.append(obj)
    ees, objs = torch.stack(ees, 1), torch.stack(objs, 1)  # (n, t, 3), (n, t, 2, 3)
    ident = torch.arange(n)
    frames = torch.stack([_render(ees[:, i], objs[:, i], ident) for i in range(t)], 1)
    nan = torch.full((n, t, 2, 3), math.nan)
    return [
        {
            "frames": frames[e],
            "actions": actions[e],
            "states": ees[e],
            "objects": torch.cat([objs[e], nan[e]], 1),
        }
        for e in range(n)
    ]


class TrueHead(nn.Module):
    """Reads the stub's features: the end effector, and the object whose start is nearest the query."""

    feature_dim, has_end_effector = 15, True

    def end_effector(self, f: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        return f[:, :3]

    def forward(self, f: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        start, now = f[:, 3:9].view(-1, 2, 3), f[:, 9:15].view(-1, 2, 3)
        nearest = (start - query[:, None]).norm(dim=-1).argmin(1)
        return now[torch.arange(len(f)), nearest]


class SceneModel(LatentDynamics):
    """A world model that knows the scene behind each context (looked up by the episode number in
    the frame) and either integrates the actions exactly (``follows=True``: the pushed object moves
    with the arm) or ignores them (the scene stays as the context left it)."""

    name = "test-scene"

    def __init__(
        self, episodes: list[dict[str, torch.Tensor]], follows: bool = True, head: bool = True
    ) -> None:
        super().__init__(DynamicsConfig(image_size=SIZE, n_past=2))
        self.follows = follows
        self.ee = torch.stack([e["states"] for e in episodes])
        self.objs = torch.stack([e["objects"][:, :2] for e in episodes])
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.state_head = TrueHead() if head else None

    def loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError

    def initial(self, frames, actions):
        ident, t = frames[:, -1, 0, 0, 2].long(), frames.shape[1] - 1
        objs = self.objs[ident, t]
        return State(ee=self.ee[ident, t], start=objs, objs=objs, ident=ident)

    def step(self, state, action, *, sample=True, temperature=1.0, generator=None, noise=None):
        if not self.follows:
            return state
        objs = torch.stack([_advance(state["objs"][:, 0], action), state["objs"][:, 1]], 1)
        return state.replace(ee=_advance(state["ee"], action), objs=objs)

    def decode(self, state):
        return _render(state["ee"], state["objs"], state["ident"]).permute(0, 3, 1, 2).float() / 255

    def features(self, state):
        return torch.cat([state["ee"], state["start"].flatten(1), state["objs"].flatten(1)], 1)

    @property
    def feature_dim(self):
        return 15


@pytest.fixture(scope="module")
def episodes():
    return recorded_episodes()


def test_a_model_that_follows_the_actions_is_exact_and_ranks_the_recorded_actions_first(episodes):
    r = control_diagnostics(SceneModel(episodes), episodes, ks=(3, 5, 10), candidates=7, seed=0)
    assert r["ks"] == [3, 5, 10] and r["context"] == 2 and r["episodes"] == 12 and r["rank_k"] == 10
    for k, row in r["per_k"].items():
        assert row["ee_error_cm"] == pytest.approx(0.0, abs=1e-5), k
        assert row["ee_static_cm"] > 1.0
        # only the pushed object moves; it is every episode's target
        assert row["objects_moved"] == row["target_episodes"] == 12, k
        assert row["object_error_cm"] == pytest.approx(0.0, abs=1e-5)
        assert row["target_error_cm"] == pytest.approx(0.0, abs=1e-5) and row["target_static_cm"] > 1.0
        assert row["target_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert r["candidates"] == 7 and set(r["ranking"]) == {"learned", "pixels"}
    for name in ("learned", "pixels"):
        assert r["ranking"][name] == {"rank_score": 1.0, "top1": 1.0, "episodes": 12}, name
    json.dumps(r, allow_nan=False)


class IntegratingHead(TrueHead):
    """``TrueHead`` whose arm is integrated from the actions (``state_arm="actions"``), exactly."""

    arm_from_actions = True

    def arm_rollout(self, start: torch.Tensor, previous: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return start[:, None] + torch.cumsum(STEP * actions[..., :3], 1)


def test_a_head_that_integrates_the_arm_is_scored_on_its_integration(episodes):
    """The model ignores the actions (its features say the arm stays put); the head integrates
    them: the dreamed arm is exact, the target is the stays-put baseline."""
    model = SceneModel(episodes, follows=False)
    model.state_head = IntegratingHead()
    r = control_diagnostics(model, episodes, ks=(3, 5), candidates=3)
    for k, row in r["per_k"].items():
        assert row["ee_error_cm"] == pytest.approx(0.0, abs=1e-5) and row["ee_static_cm"] > 1.0, k
        assert row["target_error_cm"] == pytest.approx(row["target_static_cm"]), k


RIDE = torch.tensor([0.03, 0.0, -0.05])  # where the pushed object sits from the arm (recorded_episodes)


class IntegratingObjectsHead(IntegratingHead):
    """``IntegratingHead`` that integrates the objects too (``state_objects="actions"``), exactly:
    an object at ``RIDE`` from the arm rides along with it, any other stays."""

    objects_from_actions = True

    def state_rollout(self, ee_start, obj_start, previous, actions):
        arm = self.arm_rollout(ee_start, previous, actions)  # (B, H, 3)
        moved, ee = arm - ee_start[:, None], ee_start
        if obj_start.ndim == 3:  # (B, K, 3): every object of each row
            moved, ee = moved[:, :, None], ee_start[:, None]
        riding = (obj_start - ee - RIDE).norm(dim=-1, keepdim=True) < 1e-4  # (B, [K,] 1)
        return arm, obj_start[:, None] + riding[:, None] * moved


def test_a_head_that_integrates_the_objects_is_scored_on_its_integration(episodes):
    """The model ignores the actions; the head integrates the arm and the pushed object exactly:
    both are exact in the dream, and the learned cost ranks the recorded actions first."""
    model = SceneModel(episodes, follows=False)
    model.state_head = IntegratingObjectsHead()
    r = control_diagnostics(model, episodes, ks=(3, 5), candidates=3)
    for k, row in r["per_k"].items():
        assert row["ee_error_cm"] == pytest.approx(0.0, abs=1e-5), k
        assert row["target_error_cm"] == pytest.approx(0.0, abs=1e-5) and row["target_static_cm"] > 1.0, k
        assert row["objects_moved"] == 12 and row["object_error_cm"] == pytest.approx(0.0, abs=1e-5), k
    assert r["ranking"]["learned"] == {"rank_score": 1.0, "top1": 1.0, "episodes": 12}
    assert r["ranking"]["pixels"]["rank_score"] == 0.5  # the frames ignore the actions


def test_a_model_that_ignores_the_actions_is_the_stays_put_baseline_and_ranks_at_chance(episodes):
    r = control_diagnostics(SceneModel(episodes, follows=False), episodes, ks=(5,), candidates=7)
    row = r["per_k"]["5"]
    assert row["ee_error_cm"] == pytest.approx(row["ee_static_cm"]) and row["ee_ratio"] == pytest.approx(1.0)
    assert row["target_error_cm"] == pytest.approx(row["target_static_cm"])
    assert row["object_ratio"] == pytest.approx(1.0)
    for name in ("learned", "pixels"):  # every candidate ties: half the others beaten, 1/8 top-1
        assert r["ranking"][name] == {"rank_score": 0.5, "top1": 0.125, "episodes": 12}, name


def test_pixel_ranking_runs_without_a_head_and_still_objects(episodes):
    no_head = SceneModel(episodes, head=False)
    plain = [{k: v for k, v in e.items() if k != "states"} for e in episodes]
    r = control_diagnostics(no_head, plain, ks=(3,), candidates=20, state_metrics=False)
    assert r["per_k"] == {} and "learned" not in r["ranking"]
    assert r["candidates"] == 11  # all the other episodes
    assert r["ranking"]["pixels"]["rank_score"] == 1.0
    # an explicit head serves a model without one
    r = control_diagnostics(no_head, episodes, head=TrueHead(), ks=(3,), candidates=3)
    assert r["per_k"]["3"]["ee_error_cm"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"ks": ()}, "ks"),
        ({"ks": (0, 5)}, "ks"),
        ({"ks": (11,)}, "ks"),  # 2 context + 11 > 12 steps
        ({"candidates": 0}, "candidates"),
        ({"context": 0}, "context"),
        ({"rank_k": 0}, "rank_k"),
        ({"moved_threshold": -1.0}, "moved_threshold"),
    ],
)
def test_bad_arguments_are_named(episodes, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        control_diagnostics(SceneModel(episodes), episodes, **{"ks": (2,), **kwargs})


def test_bad_data_and_missing_heads_are_named(episodes):
    with pytest.raises(ValueError, match=r"^items: no episodes"):
        control_diagnostics(SceneModel(episodes), [], ks=(2,))
    plain = [{k: v for k, v in e.items() if k != "states"} for e in episodes]
    with pytest.raises(ValueError, match=r"^items: no 'states'"):
        control_diagnostics(SceneModel(episodes), plain, ks=(2,))
    with pytest.raises(ValueError, match=r"^head: .*state_head=true.*train-head"):
        control_diagnostics(SceneModel(episodes, head=False), episodes, ks=(2,))
    with pytest.raises(ValueError, match=r"^head: it reads 7 features"):
        control_diagnostics(SceneModel(episodes), episodes, head=_Width7(), ks=(2,))


class _Width7(TrueHead):
    feature_dim = 7


def test_eval_cli_writes_a_control_section(tmp_path, capsys):
    """A tiny SVG with a joint state head, trained three steps; 24-step pushing episodes, so that
    targets move by the ranking's horizon (the scripted pushes start some 15 steps in)."""
    from worldmodel.cli import main
    from worldmodel.data import open_dataset
    from worldmodel.envs.collect import CollectConfig, collect

    data = tmp_path / "data"
    cfg = CollectConfig(out=data, episodes=12, seq_len=24, image_size=16, num_objects=1, push_probability=1.0)
    collect(dataclasses.replace(cfg, workers=0))
    torch.manual_seed(0)
    model = dynamics.make("svg-lp", preset="tiny", state_head=True)
    items = open_dataset(data, split="train", seq_len=7)
    batch = {
        k: torch.stack([items[i][k] for i in range(8)]) for k in ("frames", "actions", "states", "objects")
    }
    opt = model.optimizers()["model"]
    for _ in range(3):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = dynamics.save(model.eval(), tmp_path / "m.pt", step=3)
    report = tmp_path / "eval.json"
    common = ["eval", str(ckpt), "--data", str(data), "--split", "train", "--samples", "2", "--n-future", "4"]
    common += ["--device", "cpu", "--control-ks", "2,21", "--control-candidates", "3"]
    assert main([*common, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "end effector" in out and "rank" in out
    c = json.loads(report.read_text(), parse_constant=lambda s: pytest.fail(f"{s} in the JSON"))["control"]
    assert c["ks"] == [2, 21] and c["episodes"] == 12 and c["head"] == "model" and c["rank_k"] == 21
    row = c["per_k"]["21"]
    assert {"ee_error_cm", "ee_static_cm", "target_error_cm", "target_static_cm", "objects_moved"} <= set(row)
    assert row["ee_error_cm"] > 0 and row["ee_static_cm"] > 0 and row["target_episodes"] > 0
    assert c["candidates"] == 3 and set(c["ranking"]) == {"learned", "pixels"}
    # The CLI reports exactly what the library computes on the same episodes, windows and seed.
    full = open_dataset(data, split="train", seq_len=24, random_offset=False)
    direct = control_diagnostics(
        dynamics.load(ckpt, device="cpu"),
        [full[i] for i in range(len(full))],
        ks=(2, 21),
        candidates=3,
        seed=0,
        context=2,
        windows="moving",
    )
    assert c["per_k"] == direct["per_k"] and c["ranking"] == direct["ranking"]
    for name in ("learned", "pixels"):
        s = c["ranking"][name]
        assert s["episodes"] == row["target_episodes"]
        # 3 others per episode, ties count one half: the rank score is a multiple of 1 / (6 episodes)
        units = s["rank_score"] * 6 * s["episodes"]
        assert units == pytest.approx(round(units), abs=1e-6)
    assert main([*common, "--no-control", "--json", str(report)]) == 0
    assert "control" not in json.loads(report.read_text())
    assert main([*common, "--control-ks", "23"]) == 0  # auto mode: too long for 24-step episodes, skipped
    assert "skipped" in capsys.readouterr().err
    assert main([*common, "--control", "--control-ks", "23"]) == 2
    assert "--control-ks" in capsys.readouterr().err
    # a model without a head: auto mode skips, a head file beside the checkpoint turns it on
    bare_model = dynamics.make("svg-lp", preset="tiny")
    bare = dynamics.save(bare_model, tmp_path / "bare.pt")
    common[1] = str(bare)
    assert main([*common, "--json", str(report)]) == 0
    assert "control" not in json.loads(report.read_text())
    assert main([*common, "--control"]) == 2  # asked for state diagnostics without a head: one line
    err = capsys.readouterr().err
    assert "--control" in err and "no state head" in err and "Traceback" not in err
    head = ObjectHead(bare_model.feature_dim, hidden=8)
    save_head(head, head_path_for(bare), fitted_to=fit_record(bare_model, bare, 0))
    assert main([*common, "--json", str(report)]) == 0
    c = json.loads(report.read_text())["control"]
    assert c["head"] == "file" and c["ranking"]["learned"]["episodes"] > 0


def test_moving_windows_start_where_the_objects_move():
    from worldmodel.training.control import _moving_start

    # One object still for 12 steps, then 1 cm a step in x: over k = 4 steps after a 2-frame
    # context, the windows that start at 11 or later see 4 cm; the earliest of them is chosen.
    t = torch.arange(30, dtype=torch.float32)
    x = torch.clamp(t - 12, min=0) * 0.01
    objects = torch.stack([x, torch.zeros(30), torch.zeros(30)], -1)[:, None].repeat(1, 2, 1)
    objects[:, 1] = math.nan  # an absent slot is ignored
    assert _moving_start(objects, window=6, context=2, k=4) == 11
    assert _moving_start(torch.zeros(30, 1, 3), window=6, context=2, k=4) == 0  # nothing moves: step 0


def test_windows_must_be_start_or_moving(episodes):
    with pytest.raises(ValueError, match="windows must be"):
        control_diagnostics(SceneModel(episodes), episodes, ks=(5,), windows="middle")
