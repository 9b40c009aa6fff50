#!/usr/bin/env bash
# Quickstart: build bramble and its Python package, start a local cluster of 4 workers in a
# throwaway profile, run the ipyparallel tutorial's first steps through the CLI and then in
# Python, then a script of your own with its data (--stage), and stop everything. The first
# run installs the Python tools (scripts/setup-python.sh: a virtualenv in .venv, from PyPI) and
# takes a few minutes to build.
#
#   scripts/demo.sh          run the steps and stop the cluster
#   scripts/demo.sh --keep   leave the cluster running to play with (it says how to use and
#                            stop it)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
case "${1:-}" in
    --keep) keep=1 ;;
    "") ;;
    *) echo "demo.sh: unknown option $1 (--keep leaves the cluster running)" >&2; exit 2 ;;
esac

cargo build --workspace --bins
bash scripts/setup-python.sh
bramble=$PWD/target/debug/bramble
export BRAMBLE_HOME
BRAMBLE_HOME=$(mktemp -d)

# Port 0: the host picks a free port and writes it into the profile.
$bramble init --listen 127.0.0.1:0 >/dev/null
$bramble cluster start -n 4 --python "$PWD/.venv/bin/python" 2>"$BRAMBLE_HOME/cluster.log" &
cluster=$!
if [ "$keep" = 0 ]; then
    trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null; rm -rf "$BRAMBLE_HOME"' EXIT
fi

for _ in $(seq 100); do
    [ "$($bramble ids 2>/dev/null)" = "[0, 1, 2, 3]" ] && break
    sleep 0.1
done

# Your own script and data: staged with the job, run in a fresh directory per item.
work=$BRAMBLE_HOME/my-project
mkdir -p "$work/data"
printf 'import sys\nwords = open(f"data/{sys.argv[1]}.txt").read().split()\nprint(sys.argv[1], len(words), "words")\nopen(f"{sys.argv[1]}.count", "w").write(str(len(words)))\n' >"$work/count.py"
for part in a b c d; do seq 1 "$((RANDOM % 50 + 1))" >"$work/data/$part.txt"; done

set -x
$bramble ids
$bramble apply -- echo "Hello World"
$bramble map --range 0..64 --chunksize 10 -- python3 -c 'print({}**10)'
.venv/bin/python python/examples/seed_tutorial.py
(cd "$work" && $bramble map --stage count.py data --fetch '*.count' -- python3 count.py {} ::: a b c d)
ls "$work"/*.count
$bramble status
$bramble jobs
set +x

if [ "$keep" = 1 ]; then
    cat <<EOT

The cluster keeps running (pid $cluster). To use it from this shell:

    export BRAMBLE_HOME=$BRAMBLE_HOME
    export PATH=$PWD/target/debug:\$PATH
    bramble status
    bramble map --range 0..8 -- echo {}

Stop it with:  kill $cluster    (its log: $BRAMBLE_HOME/cluster.log)
EOT
fi
