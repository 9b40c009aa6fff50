#!/usr/bin/env bash
# The test command (README "Quickstart"): builds the binaries the end-to-end tests start (and an
# aarch64 worker, installing Debian's cross toolchain on first use), then runs every test tier.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed by the tests" >&2; exit 2; }

# End-to-end tests start the real `bramble` and `bramble-worker` binaries.
cargo build --workspace --bins
# One of them runs an aarch64 worker, cross-built with Debian's toolchain, under qemu-user.
# The first run installs that toolchain with apt (root needed); later runs only rebuild.
bash scripts/build-aarch64.sh debug
# debugfs, mkfs.vfat and systemd-analyze for the deployment tests.
bash scripts/setup-test-tools.sh

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
