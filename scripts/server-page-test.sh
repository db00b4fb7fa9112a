#!/usr/bin/env bash
# The chat page at `/` in headless Chromium (Debian's `chromium`, driven by
# playwright-core): a message round-trips; a screenshot goes to
# artifacts/server-page.png.
# Usage: scripts/server-page-test.sh [path/to/rkinfer] (default: target/release/rkinfer)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/server-common.sh
BIN=${1:-target/release/rkinfer}
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
NODE_DIR=${RKINFER_NODE_DIR:-target/server-page-node}
[ -x "$CHROMIUM" ] || { echo "no $CHROMIUM (apt-get install chromium)"; exit 1; }
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund --no-save playwright-core)
fi
mkdir -p artifacts
start_server "$BIN" serve -m "$MODEL" --port 0 -c 512 -t 1 --parallel 1
NODE_PATH="$NODE_DIR/node_modules" RKINFER_BASE_URL="$SERVER_ADDR" CHROMIUM="$CHROMIUM" \
    SCREENSHOT=artifacts/server-page.png timeout 300 node tests/server_page/page_test.js
