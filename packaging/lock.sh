#!/usr/bin/env bash
# Re-make the installers' lock, packaging/requirements-installer.txt: bash packaging/lock.sh [UV-OPTIONS]
#
# Every package the Linux installers are built from (pyproject.toml's dependencies and the hf, timm and
# packaging extras, and all they depend on), pinned to one version with the hashes of its files, for
# CPython 3.11 on Linux x86_64 with glibc 2.35 (Ubuntu 22.04, where CI builds). The pins already in
# the file are kept where pyproject.toml still allows them; to move on:
#   bash packaging/lock.sh --upgrade-package transformers   # one package (and what it needs)
#   bash packaging/lock.sh --upgrade                        # everything, to the newest allowed
# Then rebuild and smoke-test (docs/packaging.md) before committing the new lock.
# Needs uv (python -m pip install uv; made with uv 0.9.30), or UV=/path/to/uv, and the network.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
command -v "$UV" >/dev/null || { echo "lock.sh: uv is missing; run: python -m pip install uv" >&2; exit 2; }
"$UV" pip compile pyproject.toml --extra packaging --generate-hashes \
    --python-version 3.11 --python-platform x86_64-manylinux_2_35 \
    --index-url https://pypi.org/simple --no-emit-index-url \
    --custom-compile-command "bash packaging/lock.sh" \
    -o packaging/requirements-installer.txt "$@" >/dev/null  # the file, not its echo on stdout
python3 packaging/check_lock.py
