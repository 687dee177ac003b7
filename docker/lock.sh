#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml (run from anywhere; needs `pip install uv`).
#
#   requirements.lock      runtime + Earth Engine extra   -> docker/Dockerfile (CPU image)
#   requirements-gpu.lock  runtime + ee + gpu (jax[cuda12]) -> docker/Dockerfile.cuda
#   requirements-dev.lock  runtime + ee + dev (tests, lint) -> reproducible dev/CI installs
#
# All three are resolved for CPython 3.11 on linux x86_64 (manylinux_2_28, i.e. the glibc of
# Debian bookworm and newer) with hashes, so `pip install --require-hashes --no-deps -r ...`
# installs exactly the same wheels everywhere. torch (the `bench` extra) is in none of them.
set -euo pipefail
cd "$(dirname "$0")/.."

compile() {
    local out=$1
    shift
    uv pip compile pyproject.toml "$@" \
        --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 \
        --generate-hashes \
        --custom-compile-command "docker/lock.sh" \
        --output-file "$out" --quiet
}

compile requirements.lock --extra ee
compile requirements-gpu.lock --extra ee --extra gpu
compile requirements-dev.lock --extra ee --extra dev
echo "wrote requirements.lock requirements-gpu.lock requirements-dev.lock"
