#!/usr/bin/env bash
# The Python client against ipyparallel 9, on the same machine in the same run: four local
# engines each (bramble.Cluster, ipyparallel.Cluster), the same code (python/bench/bench.py),
# taking turns, median of $BRAMBLE_BENCH_RUNS runs (default 3) with [best-worst]. Release
# builds. Installs ipyparallel into .venv (from PyPI) and the release build of the bramble
# package. Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BRAMBLE_BENCH_RUNS:-3}
bash scripts/setup-python.sh --release
.venv/bin/pip install -q --disable-pip-version-check ipyparallel==9.2.0
cargo build --release --workspace --bins
export BRAMBLE_BIN=$PWD/target/release/bramble
out=$(mktemp)
for _ in $(seq "$runs"); do
    for impl in bramble ipyparallel; do
        (cd /tmp && "$OLDPWD/.venv/bin/python" "$OLDPWD/python/bench/bench.py" "$impl") | tail -1 >>"$out"
    done
done
.venv/bin/python - "$out" <<'PY' | tee "$out.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def fig(impl, key):
    v = sorted(r[key] for r in rows if r["impl"] == impl)
    return statistics.median(v), v[0], v[-1]
def cell(m, lo, hi, fmt):
    return f"{fmt.format(m)} [{fmt.format(lo)}-{fmt.format(hi)}]"
lines = [
    "| workload | bramble | ipyparallel 9.2 | bramble vs ipyparallel | goal |",
    "|---|---|---|---|---|",
]
for key, name, fmt, better, goal in [
    ("map", "`lview.map(lambda x: x**10, range(10_000))`, chunksize 1 (items/s)", "{:.0f}", "higher", ">= 20x"),
    ("apply", "`c[:].apply_sync(lambda: 0)` on 4 engines, warm (ms, median of 100)", "{:.2f}", "lower", "<= 2 ms"),
    ("seg", "scatter 64 + `execute` + gather, warm (ms, median of 40)", "{:.2f}", "lower", "<= 5 ms"),
    ("mem", "resident memory per engine, worker included (MiB)", "{:.1f}", "lower", "10x less"),
]:
    b, i = fig("bramble", key), fig("ipyparallel", key)
    ratio = b[0] / i[0] if better == "higher" else i[0] / b[0]
    lines.append(f"| {name} | {cell(*b, fmt)} | {cell(*i, fmt)} | {ratio:.1f}x | {goal} |")
print("\n".join(lines))
PY
python3 scripts/update-benchmarks.py bench-python \
    "\`scripts/bench-python.sh\` (release builds, median of $runs runs each, [best-worst], 4 local engines each) on this repository's machine kind (2 cores)" \
    "## Python client and engines against ipyparallel (\`scripts/bench-python.sh\`)" <"$out.md"
rm -f "$out" "$out.md"
