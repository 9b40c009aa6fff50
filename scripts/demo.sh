#!/usr/bin/env bash
# Quickstart: build bramble, start a local cluster of 4 workers in a throwaway profile, run the
# ipyparallel tutorial's first steps through the CLI, and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
bramble=target/debug/bramble
export BRAMBLE_HOME
BRAMBLE_HOME=$(mktemp -d)
port=${BRAMBLE_DEMO_PORT:-7707}

$bramble init --listen "127.0.0.1:$port" >/dev/null
$bramble cluster start -n 4 2>"$BRAMBLE_HOME/cluster.log" &
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
$bramble status
