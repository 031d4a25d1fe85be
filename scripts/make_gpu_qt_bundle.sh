#!/usr/bin/env bash
# Packs what the BatchLens window needs on the GPU machine, which has torch but no Qt, into
# .gpuqt/qt-bundle.tar.xz (~25 MB; .gpuqt/ is ignored through .git/info/exclude: carry it):
#   site/     PySide6 (only the Qt modules and plugins the window loads), shiboken6, pyqtgraph,
#             superqt, qtpy, copied from this venv (abi3 wheels: they run on Python 3.10+)
#   syslibs/  the system libraries those need, from this distribution's .deb files (apt-get
#             download), for a machine that lacks some: scripts/gpu_window_proof.sh uses one only
#             where that machine has none of its own (glibc, libstdc++ and libgcc_s are never packed)
#   fonts/    DejaVu Sans and Sans Mono, so the text renders the same everywhere
#   licenses/ the copyright files of the .deb packages; MANIFEST.txt lists what is inside
#
#   bash scripts/make_gpu_qt_bundle.sh          # needs apt-get, dpkg, ldd, xz; about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
DEST=.gpuqt
QT_MODULES="Core Gui Widgets OpenGL OpenGLWidgets Svg SvgWidgets Test DBus"
PLUGINS="platforms/libqoffscreen.so platforms/libqminimal.so imageformats/libqjpeg.so
  imageformats/libqgif.so imageformats/libqico.so imageformats/libqsvg.so iconengines/libqsvgicon.so"
# Never packed: glibc's libraries and the C++ runtime, which the machine's own torch already needs.
SKIP='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s)\.so'

stage=$(mktemp -d)
debs=$(mktemp -d)
trap 'rm -rf "$stage" "$debs"' EXIT
site="$stage/site"
mkdir -p "$site/PySide6/Qt/lib" "$stage/syslibs" "$stage/fonts" "$stage/licenses"

# -- Python packages --------------------------------------------------------------------------------
P="$SITE/PySide6"
cp "$P"/{__init__.py,_config.py,_git_pyside_version.py,libpyside6.abi3.so.6.11} "$site/PySide6/"
for m in $QT_MODULES; do
  cp "$P/Qt$m.abi3.so" "$site/PySide6/"
  cp "$P/Qt/lib/libQt6$m.so.6" "$site/PySide6/Qt/lib/"
done
cp "$P"/Qt/lib/libicu{data,i18n,uc}.so.73 "$site/PySide6/Qt/lib/"
for p in $PLUGINS; do
  mkdir -p "$site/PySide6/Qt/plugins/$(dirname "$p")"
  cp "$P/Qt/plugins/$p" "$site/PySide6/Qt/plugins/$p"
done
mkdir -p "$site/shiboken6"
cp "$SITE"/shiboken6/{__init__.py,_config.py,_git_shiboken_module_version.py,Shiboken.abi3.so,libshiboken6.abi3.so.6.11} \
  "$site/shiboken6/"
for pkg in pyqtgraph superqt qtpy; do cp -r "$SITE/$pkg" "$site/"; done
for info in "$SITE"/{pyside6_essentials,shiboken6,pyqtgraph,superqt,QtPy}-*.dist-info; do cp -r "$info" "$site/"; done
rm -rf "$site/pyqtgraph/examples" "$site/pyqtgraph/opengl"  # demos; 3D views (need PyOpenGL)
find "$site" -name __pycache__ -prune -exec rm -rf {} +

# -- system libraries: every one the kept Qt files reach (ldd is transitive), from its .deb --------
mapfile -t elf < <(find "$site" -name '*.so*' -type f)
declare -A wanted=()  # soname -> the path it resolves to here
while read -r soname _ path _; do
  [[ "$soname" =~ $SKIP || "$path" != /* || "$path" == "$stage"* ]] && continue
  wanted[$soname]=$path
done < <(ldd "${elf[@]}" 2>/dev/null | grep '=>' | sort -u)
declare -A packages=()
for soname in "${!wanted[@]}"; do
  real=$(readlink -f "${wanted[$soname]}")
  owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null) ||
    { echo "no package owns $real ($soname)" >&2; exit 1; }
  packages[${owner%%:*}]=1
done
packages[fonts-dejavu-core]=1
# The archive's current version of each (a security update may be newer than the one installed here).
(cd "$debs" && apt-get download "${!packages[@]}" >/dev/null 2>&1) ||
  (cd "$debs" && apt-get download "${!packages[@]}")  # again, showing why it failed
versions=()
for deb in "$debs"/*.deb; do
  dpkg -x "$deb" "$debs/root"
  name=$(dpkg-deb -f "$deb" Package)
  versions+=("$name $(dpkg-deb -f "$deb" Version)")
  cp "$debs/root/usr/share/doc/$name/copyright" "$stage/licenses/$name.copyright" 2>/dev/null || true
done
for soname in "${!wanted[@]}"; do
  found=$(find "$debs/root" -name "$soname" | head -1)
  [ -n "$found" ] || { echo "$soname is not in the downloaded packages" >&2; exit 1; }
  cp -L "$found" "$stage/syslibs/$soname"
done
cp "$debs"/root/usr/share/fonts/truetype/dejavu/DejaVuSans{,-Bold,Mono,Mono-Bold}.ttf "$stage/fonts/"

{
  echo "BatchLens window bundle for the GPU machine, made $(date -u +'%Y-%m-%d %H:%M UTC') by scripts/make_gpu_qt_bundle.sh"
  echo "Python packages (from $SITE):"
  (cd "$site" && ls -d ./*.dist-info | sed 's|^./|  |; s|\.dist-info$||')
  echo "Debian packages ($(. /etc/os-release && echo "$PRETTY_NAME")):"
  printf '  %s\n' "${versions[@]}"
  echo "System libraries:"
  (cd "$stage/syslibs" && ls | sed 's/^/  /')
} > "$stage/MANIFEST.txt"

mkdir -p "$DEST"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/$DEST/" "$exclude" 2>/dev/null || echo "/$DEST/" >> "$exclude"
tar -C "$stage" -cf - . | xz -T0 -6 > "$DEST/qt-bundle.tar.xz.tmp"
mv "$DEST/qt-bundle.tar.xz.tmp" "$DEST/qt-bundle.tar.xz"
cp "$stage/MANIFEST.txt" "$DEST/MANIFEST.txt"
echo "$DEST/qt-bundle.tar.xz: $(du -h "$DEST/qt-bundle.tar.xz" | cut -f1) ($(du -sh "$stage" | cut -f1) unpacked);" \
  "${#wanted[@]} system libraries from ${#versions[@]} packages; see $DEST/MANIFEST.txt"
