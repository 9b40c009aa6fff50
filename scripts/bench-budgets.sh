#!/usr/bin/env bash
# Size and memory budgets (SPEC §5): stripped release aarch64 worker ≤ 4 MiB, idle worker RSS
# ≤ 8 MiB (measured on this machine's release build), and the host's idle RSS. Prints a
# markdown table and writes it into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-aarch64.sh release
cargo build --release --workspace --bins
a64=$(ls target/aarch64-unknown-linux-*/release/bramble-worker | head -1)
a64_host=$(ls target/aarch64-unknown-linux-*/release/bramble | head -1)

home=$(mktemp -d)
export BRAMBLE_HOME=$home
port=$((20000 + RANDOM % 20000))
target/release/bramble init --listen "127.0.0.1:$port" >/dev/null
target/release/bramble enroll w0 >/dev/null
target/release/bramble serve 2>/dev/null &
host=$!
target/release/bramble-worker --bundle "$home/default/workers/w0.json" --slots 4 2>/dev/null &
worker=$!
trap 'kill $worker $host 2>/dev/null; rm -rf "$home"' EXIT
for _ in $(seq 100); do
    [ "$(target/release/bramble ids 2>/dev/null)" = "[0]" ] && break
    sleep 0.1
done
sleep 3 # a few telemetry rounds: idle, connected
rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.2f", b / 1048576}'; }
table="| measure | value | budget |
|---|---|---|
| aarch64 worker binary, stripped release ($(basename "$(dirname "$(dirname "$a64")")")) | $(mib "$a64") MiB | ≤ 4 MiB |
| aarch64 host binary (\`bramble\`), stripped release | $(mib "$a64_host") MiB | - |
| worker idle RSS (x86_64 release, connected, 4 slots) | $(rss $worker) MiB | ≤ 8 MiB |
| host idle RSS (x86_64 release, one worker connected) | $(rss $host) MiB | - |"
echo "$table"
python3 scripts/update-benchmarks.py budgets "\`scripts/bench-budgets.sh\`" \
    "## Size and memory budgets (\`scripts/bench-budgets.sh\`)" <<<"$table"
