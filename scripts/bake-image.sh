#!/usr/bin/env bash
# Writes the bramble worker into a Raspberry Pi OS image before flashing, without mounting it:
#
#   scripts/bake-image.sh IMAGE --bundle FILE [--config FILE] [--binary FILE]
#
# Finds the root filesystem (the first Linux partition of the MBR) and, with debugfs (e2fsprogs)
# at that partition's offset, writes the aarch64 worker to /usr/local/bin, the bundle and config
# to /etc/bramble, the systemd unit with its multi-user.target enable symlink, and the sysusers
# and tmpfiles entries that create the `bramble` user (group video) and give it the bundle at
# first boot. The boot (FAT) partition is not touched. Flash the image: the Pi joins on boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "bake-image.sh: $*" >&2; exit 2; }

image= bundle= config= binary=
[ $# -gt 0 ] && [ "${1#-}" = "$1" ] && { image=$1; shift; }
while [ $# -gt 0 ]; do
    case $1 in
        --bundle) bundle=${2:?--bundle needs a file}; shift 2 ;;
        --config) config=${2:?--config needs a file}; shift 2 ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$image" ] && [ -w "$image" ] || die "usage: bake-image.sh IMAGE --bundle FILE (IMAGE must be writable)"
[ -n "$bundle" ] && [ -r "$bundle" ] || die "--bundle FILE is required (bramble enroll NAME)"
grep -q '"role": *"worker"' "$bundle" || die "$bundle is not a worker bundle"
[ -n "$binary" ] || binary=$(ls "$here"/../target/aarch64-unknown-linux-*/release/bramble-worker 2>/dev/null | head -1 || true)
[ -n "$binary" ] && [ -f "$binary" ] || die "no aarch64 worker binary: run scripts/build-aarch64.sh or pass --binary"
[ -z "$config" ] || [ -r "$config" ] || die "cannot read config $config"
command -v debugfs >/dev/null || die "debugfs not found (Debian package e2fsprogs)"

# MBR: 0x55AA at byte 510; four 16-byte entries from byte 446 (type at +4, first LBA at +8).
[ "$(od -An -t x1 -j 510 -N 2 "$image" | tr -d ' \n')" = 55aa ] || die "$image has no MBR partition table"
start=
for i in 0 1 2 3; do
    type=$(od -An -t u1 -j $((446 + 16 * i + 4)) -N 1 "$image" | tr -d ' ')
    if [ "$type" = 131 ]; then
        start=$(od -An -t u4 -j $((446 + 16 * i + 8)) -N 4 "$image" | tr -d ' ')
        break
    fi
done
[ -n "$start" ] || die "$image has no Linux (0x83) partition"
fs="$image?offset=$((start * 512))"
debugfs -R "stat /etc" "$fs" >/dev/null 2>&1 || die "no root filesystem with /etc at sector $start"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$config" ]; then cp "$config" "$work/worker.toml"; else printf 'bundle = "/etc/bramble/bundle.json"\n' >"$work/worker.toml"; fi
# name in image | local file | mode
files=(
    "/usr/local/bin/bramble-worker|$binary|0100755"
    "/etc/bramble/bundle.json|$bundle|0100600"
    "/etc/bramble/worker.toml|$work/worker.toml|0100640"
    "/etc/systemd/system/bramble-worker.service|$here/bramble-worker.service|0100644"
    "/usr/lib/sysusers.d/bramble.conf|$here/bramble.sysusers|0100644"
    "/usr/lib/tmpfiles.d/bramble.conf|$here/bramble.tmpfiles|0100644"
)
link=/etc/systemd/system/multi-user.target.wants/bramble-worker.service
{
    # Parents first (mkdir of an existing directory only prints an error), old copies out.
    for d in /usr /usr/local /usr/local/bin /usr/lib /usr/lib/sysusers.d /usr/lib/tmpfiles.d \
        /etc/bramble /etc/systemd /etc/systemd/system /etc/systemd/system/multi-user.target.wants; do
        echo "mkdir $d"
    done
    for f in "${files[@]}"; do
        IFS='|' read -r dest src mode <<<"$f"
        echo "rm $dest"
        echo "write $src $dest"
        echo "sif $dest mode $mode"
        echo "sif $dest uid 0"
        echo "sif $dest gid 0"
    done
    echo "rm $link"
    echo "symlink $link /etc/systemd/system/bramble-worker.service"
} >"$work/commands"
debugfs -w -f "$work/commands" "$fs" >"$work/log" 2>&1 || { cat "$work/log" >&2; die "debugfs failed"; }
# debugfs carries on after errors and exits 0: an error of write/sif/symlink (not the expected
# ones of mkdir on an existing directory or rm of a missing file) fails the bake.
if grep -E '^(write|sif|symlink): ' "$work/log" >&2; then
    die "could not write everything into the root filesystem (full?)"
fi

# Check what landed: debugfs reports errors (a full filesystem) without failing.
for f in "${files[@]}"; do
    IFS='|' read -r dest src mode <<<"$f"
    stat=$(debugfs -R "stat $dest" "$fs" 2>/dev/null)
    got=$(sed -n 's/.*Mode: *\([0-7]*\).*/\1/p' <<<"$stat")
    [ "$got" = "${mode: -4}" ] || die "$dest: mode ${got:-missing}, expected ${mode: -4}"
    size=$(sed -n 's/.*Size: *\([0-9]*\).*/\1/p' <<<"$stat" | head -1)
    [ "$size" = "$(stat -c %s "$src")" ] || die "$dest: wrote ${size:-0} of $(stat -c %s "$src") bytes (root filesystem full?)"
done
debugfs -R "stat $link" "$fs" 2>/dev/null | grep -q 'Fast link dest: "/etc/systemd/system/bramble-worker.service"' \
    || die "enable symlink missing"
echo "baked bramble-worker into $image (root partition at sector $start); flash it and boot"
