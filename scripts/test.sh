#!/usr/bin/env bash
# Runs every test of the workspace. The end-to-end tests run real models, so
# they are built with optimisations; the models come from fetch-models.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo test --workspace --release "$@"
