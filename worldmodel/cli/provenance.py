"""Where a run ran, for its ``run.json``: the git commit of the checkout and the hardware.

``worldmodel demo`` and ``worldmodel bench`` ask here, in the CLI: the library never runs git.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_commit(root: Path) -> str | None:
    """The commit checked out in ``root`` (``+ uncommitted changes`` when tracked files differ), or
    ``None`` when ``root`` is not the top of a git checkout (an installed package) or git is absent."""

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *cmd], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return None  # e.g. site-packages inside some other repository
    head = git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor() or platform.machine()
    except OSError:
        name = platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} logical cores)"


def hardware(device: str) -> dict[str, str | None]:
    """The machine the demo ran on: device, GPU, CPU, torch, Python, OS."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "device": ("cuda" if cuda else "cpu") if device == "auto" else device,
        "gpu": ", ".join(gpus) if gpus else None,
        "cpu": _cpu_model(),
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""),
        "python": platform.python_version(),
        "os": platform.platform(),
    }
