#!/usr/bin/env bash
# Installs (idempotently) what the Python tests need and builds the `bramble` package into it:
#   .venv/          a virtualenv with maturin, pytest, nbclient, nbformat, ipykernel, numpy,
#                   cloudpickle and ruff from PyPI (pinned below; reinstalled when they change)
#   pypy3           Debian's PyPy (a Python 3.9) for the version-mismatch test (apt, as root),
#                   with cloudpickle in .venv/pypy-site
# then `maturin develop` builds the extension in the workspace's target directory (shared
# with cargo, so nothing is compiled twice) and installs the package into .venv.
#   scripts/setup-python.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/.venv
requirements=(
    maturin==1.16.0 pytest==9.2.0 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0
    numpy==2.4.6 cloudpickle==3.1.3 ruff==0.17.6
)

python=${BRAMBLE_PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "${requirements[*]}" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" > "$venv/.requirements"
fi

if ! command -v pypy3 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pypy3 >/dev/null
fi
if [ ! -d "$venv/pypy-site/cloudpickle" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check --target "$venv/pypy-site" \
        cloudpickle==3.1.3
fi

VIRTUAL_ENV=$venv "$venv/bin/maturin" develop -q -m python/Cargo.toml "$@"
