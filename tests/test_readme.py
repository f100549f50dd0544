"""Every code block of the README runs as written (Python) or parses with the real CLI (shell).

The Python blocks run in a fresh folder holding the files they name (a collected dataset at
``data/push``, a BAIR-format folder at ``data/bair``, a tiny SVG checkpoint with a state head at
``runs/svg/checkpoints/last.pt``), with the sizes in ``TINY`` swapped in so that they take seconds.
The shell blocks' commands are parsed by the parsers of ``worldmodel`` and the agent scripts, so a
renamed flag or a value the flags refuse fails here.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from test_data_bair import record, trajectory
from test_data_shards import fake_collect

from worldmodel import dynamics
from worldmodel.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"

# README text -> the tiny size it runs at here (each must occur in the README)
TINY = {
    'DreamVecEnv(dynamics.load("runs/svg/checkpoints/last.pt"), 256,': (
        'DreamVecEnv(dynamics.load("runs/svg/checkpoints/last.pt"), 4,'
    ),
    "population=400, horizon=10": "population=16, horizon=3",
    "n_eval_episodes=10": "n_eval_episodes=2",
    '"num_objects": 1}': '"num_objects": 1, "max_episode_steps": 6}',
    "episodes=2048, push_probability=1.0, workers=2": "episodes=20, push_probability=1.0, workers=0",
    '"steps": 1500, "batch_size": 16': '"steps": 2, "batch_size": 4, "sample_every": 0, "eval_every": 0',
    "samples=10)": "samples=2, sequences=1)",
    "episodes=20, population=64, horizon=6)": (
        "episodes=1, population=8, horizon=2, iterations=1, max_steps=3, oracle_budget=0, device='cpu')"
    ),
}


def blocks(language: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_the_tiny_sizes_still_match_the_readme():
    text = README.read_text()
    missing = [k for k in TINY if k not in text]
    assert not missing, f"README changed; update TINY in {__file__}: {missing}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    fake_collect(root / "data" / "push", episodes=20, seq_len=30, image_size=64)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):  # BAIR's layout and its 30-step trajectories
        folder = root / "data" / "bair" / "softmotion30_44k" / split
        folder.mkdir(parents=True)
        blobs = [record(trajectory(rng, steps=30)[0]) for _ in range(2)]
        (folder / "traj_0_to_1.tfrecords").write_bytes(b"".join(blobs))
    model = dynamics.make("svg-lp", preset="tiny", image_size=64, state_head=True)
    dynamics.save(model, root / "runs" / "svg" / "checkpoints" / "last.pt")
    return root


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(workdir, monkeypatch, index):
    code = blocks("python")[index]
    for text, tiny in TINY.items():
        code = code.replace(text, tiny)
    monkeypatch.chdir(workdir)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": f"readme_{index}"})


def shell_commands() -> list[list[str]]:
    """Each command line of the shell blocks (continuations joined, comments dropped)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]  # environment settings before the command
            if words:
                out.append(words)
    return out


def test_readme_has_shell_commands():
    firsts = {words[0] for words in shell_commands()}
    assert {"worldmodel", "python", "./run.sh", "torchrun"} <= firsts


@pytest.mark.parametrize("words", shell_commands(), ids=lambda w: " ".join(w[:3]))
def test_shell_command_parses(words):
    if words[0] == "./run.sh":
        if words[1] == "test":
            return  # pytest's own flags
        words = ["worldmodel", *words[1:]] if words[1] != "wm" else ["worldmodel", *words[2:]]
    if words[0] == "torchrun":
        words = ["worldmodel", *words[words.index("worldmodel") + 1 :]]
    if words[0] == "worldmodel":
        args = build_parser().parse_args(words[1:])
        assert args.command == words[1]
        return
    assert words[:2] == ["python", "-m"] and words[2].startswith("agents."), words
    module = importlib.import_module(words[2])
    module.build_parser().parse_args(words[3:])


def test_layout_names_every_module():
    """The README's Layout tree names every module of the package and of ``agents/`` by file name."""
    tree = re.search(r"^```\n(worldmodel/\n.*?)^```", README.read_text(), flags=re.S | re.M).group(1)
    root = README.parent
    modules = [p for d in ("worldmodel", "agents") for p in sorted((root / d).rglob("*.py"))]
    missing = [str(p.relative_to(root)) for p in modules if p.name != "__init__.py" and p.name not in tree]
    assert len(modules) > 100 and missing == []
