#!/usr/bin/env bash
# The GPU proof kit: everything BatchLens claims about CUDA, checked in one command (~6 minutes on
# an H100/H200, at most ~8: each step has its time limit; no network, installs nothing). Writes, into
# $OUT (the device tool's folder) or gpu-proof/: env.txt, gpu-tests.{log,xml}, gpu-long.{log,json},
# gpu-overlap.log and gpu-report.md. Commit the report as docs/gpu-report.md.
#
# The long rows (issue 29): LONG_IMAGES (20000) JPEGs at 640x480 and at 1600x1200, each through the
# expert DataLoader loop, Standard, Fastest, DALI (where installed) and the forward-only ceiling.
# KIT_FULL=1 also runs the older 2,048-image rows, cache policy costs and 10,000-image flat memory
# (scripts/gpu_bench.py without --long; ~2 more minutes).
#
#   bash scripts/gpu_proof.sh            # on a machine with a CUDA GPU and PyTorch installed
#
# It uses the machine's own python3 (PYTHON=... to choose) with its torch and torchvision, and runs
# BatchLens from this checkout through a copy on PYTHONPATH (no pip: the GPU machine is offline).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu-proof}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
start=$(date +%s)

# BatchLens as the wheel lays it out (batchlens + batchlens.resources), without installing it.
site=$(mktemp -d)
cp -r app/batchlens "$site/batchlens"
cp -r resources "$site/batchlens/resources"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" - <<'PYEOF'
import os, platform, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, {os.cpu_count()} CPU cores")
print("cuDNN", torch.backends.cudnn.version(), "| device:", torch.cuda.get_device_name(0))
PYEOF
  # The code's own fingerprint (check it in a checkout with the same line): the machine's copy of
  # the tree may carry a stale .git, so its `git log` is not evidence of what ran.
  echo "app/ fingerprint: $(find app resources -type f -not -path '*/__pycache__/*' | sort | xargs sha256sum | sha256sum | cut -c1-16)"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

# 1. The cuda tests (origin story, clear cache, OOM recovery, GPU decode, one copy per batch, ...).
# -p no:warnings: the machine's torch is not the pinned one, and its warnings are not ours to fail on.
timeout 150 "$PY" -m pytest tests/gpu -m cuda -s -q -p no:warnings -p no:cacheprovider -o addopts="" \
  --junitxml="$OUT_DIR/gpu-tests.xml" 2>&1 | tee "$OUT_DIR/gpu-tests.log"
echo "tests took $(( $(date +%s) - start )) s"

# 2. Long runs as users have them: end-to-end and steady-state images/s, first result, memory early
# and late, against the expert loop and the forward-only ceiling. gpu-long.json is written after
# each size, so a run cut short by the limit still reports the sizes it finished.
sets=$(mktemp -d)
timeout 300 "$PY" scripts/gpu_bench.py --out "$OUT_DIR" --long "${LONG_IMAGES:-20000}" \
  --sizes 640x480,1600x1200 --cache "$sets" ${GPU_LONG_ARGS:-} 2>&1 | tee "$OUT_DIR/gpu-long.log"
rm -rf "$sets"
echo "long rows done at $(( $(date +%s) - start )) s"
if [ "${KIT_FULL:-0}" = 1 ]; then
  timeout 200 "$PY" scripts/gpu_bench.py --out "$OUT_DIR" ${GPU_BENCH_ARGS:-} 2>&1 | tee "$OUT_DIR/gpu-bench.log"
fi

# 3. The copy ahead on a side stream (CPU decode): images/s with and without it, and how much of the
# host-to-device copies' time overlaps the forward's kernels (torch.profiler).
timeout 60 "$PY" scripts/gpu_profile.py --overlap --images 1024 2>&1 | tee "$OUT_DIR/gpu-overlap.log"
if [ "${KIT_FULL:-0}" = 1 ]; then  # where the fast run's CPU time goes (a diagnostic, not a claim)
  timeout 100 "$PY" scripts/gpu_profile.py --images 1024 2>&1 | tee "$OUT_DIR/gpu-profile.log"
fi

# 4. GPU memory you can read (issue 28): the panel under a second process holding 35 % of the card,
# a snapshot recorded during a real run and opened in the viewer, a fragmentation curve that moves
# with the batch size. Needs nvidia-ml-py for the panel (it says so otherwise) and PySide6 for the
# two PNGs; the figures land in memory-proof.json.
QT_QPA_PLATFORM=offscreen timeout 180 "$PY" scripts/gpu_memory_proof.py --out "$OUT_DIR" 2>&1 \
  | tee "$OUT_DIR/memory-proof.log"

"$PY" scripts/gpu_report.py "$OUT_DIR" > "$OUT_DIR/gpu-report.md"
rm -rf "$site"
echo "proof kit took $(( $(date +%s) - start )) s; report: $OUT_DIR/gpu-report.md"
