#!/usr/bin/env bash
# One entry point for a fresh machine with only Python 3.10+:
#   bash scripts/run.sh main   # set up .venv, then run the main job
#   bash scripts/run.sh test   # set up .venv (with the sweep extra), then lint (ruff, mypy) and run the test suite
#   bash scripts/run.sh lint   # set up .venv, then only ruff (lint, format check) and mypy
# Extra arguments go to the job (e.g. `bash scripts/run.sh test -k registry`).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-main}"
shift || true

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The CPU wheel of torch first, so that pip never resolves a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
# The test job also installs the sweep extra: the submitit and Ray launchers its sweep tests run.
extras="dev"
if [ "$job" = test ]; then extras="dev,sweep"; fi
python -m pip install --quiet -e ".[$extras]"

# Small torch models run fastest with one thread per process on small CPUs.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export WANDB_MODE="${WANDB_MODE:-offline}"

lint() {
  # All three run, so one pass reports every kind of finding; any failure fails the job.
  local status=0
  ruff check . || status=1
  ruff format --check . || status=1
  mypy || status=1
  return "$status"
}

case "$job" in
  main) metaopt-train "$@" ;;
  # Two pytest-xdist workers (PYTEST_WORKERS=0 runs in this process); worksteal balances the long tests.
  test) lint && python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist worksteal "$@" ;;
  lint) lint ;;
  *) echo "usage: bash scripts/run.sh [main|test|lint] [args...]" >&2; exit 2 ;;
esac
