#!/usr/bin/env bash
# Shows that each test of tests/core/test_protections.py fails when its one protection layer is taken
# out of core/ (docs/development.md, "Protection tests"). Each layer is removed in a scratch copy of
# app/ (never in the working tree), and the tests run against that copy through PYTHONPATH.
# Usage: bash scripts/check_protection_tests.sh   (about a minute of CPU; prints one block per case)
set -uo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

copy() {
    rm -rf "$scratch/app"
    cp -r app "$scratch/app"
    ln -s "$PWD/resources" "$scratch/app/batchlens/resources"
}

remove() {  # remove FILE OLD NEW: replace the one occurrence of OLD in the copy of FILE
    python - "$scratch/app/batchlens/$1" "$2" "$3" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected one {old!r}; update this script to the code")
open(path, "w").write(text.replace(old, new))
PY
}

check() {
    echo "=== $1"
    PYTHONPATH="$scratch/app" python -m pytest tests/core/test_protections.py -q -p no:cacheprovider -W ignore \
        2>&1 | grep -E "^(FAILED|ERROR)|passed|failed|^E.*requiring grad"
}

copy
check "nothing removed"

copy
remove core/run/inference.py "with torch.inference_mode(), torch.autocast(" \
    "with __import__('contextlib').nullcontext(), torch.autocast("
check "(a) inference_mode replaced by a null context"

copy
remove core/models/base.py "        parameter.requires_grad_(False)" "        pass"
check "(b) parameters left trainable by prepare()"

copy
remove core/run/inference.py "    tensor = tensor.detach()
" ""
check "(c) .detach() removed from to_cpu_compact"

copy
remove core/run/inference.py "    tensor = tensor.detach()
" "    return tensor
"
check "(c) to_cpu_compact hands outputs on as they came (no detach, no CPU copy)"
