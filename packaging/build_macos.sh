#!/usr/bin/env bash
# Build the macOS disk image (Apple silicon): bash packaging/build_macos.sh   (on a Mac, as CI runs it)
#
#   dist/BatchLens.app                          the app (PyInstaller BUNDLE; torch uses the MPS backend)
#   dist/BatchLens-VERSION-macos-arm64.dmg      the app beside an Applications shortcut: drag to install
#
# Unsigned by default: fine for CI and for trying it yourself (right-click > Open the first time).
# For a release that opens without warnings on other Macs, sign and notarise:
#   BATCHLENS_CODESIGN_IDENTITY="Developer ID Application: Your Name (TEAMID)"   sign every binary,
#       the app and the .dmg with the hardened runtime and a secure timestamp
#       (the certificate must be in the keychain; see docs/packaging.md);
#   BATCHLENS_NOTARY_PROFILE=profile-name   also submit the .dmg to Apple's notary service and staple
#       the ticket (create the profile once with `xcrun notarytool store-credentials`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ "$(uname -s)" == Darwin ]] || { echo "build_macos.sh: run this on macOS" >&2; exit 2; }
"$PYTHON" -m PyInstaller --version >/dev/null 2>&1 \
    || { echo "build_macos.sh: PyInstaller is missing; run: $PYTHON -m pip install -e \".[packaging]\"" >&2; exit 2; }

VERSION=$("$PYTHON" -c "import sys; sys.path.insert(0, 'app'); import batchlens; print(batchlens.__version__)")
DMG="dist/BatchLens-$VERSION-macos-$(uname -m).dmg"
IDENTITY=${BATCHLENS_CODESIGN_IDENTITY:-}
start=$(date +%s)

"$PYTHON" packaging/make_icons.py build/icons
# PyInstaller signs each binary and the .app itself when BATCHLENS_CODESIGN_IDENTITY is set (spec).
rm -rf dist/BatchLens.app dist/batchlens
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --workpath build/pyinstaller --distpath dist packaging/batchlens.spec
echo "app: $(du -sh dist/BatchLens.app | cut -f1) in $(( $(date +%s) - start )) s"
if [[ -n "$IDENTITY" ]]; then
    codesign --verify --deep --strict --verbose=2 dist/BatchLens.app
fi

STAGE=build/dmg
rm -rf "$STAGE" "$DMG"
mkdir -p "$STAGE"
cp -R dist/BatchLens.app "$STAGE/"
ln -s /Applications "$STAGE/Applications"
hdiutil create -volname "BatchLens $VERSION" -srcfolder "$STAGE" -format UDZO -ov "$DMG"
rm -rf "$STAGE"

if [[ -n "$IDENTITY" ]]; then
    codesign --force --timestamp --sign "$IDENTITY" "$DMG"
    if [[ -n "${BATCHLENS_NOTARY_PROFILE:-}" ]]; then
        xcrun notarytool submit "$DMG" --keychain-profile "$BATCHLENS_NOTARY_PROFILE" --wait
        xcrun stapler staple "$DMG"
        spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
    fi
fi
echo "disk image: $DMG, $(du -h "$DMG" | cut -f1), $(( $(date +%s) - start )) s in all"
