#!/usr/bin/env bash
# Installs (idempotently) the Debian tools the end-to-end tests use besides Rust: debugfs
# (e2fsprogs) and mkfs.vfat (dosfstools) for the image-baking test, systemd-analyze (systemd)
# for the unit test, chromium (headless) for the dashboard test. Needs root (apt) only when something is missing.
set -euo pipefail
missing=()
for tool in debugfs:e2fsprogs mkfs.vfat:dosfstools systemd-analyze:systemd chromium:chromium; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
