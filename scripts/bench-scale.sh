#!/usr/bin/env bash
# Scale (issue 12, item 3): N simulated workers from one process (host/examples/loadgen.rs:
# real QUIC and mutual TLS, a certificate each, tasks answered at once, telemetry every
# second) against a release `bramble serve`, for N = 10, 100, 1000: registration time, the
# host's CPU for their telemetry alone, its RSS, and the dispatch rate of a map of tiny tasks
# (chunksize 1) with the host's CPU per task. Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
items=${BRAMBLE_BENCH_ITEMS:-40000}
cargo build --release -p bramble-host --bins --example loadgen
bin=$PWD/target/release
out=$(mktemp)
# Until the host logging to $1 says it listens (20 s at most).
wait_listening() {
    for _ in $(seq 400); do grep -q "listening" "$1" 2>/dev/null && return; sleep 0.05; done
    echo "the host never listened" >&2; exit 1
}
for n in ${BRAMBLE_BENCH_WORKERS:-10 100 1000}; do
    home=$(mktemp -d)
    port=$(( 21000 + RANDOM % 5000 ))
    BRAMBLE_HOME=$home "$bin/bramble" init --listen "127.0.0.1:$port" >/dev/null
    BRAMBLE_HOME=$home "$bin/bramble" serve 2>"$home/host.log" &
    host=$!
    wait_listening "$home/host.log"
    "$bin/examples/loadgen" "$home/default" "$n" "$items" "$host" 2>>"$home/loadgen.log" | tail -1 >>"$out"
    kill "$host"; wait "$host" 2>/dev/null || true
    # Registration again, with dials that wait up to 2 s for the host's first answer: the
    # simulated workers share the host's two cores, so an answer can come late for the load
    # generator's own sake, and then they dial again as real workers would.
    BRAMBLE_HOME=$home "$bin/bramble" serve 2>"$home/host2.log" &
    host=$!
    wait_listening "$home/host2.log"
    LOADGEN_REGISTER_ONLY=1 LOADGEN_PATIENT=1 "$bin/examples/loadgen" "$home/default" "$n" 0 "$host" 2>>"$home/loadgen.log" \
        | tail -1 | sed 's/"registered_ms"/"patient_ms"/; s/"redials"/"patient_redials"/; s/"refused_busy"/"patient_busy"/; s/"registration_host_cpu_ms"/"patient_cpu_ms"/' >>"$out"
    kill "$host"; wait "$host" 2>/dev/null || true
    rm -rf "$home"
done
python3 - "$out" <<'PY' | tee "$out.md"
import json, sys
rows = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    rows.setdefault(r["workers"], {}).update(r)
print("| workers | registered (s), dialling as workers do [dials again, refused busy] | registered (s), patient dials | host CPU to register them (s) | host CPU for telemetry (share of a core) | host RSS, idle (MiB) | dispatch (tasks/s) | host CPU per task (µs) |")
print("|---|---|---|---|---|---|---|---|")
for n, r in sorted(rows.items()):
    print(f"| {n} | {r['registered_ms']/1000:.2f} [{r['redials']}, {r['refused_busy']}] | {r['patient_ms']/1000:.2f} | {r['registration_host_cpu_ms']/1000:.2f} | {r['telemetry_core_share']*100:.1f} % | {r['host_rss_mib']:.0f} | {r['items_per_s']:,.0f} | {r['host_us_per_item']:,.1f} |")
PY
python3 scripts/update-benchmarks.py scale "scripts/bench-scale.sh (release host, simulated workers of 1 slot in one loadgen process on the same 2 cores, $items tasks)" "## Many workers on one host (\`scripts/bench-scale.sh\`)" <"$out.md"
