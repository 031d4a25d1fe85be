#!/usr/bin/env bash
# Build the Windows installer: bash packaging/build_windows.sh   (Git Bash on Windows, as CI runs it)
#
#   dist/batchlens/                                   the PyInstaller one-folder bundle
#   dist/BatchLens-VERSION-windows-x64-setup.exe      per-user NSIS installer (Start menu, uninstaller)
#
# STANDIN=1 (any OS with makensis, e.g. Debian's nsis package) skips PyInstaller and compiles the
# installer against a small stand-in bundle folder: a check that the NSIS script itself is correct.
# The bundle must hold the CPU build of torch: NSIS installers cannot exceed 2 GB (docs/packaging.md explains).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# PYTHON=/path/to/python picks the interpreter (default: the active virtual environment, .venv, python).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON=python
    elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    elif [[ -x .venv/Scripts/python.exe ]]; then PYTHON=.venv/Scripts/python.exe
    else PYTHON=python; fi
fi
command -v makensis >/dev/null || { echo "build_windows.sh: makensis is missing (NSIS 3)" >&2; exit 2; }

winpath() { if command -v cygpath >/dev/null; then cygpath -w "$1"; else echo "$1"; fi; }
VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, 'app'); import batchlens; print(batchlens.__version__)")
OUTFILE="dist/BatchLens-$VERSION-windows-x64-setup.exe"
start=$(date +%s)

"$PYTHON" packaging/make_icons.py build/icons
if [[ "${STANDIN:-0}" == 1 ]]; then
    BUNDLE=build/standin/batchlens
    rm -rf build/standin
    mkdir -p "$BUNDLE/_internal/batchlens/resources"
    printf 'stand-in for the PyInstaller console executable\n' > "$BUNDLE/batchlens.exe"
    printf 'stand-in for the PyInstaller windowed executable\n' > "$BUNDLE/batchlens-gui.exe"
    cp -r resources/models resources/samples "$BUNDLE/_internal/batchlens/resources/"
    OUTFILE="build/standin/BatchLens-$VERSION-standin-setup.exe"
else
    BUNDLE=dist/batchlens
    rm -rf "$BUNDLE"
    "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
        --workpath build/pyinstaller --distpath dist packaging/batchlens.spec
    [[ -f "$BUNDLE/batchlens-gui.exe" ]] || { echo "build_windows.sh: no $BUNDLE/batchlens-gui.exe" >&2; exit 1; }
    echo "bundle: $(du -sh "$BUNDLE" | cut -f1) in $(( $(date +%s) - start )) s"
fi
mkdir -p "$(dirname "$OUTFILE")"
makensis -V2 -DVERSION="$VERSION" -DBUNDLE_DIR="$(winpath "$REPO/$BUNDLE")" \
    -DICON="$(winpath "$REPO/build/icons/batchlens.ico")" -DOUTFILE="$(winpath "$REPO/$OUTFILE")" \
    "$(winpath "$REPO/packaging/windows/batchlens.nsi")"
if [[ "${STANDIN:-0}" == 1 ]] && command -v 7z >/dev/null; then
    # 7-Zip reads NSIS installers: check the payload holds the bundle, the uninstaller and the resources.
    listing=$(7z l "$OUTFILE")
    for f in batchlens.exe batchlens-gui.exe Uninstall.exe _internal/batchlens/resources/models/demo-shapes.safetensors; do
        grep -q "$f" <<<"$listing" || { echo "build_windows.sh: $f is not in $OUTFILE" >&2; exit 1; }
    done
    echo "payload checked with 7z: executables, uninstaller and bundled resources are in the installer"
fi
echo "installer: $OUTFILE, $(du -h "$OUTFILE" | cut -f1), $(( $(date +%s) - start )) s in all"
