#!/usr/bin/env bash
# Builds bramble-worker and bramble for 64-bit Raspberry Pis.
#
#   scripts/build-aarch64.sh [release|debug]     (default release)
#
# With `cross` and a working Docker: the static aarch64-unknown-linux-musl target of Cross.toml.
# Otherwise: Debian's cross toolchain (scripts/setup-aarch64.sh) for aarch64-unknown-linux-gnu.
# Prints where the binaries are, their architecture and size.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
case $profile in release|debug) ;; *) echo "build-aarch64.sh: profile is release or debug" >&2; exit 2 ;; esac
flag=$([ "$profile" = release ] && echo --release || true)

if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    target=aarch64-unknown-linux-musl
    cross build $flag --target $target -p bramble-worker -p bramble-host
else
    target=aarch64-unknown-linux-gnu
    bash scripts/setup-aarch64.sh >/dev/null
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    cargo +debian build $flag --target $target -p bramble-worker -p bramble-host
fi
dir=target/$target/$profile
for b in bramble-worker bramble; do
    size=$(stat -c %s "$dir/$b")
    machine=$(od -An -t u2 -j 18 -N 2 "$dir/$b" | tr -d ' ')
    arch=$([ "$machine" = 183 ] && echo aarch64 || echo "ELF machine $machine")
    printf '%s\t%s\t%s bytes (%.2f MiB)\n' "$dir/$b" "$arch" "$size" "$(echo "$size / 1048576" | awk '{print $1/$3}')"
done
