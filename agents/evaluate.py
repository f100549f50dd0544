"""``python -m agents.evaluate RUN``: an agent's success rate and final distance in the real sim.

    python -m agents.evaluate runs/ppo-dream --episodes 100 --json ppo-dream.json
    python -m agents.evaluate --random --episodes 100 --json random.json   # the random baseline

Rebuilds everything from ``RUN/config.json`` and ``RUN/checkpoints/last.zip`` (runs of
``agents.train`` and ``agents.train_real`` alike; latent runs reload their world model to encode
the real frames). Episodes reset with seeds ``--seed + i`` (default: the seeds of the periodic
evaluations during training) and act deterministically. An episode succeeds when the target is
within 5 cm of the goal at its last step. The JSON has ``success_rate``, ``final_distance`` (mean,
m), ``episodes`` and ``per_episode``; a video of the first episodes goes to ``--video``.

The zip is read by ``worldmodel.rl.load_agent``, which executes nothing in it: the agent is
rebuilt from the config, and only tensors (``torch.load(weights_only=True)``) and the step counters
come from the file; a file that holds anything else is refused with one line naming it.

The flags become a ``worldmodel.rl.AgentEvalJob`` and ``worldmodel.rl.evaluate_agent`` runs it.
"""

from __future__ import annotations

from pathlib import Path

from agents.common import cli
from worldmodel.cli.flags import OneLineParser, add_common_flags, config_from_args, nonneg_int, positive_int
from worldmodel.envs.task import TASKS
from worldmodel.rl import EVAL_SEED, AgentEvalJob, evaluate_agent, summary_line


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m agents.evaluate",
        description="Success rate and final distance of a trained agent in the real PushTable sim.",
    )
    p.add_argument(
        "run", nargs="?", default=None, help="run folder written by agents.train or agents.train_real"
    )
    p.add_argument("--episodes", type=positive_int, default=100, help="real episodes (default 100)")
    add_common_flags(
        p,
        json="the figures (and per-episode rows)",
        video="MP4 or GIF of the first --video-episodes episodes (default: beside --json, FILE.mp4; "
        "none without --json; the run folder is never written to)",
    )
    p.add_argument(
        "--video-episodes", type=nonneg_int, default=4, help="episodes in the video (default 4; 0: none)"
    )
    add_common_flags(p, seed="the first episode (as in training's evaluations)", seed_default=EVAL_SEED)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the policy's mode")
    p.add_argument("--random", action="store_true", help="evaluate uniform random actions instead of a run")
    p.add_argument(
        "--image-size", type=positive_int, default=64, help="--random only: sim image size (default 64)"
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="push, recorded-goal or reach (default: the run's task; push for --random)",
    )
    add_common_flags(p, device="", device_default=None)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    video = Path(args.video) if args.video else (Path(args.json).with_suffix(".mp4") if args.json else None)
    job = config_from_args(AgentEvalJob, args, video=video)
    result = evaluate_agent(job, on_report=lambda r: print(summary_line(r)))
    if "video" in result:
        print(f"video: {result['video']}")
    return 0


if __name__ == "__main__":
    cli("agents.evaluate", run)
