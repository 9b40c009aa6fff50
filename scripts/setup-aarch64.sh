#!/usr/bin/env bash
# Installs (idempotently) the local aarch64 cross toolchain used where `cross` (Docker) is not
# available: Debian's rustc/cargo with the arm64 standard library, the aarch64 C compiler
# (ring and the bundled SQLite are partly C), and qemu-user-static to run the result.
# Registers Debian's rustc as the rustup toolchain `debian`. Needs root (apt).
set -euo pipefail
packages=(rustc-web cargo-web gcc-aarch64-linux-gnu qemu-user-static libstd-rust-web-dev:arm64)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! rustup toolchain list | grep -q '^debian'; then
    rustup toolchain link debian /usr
fi
rustc +debian --version
