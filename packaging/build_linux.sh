#!/usr/bin/env bash
# Build the Linux installers: bash packaging/build_linux.sh
#
#   dist/batchlens/                                 the PyInstaller one-folder bundle
#   dist/batchlens-VERSION-linux-x86_64.tar.zst     that folder as a tarball (unpack anywhere, run batchlens)
#   dist/batchlens_VERSION_amd64.deb                installs to /opt/batchlens, `batchlens` on the PATH,
#                                                   an applications-menu entry and icon
#
# Needs: the installers' lock installed in the build Python (python -m pip install --require-hashes
# --no-deps -r packaging/requirements-installer.txt; the project itself need not be installed), dpkg-deb
# and zstd and objdump (binutils); desktop-file-validate (desktop-file-utils) is run when present.
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python, else python3).
# The build refuses to start unless that Python has exactly the lock's versions (packaging/check_lock.py
# --installed); UNLOCKED=1 builds from whatever it has (to try a new library before re-locking).
# LINTIAN=1 also runs lintian on the .deb (slow: it unpacks and inspects all 4 GB; the findings
# and why each is accepted are in packaging/linux/lintian-overrides and docs/packaging.md).
# SKIP_BUNDLE=1 reuses dist/batchlens from an earlier run (when only the packaging changed).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    else PYTHON=python3; fi
fi
LOCK_INSTALL="$PYTHON -m pip install --require-hashes --no-deps -r packaging/requirements-installer.txt"
"$PYTHON" -m PyInstaller --version >/dev/null 2>&1 \
    || { echo "build_linux.sh: PyInstaller is missing; run: $LOCK_INSTALL" >&2; exit 2; }
if [[ "${UNLOCKED:-0}" == 1 ]]; then
    echo "UNLOCKED=1: building from $PYTHON's packages as they are, not the lock's" >&2
else  # the installers are built from the locked set only (docs/packaging.md, "The lock")
    "$PYTHON" packaging/check_lock.py --installed \
        || { echo "build_linux.sh: not built: the installers are built from the lock's versions only" \
                "(UNLOCKED=1 to try anyway)" >&2; exit 2; }
fi
for tool in dpkg-deb zstd objdump; do
    command -v "$tool" >/dev/null || { echo "build_linux.sh: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done

VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, 'app'); import batchlens; print(batchlens.__version__)")
ARCH=$(dpkg --print-architecture)
TARBALL="dist/batchlens-$VERSION-linux-$(uname -m).tar.zst"
DEB="dist/batchlens_${VERSION}_${ARCH}.deb"
seconds() { echo $(( $(date +%s) - $1 )); }
total_start=$(date +%s)

echo "== 1/4 PyInstaller bundle (dist/batchlens/)"
step=$(date +%s)
if [[ "${SKIP_BUNDLE:-0}" == 1 && -x dist/batchlens/batchlens ]]; then
    echo "reusing dist/batchlens (SKIP_BUNDLE=1)"
else
    rm -rf dist/batchlens
    "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
        --workpath build/pyinstaller --distpath dist packaging/batchlens.spec
fi
echo "bundle: $(du -sh dist/batchlens | cut -f1) in $(seconds "$step") s"

echo "== 2/4 tarball ($TARBALL)"
step=$(date +%s)
rm -f "$TARBALL"
tar -C dist -cf - batchlens | zstd -q -T0 -3 -o "$TARBALL"
echo "tarball: $(du -h "$TARBALL" | cut -f1) in $(seconds "$step") s"

echo "== 3/4 Debian package ($DEB)"
step=$(date +%s)
ROOT=build/deb/batchlens
rm -rf build/deb
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications" \
    "$ROOT/usr/share/doc/batchlens" "$ROOT/usr/share/lintian/overrides"
# Hard links, not copies: the bundle is 4 GB and dpkg-deb only reads it.
cp -al dist/batchlens "$ROOT/opt/batchlens"
ln -s /opt/batchlens/batchlens "$ROOT/usr/bin/batchlens"
install -m 644 packaging/linux/batchlens.desktop "$ROOT/usr/share/applications/batchlens.desktop"
# The icon at the sizes desktops look for (hicolor theme), made from the PNG in resources/icons.
"$PYTHON" packaging/make_icons.py build/icons >/dev/null
mkdir -p "$ROOT/usr/share/icons"
cp -r build/icons/hicolor "$ROOT/usr/share/icons/hicolor"
install -m 644 packaging/linux/copyright "$ROOT/usr/share/doc/batchlens/copyright"
sed "s/@VERSION@/$VERSION/; s/@DATE@/$(date -R)/" packaging/linux/changelog \
    | gzip -9n > "$ROOT/usr/share/doc/batchlens/changelog.gz"
install -m 644 packaging/linux/lintian-overrides "$ROOT/usr/share/lintian/overrides/batchlens"
mkdir -p "$ROOT/usr/share/man/man1"
sed "s/@VERSION@/$VERSION/" packaging/linux/batchlens.1 | gzip -9n > "$ROOT/usr/share/man/man1/batchlens.1.gz"
# The newest glibc symbol any bundled binary needs: the oldest system the package can run on.
GLIBC=$(find dist/batchlens -type f \( -name '*.so*' -o -name batchlens \) -print0 \
    | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V -u | tail -1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@GLIBC@/${GLIBC:-2.28}/" \
    -e "s/@INSTALLED_SIZE@/$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)/" \
    packaging/linux/control > "$ROOT/DEBIAN/control"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
chmod 644 "$ROOT/DEBIAN/md5sums"
# Files must be world-readable and owned by root in the package, whatever the build umask was;
# shared libraries need no execute bit (the wheels ship some with one).
chmod -R u+rwX,go+rX,go-w "$ROOT"
find "$ROOT/opt" -type f -name '*.so*' -exec chmod 644 {} +
rm -f "$DEB"
dpkg-deb --root-owner-group -Zzstd -z3 --build "$ROOT" "$DEB" >/dev/null
rm -rf build/deb
echo ".deb: $(du -h "$DEB" | cut -f1) in $(seconds "$step") s"

echo "== 4/4 checks"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate packaging/linux/batchlens.desktop && echo "desktop-file-validate: no findings"
else
    echo "desktop-file-validate not installed (apt-get install desktop-file-utils): skipped"
fi
if [[ "${LINTIAN:-0}" != 1 ]]; then
    echo "lintian: not run (LINTIAN=1 runs it)"
elif command -v lintian >/dev/null; then
    step=$(date +%s)
    # Tags we accept are explained in packaging/linux/lintian-overrides (shipped in the package).
    lintian --tag-display-limit 0 "$DEB" || true
    echo "lintian: done in $(seconds "$step") s (overridden tags: lintian --show-overrides $DEB)"
else
    echo "lintian not installed (apt-get install lintian): skipped"
fi
echo "Built $TARBALL and $DEB in $(seconds "$total_start") s in all."
