#!/usr/bin/env bash
# Deploys the worker to Pis over ssh, from the host machine:
#
#   scripts/deploy.sh [--dry-run] [--binary FILE] [--profile NAME] user@pi-01 [user@pi-02 ...]
#
# For each Pi: enrolls a bundle named after it (`bramble enroll --reuse`: a Pi deployed again
# keeps its bundle), copies the aarch64 worker,
# the install scripts and the bundle, runs install-worker.sh with sudo, and waits until the
# worker shows in `bramble status`. --dry-run prints every command instead of running it and
# changes nothing. Needs key-based ssh and passwordless sudo on the Pis.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "deploy.sh: $*" >&2; exit 2; }
dry=0 profile=${BRAMBLE_PROFILE:-default}
binary=$(ls "$here"/../target/aarch64-unknown-linux-*/release/bramble-worker 2>/dev/null | head -1 || true)
bramble=${BRAMBLE:-bramble}
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=1; shift ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || die "name at least one user@host"
[ -n "$binary" ] && [ -f "$binary" ] || die "no aarch64 worker binary: run scripts/build-aarch64.sh or pass --binary"

run() {
    if [ "$dry" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
for target in "${targets[@]}"; do
    host=${target#*@}
    if [[ $host =~ ^[0-9.]+$ ]]; then
        name=pi-${host//./-}                       # 10.0.0.7 -> pi-10-0-0-7
    else
        name=$(echo "${host%%.*}" | tr -c 'A-Za-z0-9._\n-' '-')   # pi-01.local -> pi-01
    fi
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "cannot make a worker name from $target"
    echo "== $target as worker $name"
    run "$bramble" --profile "$profile" enroll "$name" --reuse --out "$staging/$name.json"
    run ssh "$target" mkdir -p /tmp/bramble-install
    run scp "$binary" "$here/install-worker.sh" "$here/bramble-worker.service" "$here/bramble.sysusers" \
        "$here/bramble.tmpfiles" \
        "$staging/$name.json" "$target:/tmp/bramble-install/"
    run ssh "$target" sudo bash /tmp/bramble-install/install-worker.sh \
        --bundle "/tmp/bramble-install/$name.json" --binary /tmp/bramble-install/bramble-worker
    run ssh "$target" rm -rf /tmp/bramble-install
    if [ "$dry" = 0 ]; then
        for _ in $(seq 60); do
            "$bramble" --profile "$profile" --json status | grep -q "\"name\": \"$name\"" && break
            sleep 1
        done || true
        "$bramble" --profile "$profile" --json status | grep -q "\"name\": \"$name\"" \
            || die "$name did not join within 60 s (journalctl -u bramble-worker on $target)"
        echo "$name joined"
    fi
done
