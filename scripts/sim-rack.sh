#!/usr/bin/env bash
# Watch a simulated rack heat up and throttle: builds bramble, starts a host and four simulated
# Pis (a bare Pi 4, a Pi 4 in a case, a Pi 5 with a cooler, a bare Pi 3B; thermal time 30x) in
# a throwaway profile, keeps them busy with a long job, and serves the dashboard. Ctrl-C stops
# everything.
#
#   scripts/sim-rack.sh [--port 8707] [--open]
set -euo pipefail
cd "$(dirname "$0")/.."
port=8707 open=()
while [ $# -gt 0 ]; do
    case $1 in
        --port) port=${2:?--port needs a number}; shift 2 ;;
        --open) open=(--open); shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "sim-rack.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cargo build --bins
bin=$PWD/target/debug
export BRAMBLE_HOME
BRAMBLE_HOME=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$BRAMBLE_HOME"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/bramble" init --listen 127.0.0.1:0 >/dev/null
"$bin/bramble" serve 2>"$BRAMBLE_HOME/host.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q "listening on" "$BRAMBLE_HOME/host.log" 2>/dev/null && break
    sleep 0.1
done
i=0
for board in pi4-bare pi4-case pi5-cooler pi3b-bare; do
    name=pi-0$i
    "$bin/bramble" enroll "$name" >/dev/null 2>&1
    "$bin/bramble-worker" --bundle "$BRAMBLE_HOME/default/workers/$name.json" --slots 2 \
        --sim "$board" --sim-ambient 30 --sim-time-scale 30 \
        --cache-dir "$BRAMBLE_HOME/$name.cache" 2>"$BRAMBLE_HOME/$name.log" &
    pids+=($!)
    i=$((i + 1))
done
for _ in $(seq 100); do
    [ "$("$bin/bramble" ids 2>/dev/null)" = "[0, 1, 2, 3]" ] && break
    sleep 0.1
done
"$bin/bramble" submit map --name heat --range 0..100000 -- sleep 0.2 >/dev/null
echo "four simulated Pis are busy (job \"heat\"); the dashboard follows. Ctrl-C stops all."
"$bin/bramble" dashboard --listen "127.0.0.1:$port" "${open[@]}" &
pids+=($!)
wait $!
