#!/usr/bin/env bash
# The test command: set up, then lint (ruff), type-check (mypy), check the layers and run the test suite (pytest).
#   bash scripts/test.sh            every test (what .ci/run runs)
#   bash scripts/test.sh --fast     the edit loop: the same checks, no pool build, and only the tests marked neither
#                                   `pool` (they need the trained pool) nor `e2e` (they start processes, Ray or
#                                   Chromium); tests/conftest.py sets both markers from the fixtures a test uses
# Every other argument goes to pytest (e.g. `--fast -k daemon`, or a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
pytest_args=()
for arg in "$@"; do
    if [[ $arg == --fast ]]; then fast=1; else pytest_args+=("$arg"); fi
done
bash scripts/setup.sh
# Trained pool models are cached between runs here (a cold build trains them in ~10 minutes).
export HUBDELTA_TEST_CACHE=${HUBDELTA_TEST_CACHE:-$HOME/.cache/hubdelta-test}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers (docs/architecture.md)
if ((fast)); then
    exec .venv/bin/python -m pytest -q --durations=15 -m "not pool and not e2e" ${pytest_args[@]+"${pytest_args[@]}"}
fi
# Warm the pool cache first, outside pytest's per-test timeout: a cold build trains 24 models (~10 minutes on
# 2 cores, logged per model); the test session then only links files.
.venv/bin/hubdelta --log-console devhub build-pool --out "$HUBDELTA_TEST_CACHE/pool-out" --cache "$HUBDELTA_TEST_CACHE/pool"
exec .venv/bin/python -m pytest -q --durations=15 ${pytest_args[@]+"${pytest_args[@]}"}
