#!/usr/bin/env bash
# The test command (README "Quickstart"): builds the binaries the end-to-end tests start (and an
# aarch64 worker, installing Debian's cross toolchain on first use), sets up the Python
# virtualenv and builds the `bramble` package into it, then runs every test tier: Rust unit,
# simulation, wire and end-to-end tests, then ruff and the Python tests (pytest against real
# local clusters, the seed tutorial notebook in a real Jupyter kernel). Idempotent; the first
# run installs what it needs (apt as root, PyPI into .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed by the tests" >&2; exit 2; }

# End-to-end tests start the real `bramble` and `bramble-worker` binaries.
cargo build --workspace --bins
# .venv with the Python test tools and the bramble package (its extension is built in the
# shared target directory).
bash scripts/setup-python.sh
# One of them runs an aarch64 worker, cross-built with Debian's toolchain, under qemu-user
# (this also proves the aarch64 wheel builds). The first run installs that toolchain with apt
# (root needed); later runs only rebuild.
bash scripts/build-aarch64.sh debug
# debugfs, mkfs.vfat and systemd-analyze for the deployment tests.
bash scripts/setup-test-tools.sh
# The worker's engine tests run a real Python engine: one with cloudpickle.
export BRAMBLE_TEST_PYTHON=$PWD/.venv/bin/python

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi

(cd python && ../.venv/bin/ruff check . && ../.venv/bin/ruff format --check .)
(cd python && ../.venv/bin/python -m pytest -q)
