#!/usr/bin/env bash
# The CLI's speed against its peers, in one run on this machine (issue 12): a fresh CLI call,
# start-up until 4 workers registered (host first, and workers first), and the task rate of a
# map of tiny tasks (chunksize 1 and 100) with the host's CPU per task; ipyparallel 9.2 and
# Dask on the same map (installed into .venv from PyPI). Medians of $BRAMBLE_BENCH_RUNS runs
# (default 3). Release builds. Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BRAMBLE_BENCH_RUNS:-3}
n=${BRAMBLE_BENCH_ITEMS:-100000}
peer_n=${BRAMBLE_BENCH_PEER_ITEMS:-10000}
bash scripts/setup-python.sh >/dev/null
.venv/bin/pip install -q --disable-pip-version-check ipyparallel==9.2.0 "distributed==2025.*" "dask==2025.*"
cargo build --release --workspace --bins
bin=$PWD/target/release
home=$(mktemp -d)
export BRAMBLE_HOME=$home
trap 'pkill -f "$home" 2>/dev/null || true; rm -rf "$home"' EXIT
py=.venv/bin/python

port=$(( 21000 + RANDOM % 5000 ))
"$bin/bramble" init --listen "127.0.0.1:$port" >/dev/null
for i in 0 1 2 3; do "$bin/bramble" enroll "w$i" >/dev/null; done

# ms until the last worker's "joined" line: from the host's "listening" line (workers first),
# or from when the workers were started (host first).
joined_after() {
    "$py" - "$home" "$1" <<'PY'
import datetime, glob, sys
home, since = sys.argv[1], sys.argv[2]
t = lambda l: datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00"))
if since == "listen":
    start = next(t(l) for l in open(f"{home}/host.log") if "listening" in l)
else:
    start = t(open(f"{home}/workers-started").read())
joins = [next(t(l) for l in open(f) if "joined as worker" in l) for f in glob.glob(f"{home}/w*.log")]
print(round((max(joins) - start).total_seconds() * 1000, 1))
PY
}
start_host() { "$bin/bramble" serve 2>"$home/host.log" & host_pid=$!; }
# Until the host's log says it listens (polling the log, 20 s at most).
wait_listening() {
    for _ in $(seq 400); do
        grep -q "listening" "$home/host.log" 2>/dev/null && return
        sleep 0.05
    done
    echo "the host never listened" >&2; exit 1
}
start_workers() {
    date -u +%Y-%m-%dT%H:%M:%S.%6NZ >"$home/workers-started"
    for i in 0 1 2 3; do
        "$bin/bramble-worker" --bundle "$home/default/workers/w$i.json" 2>"$home/w$i.log" &
    done
}
stop_all() { pkill -f "$home" 2>/dev/null || true; kill "$host_pid" 2>/dev/null || true; wait 2>/dev/null || true; }
wait_joined() {
    for _ in $(seq 200); do
        [ "$(grep -l "joined as worker" "$home"/w*.log 2>/dev/null | wc -l)" = 4 ] && return
        sleep 0.05
    done
    echo "workers never joined" >&2; exit 1
}
cpu_ms() { awk '{print ($14+$15)*10}' "/proc/$1/stat"; }

out=$(mktemp)
for _ in $(seq "$runs"); do
    # Start-up: host first (workers started once it listens), then workers first (started
    # 0.5 s before the host: that head start is the scenario).
    start_host; wait_listening; start_workers; wait_joined
    echo "{\"start_host_first\": $(joined_after started)}" >>"$out"
    stop_all
    start_workers; sleep 0.5; start_host; wait_joined
    echo "{\"start_workers_first\": $(joined_after listen)}" >>"$out"
    # The host stays up for the rest of the run.
    "$py" - "$bin/bramble" >>"$out" <<'PY'
import json, statistics, subprocess, sys, time
def call(args):
    t = time.perf_counter()
    subprocess.run([sys.argv[1], *args], stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) * 1000
print(json.dumps({"ids_ms": statistics.median(call(["ids"]) for _ in range(30)),
                  "apply_ms": statistics.median(call(["apply", "--", "true"]) for _ in range(30))}))
PY
    for chunk in 1 100; do
        before=$(cpu_ms "$host_pid")
        started=$("$py" -c 'import time; print(time.perf_counter())')
        "$bin/bramble" map --range "0..$n" --chunksize "$chunk" --persistent -- cat >/dev/null
        ended=$("$py" -c 'import time; print(time.perf_counter())')
        after=$(cpu_ms "$host_pid")
        "$py" -c "import json; w=$ended-$started; print(json.dumps({'rate_$chunk': $n/w, 'host_us_$chunk': ($after-$before)*1000/$n}))" >>"$out"
    done
    # A process per task: 5,000 x `true` over the 4 workers (their default slots: one per
    # core each), against xargs running as many at once on this machine.
    slots=$(( 4 * $(nproc) ))
    "$py" - "$bin/bramble" "$slots" >>"$out" <<'PY'
import json, subprocess, sys, time
bramble, slots = sys.argv[1], sys.argv[2]
t = time.perf_counter()
subprocess.run([bramble, "map", "--range", "0..5000", "--", "true"], stdout=subprocess.DEVNULL, check=True)
b = time.perf_counter() - t
t = time.perf_counter()
subprocess.run(f"seq 5000 | xargs -P{slots} -n1 true", shell=True, check=True)
x = time.perf_counter() - t
print(json.dumps({"process_s": b, "xargs_s": x, "xargs_ratio": x / b, "slots": int(slots)}))
PY
    stop_all
    for chunk in 1 100; do
        for peer in ipyparallel dask; do
            items=$peer_n; [ "$chunk" = 100 ] && items=$n
            (cd /tmp && "$OLDPWD/$py" "$OLDPWD/python/bench/rate.py" "$peer" "$items" "$chunk" 2>/dev/null) | tail -1 >>"$out"
        done
    done
done

"$py" - "$out" "$n" "$peer_n" <<'PY' | tee "$out.md"
import json, platform, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n, peer_n = sys.argv[2], sys.argv[3]
def med(key):
    return statistics.median(r[key] for r in rows if key in r)
def peer(name, chunk):
    v = [r for r in rows if r.get("peer") == name and r["chunk"] == chunk]
    return statistics.median(r["rate"] for r in v), v[0]["version"]
ip1, ipv = peer("ipyparallel", 1); dk1, dkv = peer("dask", 1)
ip100, _ = peer("ipyparallel", 100); dk100, _ = peer("dask", 100)
cpu = next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"{cpu}, {len([l for l in open('/proc/cpuinfo') if l.startswith('processor')])} cores; ipyparallel {ipv}, Dask {dkv}; medians of the runs.\n")
print("| what | bramble | ipyparallel | Dask | goal |")
print("|---|---|---|---|---|")
print(f"| fresh CLI call, `bramble ids` (ms, median of 30, back to back) | {med('ids_ms'):.1f} | | | <= 8 |")
print(f"| fresh CLI call, `bramble apply -- true` on 4 (ms) | {med('apply_ms'):.1f} | | | <= 8 |")
print(f"| start until 4 workers registered, host first (ms after the workers start) | {med('start_host_first'):.0f} | | | <= 50 |")
print(f"| the same, workers started 0.5 s before the host (ms) | {med('start_workers_first'):.0f} | | | <= 50 |")
print(f"| map of tiny tasks, chunksize 1 (items/s; bramble {n} items `--persistent`, peers {peer_n}) | {med('rate_1'):,.0f} | {ip1:,.0f} | {dk1:,.0f} | >= 45,000 |")
print(f"| the same, chunksize 100 ({n} items, items/s) | {med('rate_100'):,.0f} | {ip100:,.0f} | {dk100:,.0f} | >= 500,000 |")
slots = next(r["slots"] for r in rows if "slots" in r)
print(f"| a process per task, 5,000 x `true` (s; in brackets: xargs -P{slots} time / bramble time) | {med('process_s'):.2f} [{med('xargs_ratio'):.2f}x] | | | >= 0.98x |")
print(f"| host CPU per task, chunksize 1 (µs) | {med('host_us_1'):.1f} | | | <= 10 |")
print(f"| host CPU per item, chunksize 100 (µs) | {med('host_us_100'):.2f} | | | |")
PY
.venv/bin/python scripts/update-benchmarks.py perf "scripts/bench-perf.sh (release, loopback, 4 workers of 1 slot)" "## Task rate and start-up against the peers (\`scripts/bench-perf.sh\`)" <"$out.md"
