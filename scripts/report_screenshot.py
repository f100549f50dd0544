"""Screenshot an HTML report (``worldmodel demo``'s ``report.html``) in headless Chromium.

    python scripts/report_screenshot.py OUT/demo/report.html report.png [--width 1200 --height 4000]

Reviewers read the report in a browser; this renders it the same way (inline SVG charts, GIFs,
tables) so a change to the report can be looked at without a desktop. It needs a Chromium binary
(``apt-get install chromium`` on Debian; ``--chromium PATH`` or ``$CHROMIUM`` picks another) and
nothing else; the browser runs with a throw-away profile and no network services. The page is
cut at ``--height`` pixels (Chromium's ``--screenshot`` does not grow to the page length).

Not part of the library: nothing in ``worldmodel`` imports it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, else ``$CHROMIUM``, else the first of ``NAMES`` on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            return shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def screenshot(
    html: str | os.PathLike,
    png: str | os.PathLike,
    *,
    width: int = 1200,
    height: int = 4000,
    chromium: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Render ``html`` (a file) in headless Chromium and save a ``width`` × ``height`` PNG."""
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise ValueError(f"{html}: no such report file")
    exe = find_chromium(chromium)
    if exe is None:
        raise ValueError("no Chromium found (apt-get install chromium, or pass --chromium PATH)")
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",  # runs as root in containers, where the sandbox cannot start
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={tmp}",
            f"--window-size={width},{height}",
            html.as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"chromium exited {done.returncode} without a screenshot: {tail[0]}")
    os.replace(tmp, png)  # a failed run never leaves half a PNG under the real name
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html", help="the report file")
    p.add_argument("png", help="where to write the screenshot")
    p.add_argument("--width", type=int, default=1200, help="window width in px (default 1200)")
    p.add_argument("--height", type=int, default=4000, help="window height in px (default 4000)")
    p.add_argument("--chromium", default=None, help="Chromium executable (default: $CHROMIUM or PATH)")
    args = p.parse_args(argv)
    try:
        path = screenshot(args.html, args.png, width=args.width, height=args.height, chromium=args.chromium)
    except (ValueError, RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print(f"report_screenshot: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
