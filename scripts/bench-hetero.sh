#!/usr/bin/env bash
# Heterogeneous-cluster benchmark: real `bramble serve` + `bramble-worker --sim ...` processes
# on this machine, every policy on a fresh cluster in the same run, makespans against the ideal
# bound. Prints a markdown table and writes it into docs/BENCHMARKS.md.
#
# Every worker has one slot. Tasks sleep for their work at the simulated board's speed
# (BRAMBLE_SIM_SPEED, or BRAMBLE_SIM_SPEED_FILE followed while they run), so they do not
# compete for this machine's cores (CPU-bound tasks from many workers on a 2-core machine
# would measure the machine, not the scheduler).
set -euo pipefail
cd "$(dirname "$0")/.."
# BRAMBLE_BENCH_PROFILE=release measures release builds (slower to build, closer to a deployment).
profile=${BRAMBLE_BENCH_PROFILE:-debug}
if [ "$profile" = release ]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
bramble=$PWD/target/$profile/bramble
worker=$PWD/target/$profile/bramble-worker
policies=(thermal leastload roundrobin)
# BRAMBLE_BENCH_RUNS=N runs every scenario N times per policy and reports the median.
runs=${BRAMBLE_BENCH_RUNS:-3}
out=$(mktemp)

# run_once POLICY TASKS BASE MODE SPEC... -> the job's makespan in ms, on a fresh cluster
run_once() {
    local policy=$1 tasks=$2 base=$3 mode=$4
    shift 4
    local specs=("$@") home port pids=() i=0
    home=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    export BRAMBLE_HOME=$home
    "$bramble" init --listen "127.0.0.1:$port" >/dev/null
    "$bramble" serve --policy "$policy" 2>"$home/host.log" &
    pids+=($!)
    for spec in "${specs[@]}"; do
        "$bramble" enroll "w$i" >/dev/null
        # shellcheck disable=SC2086
        "$worker" --bundle "$home/default/workers/w$i.json" --slots 1 --sim-no-duty-cycle \
            ${spec%%speed=*} 2>"$home/w$i.log" &
        pids+=($!)
        i=$((i + 1))
    done
    for _ in $(seq 100); do
        [ "$("$bramble" ids 2>/dev/null | tr -cd ',' | wc -c)" -eq $((${#specs[@]} - 1)) ] && break
        sleep 0.1
    done
    case $mode in
    perl) # a co-process that starts in a few milliseconds, like an already-running engine
        "$bramble" map --persistent --range "0..$tasks" -- perl -ne \
            "BEGIN { \$| = 1; \$d = $base / \$ENV{BRAMBLE_SIM_SPEED} } select(undef, undef, undef, \$d); print" \
            >/dev/null ;;
    python) # the same loop in Python: each interpreter's start-up is inside the makespan
        "$bramble" map --persistent --range "0..$tasks" -- python3 -c \
            "import os,sys,time
s=float(os.environ['BRAMBLE_SIM_SPEED'])
for l in sys.stdin: time.sleep($base/s); print(l.strip(), flush=True)" >/dev/null ;;
    *) # one process per task, working through $base seconds of full Pi 5 speed in steps
        # of at most 50 ms at the board's current speed, as CPU-bound work would
        "$bramble" map --range "0..$tasks" -- perl -e \
            "\$w = $base; \$f = \$ENV{BRAMBLE_SIM_SPEED_FILE};
while (\$w > 1e-6) {
    open(my \$h, '<', \$f) or die \"\$f: \$!\"; \$s = <\$h> + 0; close \$h;
    \$s = 0.01 if \$s < 0.01; \$dt = \$w / \$s; \$dt = 0.05 if \$dt > 0.05;
    select(undef, undef, undef, \$dt); \$w -= \$dt * \$s;
}" >/dev/null ;;
    esac
    "$bramble" --json jobs | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["elapsed_ms"])'
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$home"
}

# run_scenario NAME TASKS BASE_SECONDS MODE(perl|python|process) "WORKER FLAGS speed=S" ...
#   -> one table row: per policy the median makespan of $runs runs (and their range)
run_scenario() {
    local name=$1 tasks=$2 base=$3 mode=$4
    shift 4
    local specs=("$@") speeds=0 row="| $name |" ideal run policy
    for spec in "${specs[@]}"; do
        speeds=$(awk -v a="$speeds" -v s="$(sed -n 's/.*speed=\([0-9.]*\).*/\1/p' <<<"$spec")" 'BEGIN{print a+s}')
    done
    ideal=$(awk -v n="$tasks" -v b="$base" -v s="$speeds" 'BEGIN{printf "%.2f", n*b/s}')
    declare -A ms=()
    # Policies take turns within each round, so a drift in the machine's state hits all alike.
    for run in $(seq "$runs"); do
        for policy in "${policies[@]}"; do
            ms[$policy]+=" $(run_once "$policy" "$tasks" "$base" "$mode" "${specs[@]}")"
        done
    done
    for policy in "${policies[@]}"; do
        # shellcheck disable=SC2086
        row+=" $(printf '%s\n' ${ms[$policy]} | sort -n | awk -v i="$ideal" '
            { v[NR] = $1 / 1000 }
            END {
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                printf "%.2f s (%.2fx)", m, m / i
                if (NR > 1) printf " [%.2f-%.2f]", v[1], v[NR]
            }') |"
    done
    echo "$row $ideal s |" | tee -a "$out"
}

{
    echo "| scenario | thermal | leastload | roundrobin | ideal bound |"
    echo "|---|---|---|---|---|"
} | tee "$out"

# 1. Two fast and two three-times-slower workers, 200 tasks of 20 ms (ipyparallel's leastload
#    reaches 1.21x the ideal bound here, a static split 2.01x, Dask 1.07x).
#    The co-processes are perl loops, which start in a few milliseconds: the engines in that
#    comparison were already running. The second row is the same job with python3 loops, whose
#    start-up (four interpreters on two cores, about 150 ms) counts against every policy.
fast_slow=("--sim-speed 1.0 speed=1.0" "--sim-speed 1.0 speed=1.0"
    "--sim-speed 0.333 speed=0.333" "--sim-speed 0.333 speed=0.333")
run_scenario "2 fast + 2 3x-slower, 200 x 20 ms" 200 0.02 perl "${fast_slow[@]}"
run_scenario "the same with python3 co-processes (start-up counted)" 200 0.02 python "${fast_slow[@]}"

# 2. A mixed throttling cluster: Pi 5 with cooler, bare Pi 4s at 25 and 35 C, a bare Pi 3B+;
#    thermal time 30x so boards heat within the run. The same total work (64 s at full Pi 5
#    speed) cut ever coarser: placing the last tasks well matters more the coarser they are.
#    Ideal bound at full clock (throttling only makes the true bound later).
rack=("--sim pi5-cooler --sim-time-scale 30 speed=1.0"
    "--sim pi4-bare --sim-ambient 25 --sim-time-scale 30 speed=0.45"
    "--sim pi4-bare --sim-ambient 35 --sim-time-scale 30 speed=0.45"
    "--sim pi3b-plus-bare --sim-time-scale 30 speed=0.35")
run_scenario "mixed throttling rack, 64 x 1 s (at full Pi 5 speed)" 64 1.0 process "${rack[@]}"
run_scenario "mixed throttling rack, 16 x 4 s" 16 4.0 process "${rack[@]}"
run_scenario "mixed throttling rack, 8 x 8 s" 8 8.0 process "${rack[@]}"

python3 scripts/update-benchmarks.py bench-hetero \
    "\`scripts/bench-hetero.sh\` ($profile build, median of $runs runs per policy, [fastest-slowest]) on this repository's machine kind (2 cores)" \
    "## Heterogeneous and throttling clusters (\`scripts/bench-hetero.sh\`)" <"$out"
rm -f "$out"
