#!/usr/bin/env bash
# Builds bramble-worker and bramble for 64-bit Raspberry Pis, and the Python package as an
# aarch64 wheel (for a client or a Jupyter server on a "master" Pi).
#
#   scripts/build-aarch64.sh [release|debug]     (default release)
#
# With `cross` and a working Docker: the static aarch64-unknown-linux-musl target of Cross.toml.
# Otherwise: Debian's cross toolchain (scripts/setup-aarch64.sh) for aarch64-unknown-linux-gnu.
# The wheel is always built with Debian's cross toolchain and maturin from .venv
# (scripts/setup-python.sh), into target/wheels/. Prints where everything is, its architecture
# and size.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
case $profile in release|debug) ;; *) echo "build-aarch64.sh: profile is release or debug" >&2; exit 2 ;; esac
flag=$([ "$profile" = release ] && echo --release || true)

target=aarch64-unknown-linux-gnu
if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    target=aarch64-unknown-linux-musl
    cross build $flag --target $target -p bramble-worker -p bramble-host
fi
bash scripts/setup-aarch64.sh >/dev/null
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
if [ $target = aarch64-unknown-linux-gnu ]; then
    cargo +debian build $flag --target $target -p bramble-worker -p bramble-host
fi
[ -x .venv/bin/maturin ] || bash scripts/setup-python.sh >/dev/null
rm -f target/wheels/bramble-*_aarch64.whl
RUSTUP_TOOLCHAIN=debian .venv/bin/maturin build $flag --target aarch64-unknown-linux-gnu \
    -m python/Cargo.toml >/dev/null

machine() { od -An -t u2 -j 18 -N 2 | tr -d ' '; }
arch() { [ "$1" = 183 ] && echo aarch64 || echo "ELF machine $1"; }
dir=target/$target/$profile
for b in bramble-worker bramble; do
    size=$(stat -c %s "$dir/$b")
    printf '%s\t%s\t%s bytes (%.2f MiB)\n' "$dir/$b" "$(arch "$(machine < "$dir/$b")")" "$size" \
        "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')"
done
wheel=$(ls target/wheels/bramble-*_aarch64.whl)
so=$(.venv/bin/python -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(z.read([n for n in z.namelist() if n.endswith(".so")][0]))' "$wheel" | machine)
printf '%s\t%s\t%s bytes\n' "$wheel" "$(arch "$so")" "$(stat -c %s "$wheel")"
