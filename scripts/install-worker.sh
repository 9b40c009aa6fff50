#!/usr/bin/env bash
# Installs the bramble worker on a Raspberry Pi (run it there, as root). Idempotent: run it again
# to upgrade the binary or replace the bundle.
#
#   install-worker.sh --bundle pi-01.json [--binary ./bramble-worker] [--config worker.toml]
#                     [--root DIR] [--force]
#
# Puts the binary in /usr/local/bin (0755), bundle and config in /etc/bramble (0600/0640, owned
# by the worker's user), the `bramble` system user (group video, for /dev/vcio) via
# systemd-sysusers, and the systemd unit, enabled and (re)started. --root DIR writes into DIR
# instead of / and starts nothing (tests, image preparation). Refuses a binary built for
# another architecture than `dpkg --print-architecture` says, unless --force.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install-worker.sh: $*" >&2; exit 2; }

root=/ bundle= binary= config= force=0
while [ $# -gt 0 ]; do
    case $1 in
        --bundle) bundle=${2:?--bundle needs a file}; shift 2 ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        --config) config=${2:?--config needs a file}; shift 2 ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$bundle" ] || die "--bundle FILE is required (issue one with \`bramble enroll NAME\`)"
[ -r "$bundle" ] || die "cannot read bundle $bundle"
grep -q '"role": *"worker"' "$bundle" || die "$bundle is not a worker bundle"
if [ -z "$binary" ]; then
    for candidate in "$here/bramble-worker" ./bramble-worker "$here/../target/release/bramble-worker"; do
        [ -x "$candidate" ] && binary=$candidate && break
    done
fi
[ -n "$binary" ] && [ -x "$binary" ] || die "no bramble-worker binary (pass --binary FILE)"
[ -z "$config" ] || [ -r "$config" ] || die "cannot read config $config"
[ -d "$root" ] || die "--root $root is not a directory"
live=0
[ "$root" = / ] && live=1
[ "$live" = 0 ] || [ "$(id -u)" = 0 ] || die "run as root (or use --root DIR)"

# ELF e_machine (offset 18) against the userland's architecture. A static aarch64 binary also
# runs on 32-bit Pi OS with a 64-bit kernel, so armhf accepts aarch64 with a note.
machine=$(od -An -t u2 -j 18 -N 2 "$binary" | tr -d ' ')
case $machine in 183) elf=arm64 ;; 40) elf=armhf ;; 62) elf=amd64 ;; *) elf="machine-$machine" ;; esac
userland=${BRAMBLE_DPKG_ARCH:-$(dpkg --print-architecture 2>/dev/null || echo unknown)}
if [ "$elf" != "$userland" ]; then
    if [ "$elf/$userland" = arm64/armhf ]; then
        echo "install-worker.sh: note: aarch64 binary on an armhf userland: needs a 64-bit kernel and a static (musl) build" >&2
    elif [ "$force" = 0 ]; then
        die "$binary is built for $elf but this system is $userland (use the matching build, or --force)"
    fi
fi

r=${root%/}
install -D -m 0755 "$binary" "$r/usr/local/bin/bramble-worker"
install -D -m 0600 "$bundle" "$r/etc/bramble/bundle.json"
if [ -n "$config" ]; then
    install -D -m 0640 "$config" "$r/etc/bramble/worker.toml"
elif [ ! -e "$r/etc/bramble/worker.toml" ]; then
    install -d "$r/etc/bramble"
    printf 'bundle = "/etc/bramble/bundle.json"\n' >"$r/etc/bramble/worker.toml"
    chmod 0640 "$r/etc/bramble/worker.toml"
fi
install -D -m 0644 "$here/bramble.sysusers" "$r/usr/lib/sysusers.d/bramble.conf"
install -D -m 0644 "$here/bramble.tmpfiles" "$r/usr/lib/tmpfiles.d/bramble.conf"
install -D -m 0644 "$here/bramble-worker.service" "$r/etc/systemd/system/bramble-worker.service"
install -d "$r/etc/systemd/system/multi-user.target.wants"
ln -sfn /etc/systemd/system/bramble-worker.service "$r/etc/systemd/system/multi-user.target.wants/bramble-worker.service"

if [ "$live" = 1 ]; then
    systemd-sysusers /usr/lib/sysusers.d/bramble.conf
    chown bramble:bramble /etc/bramble/bundle.json
    chown root:bramble /etc/bramble/worker.toml
    systemctl daemon-reload
    systemctl enable bramble-worker.service
    systemctl restart bramble-worker.service
    echo "bramble-worker installed and started: journalctl -u bramble-worker -f"
else
    echo "bramble-worker installed under $root (nothing started)"
fi
