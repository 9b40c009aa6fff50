#!/usr/bin/env bash
# Memory over a large job (issue 12, item 4): a release host and four workers on this machine
# run a map of $BRAMBLE_BENCH_ITEMS (default 1,000,000) items, chunksize 10 (100,000 tasks),
# `--persistent -- cat`, followed by the CLI to the end. Sampled every 0.5 s: the host's RSS
# (before, peak, after), the following CLI's RSS (after 1 s, peak, at the end) and a worker's
# RSS (idle before the job, peak, idle after). Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BRAMBLE_BENCH_ITEMS:-1000000}
cargo build --release --workspace --bins
bin=$PWD/target/release
home=$(mktemp -d)
export BRAMBLE_HOME=$home
trap 'pkill -f "$home" 2>/dev/null || true; rm -rf "$home"' EXIT
port=$(( 21000 + RANDOM % 5000 ))
"$bin/bramble" init --listen "127.0.0.1:$port" >/dev/null
"$bin/bramble" serve 2>"$home/host.log" &
host=$!
for i in 0 1 2 3; do
    "$bin/bramble" enroll "w$i" >/dev/null
    "$bin/bramble-worker" --bundle "$home/default/workers/w$i.json" 2>"$home/w$i.log" &
    eval "worker$i=$!"
done
for _ in $(seq 200); do
    [ "$(grep -l "joined as worker" "$home"/w*.log 2>/dev/null | wc -l)" = 4 ] && break
    sleep 0.05
done
rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }
sleep 2
host_before=$(rss $host); worker_before=$(rss $worker0)
started=$(date +%s.%N)
"$bin/bramble" map --range "0..$n" --chunksize 10 --persistent -- cat >/dev/null &
cli=$!
samples=$home/samples
while kill -0 $cli 2>/dev/null; do
    echo "$(rss $host) $(rss $cli) $(rss $worker0)" >>"$samples"
    sleep 0.5
done
wait $cli
took=$(python3 -c "print($(date +%s.%N) - $started)")
sleep 2
host_after=$(rss $host); worker_after=$(rss $worker0)
python3 - "$samples" "$n" "$took" "$host_before" "$host_after" "$worker_before" "$worker_after" <<'PY' | tee "$home/table.md"
import sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 3]
n, took, hb, ha, wb, wa = sys.argv[2:]
host = [float(r[0]) for r in rows]; cli = [float(r[1]) for r in rows]; worker = [float(r[2]) for r in rows]
print(f"{int(n):,} items in {float(took):.1f} s, chunksize 10 ({int(n)//10:,} tasks), RSS sampled every 0.5 s:\n")
print("| process | before | after 1 s | peak | after | goal |")
print("|---|---|---|---|---|---|")
print(f"| host | {hb} MiB | {host[min(2, len(host)-1)]:.1f} MiB | {max(host):.1f} MiB | {ha} MiB | nothing kept per finished task |")
print(f"| CLI following the job | | {cli[min(2, len(cli)-1)]:.1f} MiB | {max(cli):.1f} MiB | {cli[-1]:.1f} MiB | flat |")
print(f"| one worker (its `cat` co-processes not counted) | {wb} MiB | {worker[min(2, len(worker)-1)]:.1f} MiB | {max(worker):.1f} MiB | {wa} MiB | idle <= 8 MiB |")
PY
python3 scripts/update-benchmarks.py memory "\`scripts/bench-memory.sh\` (release, 4 local workers)" \
    "## Memory over a large job (\`scripts/bench-memory.sh\`)" <"$home/table.md"
