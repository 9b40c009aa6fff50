#!/usr/bin/env bash
# The test command (README "Quickstart"): builds the binaries the end-to-end tests start, then
# runs every test tier. Idempotent; installs nothing system-wide except missing cargo tools.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed by the tests" >&2; exit 2; }

# End-to-end tests start the real `bramble` and `bramble-worker` binaries.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
