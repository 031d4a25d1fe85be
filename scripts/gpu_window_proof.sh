#!/usr/bin/env bash
# The BatchLens window during a GPU run, on a machine with torch but no Qt and no display (the GPU
# machine): unpacks .gpuqt/qt-bundle.tar.xz (made here by scripts/make_gpu_qt_bundle.sh; carry
# .gpuqt), sets Qt up offscreen and runs scripts/gpu_window_shot.py. Writes into $OUT (or
# gpu-window/): gpu-window-{mid,end}-{1280x720,1920x1040}.png, gpu-window-memory.csv and
# gpu-window.log. About a minute on an H100/H200.
#
#   bash scripts/gpu_window_proof.sh [gpu_window_shot.py options, e.g. --device cpu --images 80]
#
# GPUQT_ALL_LIBS=1 takes every system library from the bundle (to check the bundle on a machine
# that has them all; also where there is no ldd); by default the machine's own are used and the
# bundle's only for those it lacks.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu-window}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
bundle=.gpuqt/qt-bundle.tar.xz
if [ ! -f "$bundle" ]; then
  echo "gpu_window_proof: no $bundle: run scripts/make_gpu_qt_bundle.sh and carry .gpuqt" >&2
  exit 2
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
if command -v xz >/dev/null; then
  tar -xJf "$bundle" -C "$root"
else  # a bare image may have no xz: Python's own lzma then
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$bundle" "$root"
fi || { echo "gpu_window_proof: could not unpack $bundle" >&2; exit 2; }
site="$root/site"
# BatchLens as the wheel lays it out, as scripts/gpu_proof.sh does.
cp -r app/batchlens "$site/batchlens"
cp -r resources "$site/batchlens/resources"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# System libraries: link the bundle's copy of each one the Qt files cannot find into fallback/, then
# look again (a library taken from the bundle may need others), until nothing more is missing.
fallback="$root/fallback"
mkdir -p "$fallback"
export LD_LIBRARY_PATH="$fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mapfile -t qt_files < <(find "$site" -name '*.so*' -type f)
if [ "${GPUQT_ALL_LIBS:-0}" = 1 ] || ! command -v ldd >/dev/null; then
  ln -s "$root"/syslibs/* "$fallback/"
else
  for _ in 1 2 3 4 5 6; do
    added=0
    for lib in $(ldd "${qt_files[@]}" "$fallback"/* 2>/dev/null | awk '/not found/ {print $1}' | sort -u); do
      if [ -e "$root/syslibs/$lib" ] && [ ! -e "$fallback/$lib" ]; then
        ln -s "$root/syslibs/$lib" "$fallback/$lib"
        added=1
      fi
    done
    [ "$added" = 1 ] || break
  done
fi
echo "system libraries from the bundle: $(cd "$fallback" && ls | tr '\n' ' ')"
missing=$(ldd "${qt_files[@]}" "$fallback"/* 2>/dev/null | grep 'not found' | sort -u)
if [ -n "$missing" ]; then
  echo "gpu_window_proof: still not found (the window will not start):" >&2
  echo "$missing" >&2
fi

# Qt offscreen, with the bundle's fonts only (the same text on every machine).
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="$root/runtime"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
export FONTCONFIG_FILE="$root/fonts.conf"
cat > "$FONTCONFIG_FILE" <<EOF
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <dir>$root/fonts</dir>
  <cachedir>$root/fontcache</cachedir>
  <alias><family>sans-serif</family><prefer><family>DejaVu Sans</family></prefer></alias>
  <alias><family>Sans Serif</family><prefer><family>DejaVu Sans</family></prefer></alias>
  <alias><family>monospace</family><prefer><family>DejaVu Sans Mono</family></prefer></alias>
</fontconfig>
EOF

{
  date -u +"%Y-%m-%d %H:%M UTC"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; fi
  git log -1 --format="BatchLens commit %h (%cs): %s" 2>/dev/null
  sed -n 1p "$root/MANIFEST.txt"
} | tee "$OUT_DIR/gpu-window.log"
"$PY" scripts/gpu_window_shot.py --out "$OUT_DIR" "$@" 2>&1 | tee -a "$OUT_DIR/gpu-window.log"
status=${PIPESTATUS[0]}
echo "gpu_window_proof: exit $status; files in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')" | tee -a "$OUT_DIR/gpu-window.log"
exit "$status"
