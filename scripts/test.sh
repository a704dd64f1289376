#!/usr/bin/env bash
# The test command: set up, then lint (ruff), type-check (mypy) and run the whole test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Trained pool models are cached between runs here (a cold build trains them in ~10 minutes).
export HUBDELTA_TEST_CACHE=${HUBDELTA_TEST_CACHE:-$HOME/.cache/hubdelta-test}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers (docs/architecture.md)
# Warm the pool cache first, outside pytest's per-test timeout: a cold build trains 24 models (~10 minutes on
# 2 cores, logged per model); the test session then only links files.
.venv/bin/hubdelta --log-console devhub build-pool --out "$HUBDELTA_TEST_CACHE/pool-out" --cache "$HUBDELTA_TEST_CACHE/pool"
.venv/bin/python -m pytest -q --durations=15 "$@"
