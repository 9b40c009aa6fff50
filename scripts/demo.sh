#!/usr/bin/env bash
# Quickstart: build bramble and its Python package, start a local cluster of 4 workers in a
# throwaway profile, run the ipyparallel tutorial's first steps through the CLI and then in
# Python, and stop everything. The first run installs the Python tools (scripts/setup-python.sh:
# a virtualenv in .venv, from PyPI) and takes a few minutes to build.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
bash scripts/setup-python.sh
bramble=target/debug/bramble
export BRAMBLE_HOME
BRAMBLE_HOME=$(mktemp -d)

# Port 0: the host picks a free port and writes it into the profile.
$bramble init --listen 127.0.0.1:0 >/dev/null
$bramble cluster start -n 4 --python "$PWD/.venv/bin/python" 2>"$BRAMBLE_HOME/cluster.log" &
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null; rm -rf "$BRAMBLE_HOME"' EXIT

for _ in $(seq 100); do
    [ "$($bramble ids 2>/dev/null)" = "[0, 1, 2, 3]" ] && break
    sleep 0.1
done

set -x
$bramble ids
$bramble apply -- echo "Hello World"
$bramble map --range 0..64 --chunksize 10 -- python3 -c 'print({}**10)'
.venv/bin/python python/examples/seed_tutorial.py
$bramble status
$bramble jobs
