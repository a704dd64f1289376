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
pytest=(.venv/bin/python -m pytest -q --durations=15)
# OpenMP threads that spin while they wait make two torch processes on these 2 cores each run ~6x slower than alone
# (one training step of SmolLM2: 4.7 s alone, 30 s each side by side); waiting passively, 7.5 s each, so two
# at once finish sooner than one after the other. The tests run torch beside torch (a test and the CLI or daemon it
# starts, two workers, the pool build beside the tests).
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if ((fast)); then
    .venv/bin/mypy
    .venv/bin/lint-imports --no-cache # the layers (docs/architecture.md)
    exec "${pytest[@]}" -m "not pool and not e2e" ${pytest_args[@]+"${pytest_args[@]}"}
fi
build_pool=(.venv/bin/hubdelta --log-console devhub build-pool --out "$HUBDELTA_TEST_CACHE/pool-out"
    --cache "$HUBDELTA_TEST_CACHE/pool")
if ((${#pytest_args[@]})); then # chosen tests: the checks, the pool (outside pytest's per-test timeout), then them
    .venv/bin/mypy
    .venv/bin/lint-imports --no-cache
    "${build_pool[@]}"
    exec "${pytest[@]}" "${pytest_args[@]}"
fi
# Every test. A cold pool build trains 24 models (~10 minutes on 2 cores, logged per model); it runs beside the
# type check and the tests that need neither the pool nor process starts (two thirds of one core of Python), then
# the pool and e2e tests run on two workers, a test file each (mostly waiting on the processes, servers and
# schedules they start; tests that must not run side by side share a file: tests/conftest.py). Every step runs;
# any failure fails the run.
log=$(mktemp)
"${build_pool[@]}" >"$log" 2>&1 &
build=$!
trap 'kill "$build" 2>/dev/null || true; rm -f "$log"' EXIT # Ctrl-C or a failure never leaves the training running
failed=()
.venv/bin/mypy || failed+=(mypy)
.venv/bin/lint-imports --no-cache || failed+=(lint-imports) # the layers (docs/architecture.md)
"${pytest[@]}" -m "not pool and not e2e" || failed+=("pytest (not pool, not e2e)")
echo "waiting for the pool build"
if wait "$build"; then
    cat "$log"
    "${pytest[@]}" -m "pool or e2e" -n 2 --dist loadfile || failed+=("pytest (pool or e2e)")
else
    cat "$log"
    failed+=("pool build")
fi
if ((${#failed[@]})); then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all checks and tests passed"
