#!/usr/bin/env bash
# The offline demo: build the finetune pool, serve it from devhub, browse it with the real Hub client, then
# track its base, crawl its children into the index, embed them and ask what behaves alike.
# It ends by serving the index's web pages (search, model pages, the map) beside devhub until Ctrl-C;
# DEMO_SERVE=0 stops after the tour instead. DEMO_PORT (8765): devhub; DEMO_WEB_PORT (8000): the pages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HUBDELTA_HOME=${HUBDELTA_HOME:-$PWD/demo-home}
port=${DEMO_PORT:-8765}
web_port=${DEMO_WEB_PORT:-8000}
hd=.venv/bin/hubdelta
$hd devhub build-pool --out "$HUBDELTA_HOME/pool"
$hd devhub serve --root "$HUBDELTA_HOME/pool/hub" --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
.venv/bin/python scripts/demo_tour.py "http://127.0.0.1:$port"
# Follow the base through the Hub's metadata, as against the real Hub, and record its children.
export HF_ENDPOINT="http://127.0.0.1:$port"
$hd track HuggingFaceTB/SmolLM2-135M-Instruct
$hd crawl
$hd tracked
# Delta Activations for every queued model, then how well the space separates the pool's domains.
$hd embed
$hd eval --labels "$HUBDELTA_HOME/pool/labels.csv" --plot "$HUBDELTA_HOME/eval-map.png"
# What behaves like a math adapter? Like the code finetune, among adapters with some downloads?
$hd status
$hd similar hubdelta-pool/smollm2-lora-math-1 -k 5
$hd similar hubdelta-pool/smollm2-full-code -k 3 --relation adapter --where "downloads > 100"
$hd export --format npz --out "$HUBDELTA_HOME/vectors.npz"
# The report people read each morning: new models, clusters (named from tags and names), a map per space.
$hd report --since 30d
# Which models are good at my task? 20 examples in, a few-shot LoRA trained (~25 s) and searched with.
$hd task "$HUBDELTA_HOME/pool/heldout/math.jsonl" --base HuggingFaceTB/SmolLM2-135M-Instruct -k 5
# The map of the space, stored in the index (embed and report runs refresh it; this says what it holds).
$hd layout
if [ "${DEMO_SERVE:-1}" = "1" ]; then
  $hd serve --port "$web_port" &
  web=$!
  trap 'kill $server $web 2>/dev/null || true' EXIT
  echo "devhub is serving the pool at http://127.0.0.1:$port (export HF_ENDPOINT=http://127.0.0.1:$port)."
  echo "Open http://127.0.0.1:$web_port in a browser: search, model pages, the map. Ctrl-C stops both."
  wait $server $web
fi
