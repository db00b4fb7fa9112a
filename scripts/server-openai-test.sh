#!/usr/bin/env bash
# The official openai Python client against `rkinfer serve` on loopback.
# Usage: scripts/server-openai-test.sh [path/to/rkinfer] (default: target/release/rkinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/server-common.sh
BIN=${1:-target/release/rkinfer}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
VENV=${RKINFER_PY_VENV:-target/server-py-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import openai, jsonschema" 2>/dev/null || "$VENV/bin/pip" install --quiet openai jsonschema
start_server "$BIN" serve -m "$MODEL" --port 0 -c 512 -t 1 --parallel 2 --api-key test-key
RKINFER_BASE_URL="$SERVER_ADDR/v1" RKINFER_API_KEY=test-key timeout 600 "$VENV/bin/python" tests/server_py/test_openai_client.py
