#!/usr/bin/env bash
# One entry point for people and CI: sets up .venv on first use, then runs a job.
#   ./run.sh demo [args]   the whole pipeline (collect, train, evaluate, plan, agent) and a report
#   ./run.sh test [args]   run the test suite (extra args go to pytest)
#   ./run.sh setup         only create/refresh the environment
#   ./run.sh wm ARGS       run the `worldmodel` CLI inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${WM_VENV:-.venv}
PY=${PYTHON:-python3}
export MUJOCO_GL=${MUJOCO_GL:-egl}

setup() {
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "worldmodel needs Python >= 3.10 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.x" >&2
    exit 1
  fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.worldmodel-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Setting up $VENV (first run only) ..." >&2
    # torch first, pinned: the stock PyPI wheel (CUDA on Linux x86-64, CPU/MPS elsewhere).
    # Set WM_TORCH to another version spec if your platform needs one.
    "$VENV/bin/python" -c 'import torch' 2>/dev/null ||
      "$VENV/bin/python" -m pip install -q "torch${WM_TORCH:-==2.13.0}"
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
  fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    exec "$VENV/bin/worldmodel" demo "$@"
    ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  wm) setup; exec "$VENV/bin/worldmodel" "$@" ;;
  *) sed -n '2,7p' "$0"; [ "$cmd" = help ] ;;
esac
