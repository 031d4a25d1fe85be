#!/usr/bin/env bash
# Smoke-test built installers the way a user gets them: bash packaging/smoke_test.sh [WHAT...]
#
#   WHAT: a .deb (unpacked with dpkg-deb into a temporary root, as it would install), a .tar.zst
#         (unpacked into a temporary folder), or a bundle folder holding the `batchlens` executable
#         (dist/batchlens, or BatchLens.app/Contents/MacOS on macOS). Default: the .deb and the
#         tarball in dist/.
#
# For each one: runs the bundled `batchlens run` on the bundled demo samples (both demo models) with
# an empty environment from a scratch directory and, on Linux, no network and the source tree hidden,
# so neither the source tree nor a Python installation can be used; checks predictions.jsonl and
# summary.json; opens the bundled window offscreen with `batchlens --self-test` (runs both demos
# through the real window); runs a Hugging Face model folder, a timm checkpoint and a timm model as
# timm puts it on the hub (tiny, seeded, made by packaging/make_smoke_models.py with the Python in
# $SMOKE_MODELS_PYTHON, else .venv's or python3, whichever has transformers and timm) and checks each
# image's labels and scores against what transformers' pipeline and timm's own loading give; prints
# the bundle size and the times.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    shopt -s nullglob
    targets=(dist/batchlens_*.deb dist/batchlens-*.tar.zst)
    shopt -u nullglob
    [[ ${#targets[@]} -gt 0 ]] || { echo "smoke_test.sh: nothing in dist/; run packaging/build_linux.sh" >&2; exit 2; }
fi

# Any Python 3 reads the JSON and times the commands (python3 on Linux/macOS, python on Windows).
PY=""
for candidate in python3 python; do
    if "$candidate" -c "import sys; assert sys.version_info >= (3, 8)" 2>/dev/null; then PY=$candidate; break; fi
done
[[ -n "$PY" ]] || { echo "smoke_test.sh: needs python3 to check the JSON output" >&2; exit 2; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/batchlens-smoke.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# Run the bundled program with nothing of this machine's Python set-up, and on Linux with no network
# (a new network namespace) and the source tree hidden under an empty tmpfs (a new mount namespace),
# so the program can only use what is inside the bundle.
HIDE_REPO=()
NET_ONLY=()
if [[ "$(uname -s)" == Linux ]]; then
    if unshare -n true 2>/dev/null; then NET_ONLY=(unshare -n)
    elif unshare -rn true 2>/dev/null; then NET_ONLY=(unshare -rn)
    else echo "note: no unshare here: the network stays visible" >&2; fi
    hide='mount -t tmpfs -o size=1m hidden "$1" && shift && exec "$@"'
    if [[ "$SCRATCH" == "$REPO"/* ]]; then :
    elif unshare -n -m true 2>/dev/null; then HIDE_REPO=(unshare -n -m -- sh -c "$hide" sh "$REPO")
    elif unshare -rnm true 2>/dev/null; then HIDE_REPO=(unshare -rnm -- sh -c "$hide" sh "$REPO")
    fi
fi
isolate_for() {  # BUNDLE_DIR: hide the source tree unless the bundle lives in it
    local dir
    dir=$(cd "$1" && pwd)
    if [[ ${#HIDE_REPO[@]} -gt 0 && "$dir" != "$REPO"/* ]]; then
        ISOLATE=("${HIDE_REPO[@]}"); echo "  isolation: empty environment, no network, $REPO hidden"
    elif [[ ${#NET_ONLY[@]} -gt 0 ]]; then
        ISOLATE=("${NET_ONLY[@]}"); echo "  isolation: empty environment, no network"
    else
        ISOLATE=(); echo "  isolation: empty environment"
    fi
}
ISOLATE=()
run_isolated() {
    local home="$SCRATCH/home"
    mkdir -p "$home"
    if [[ "$(uname -s)" == Linux || "$(uname -s)" == Darwin ]]; then
        (cd "$home" && env -i PATH=/usr/bin:/bin HOME="$home" LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
            ${ISOLATE[@]+"${ISOLATE[@]}"} "$@")
    else  # Windows (Git Bash): keep the variables Windows itself needs
        (cd "$home" && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV QT_QPA_PLATFORM=offscreen "$@")
    fi
}

now() { "$PY" -c "import time; print(time.time())"; }
seconds_of() {  # wall-clock seconds of a command, its output kept in $SCRATCH/last.log
    local t0 t1
    t0=$(now)
    "$@" >"$SCRATCH/last.log" 2>&1 || { cat "$SCRATCH/last.log" >&2; return 1; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
}

# The Hugging Face and timm models, made once, outside the source tree (which the runs cannot see).
MODELS="$SCRATCH/models"
make_models() {
    local candidate
    for candidate in ${SMOKE_MODELS_PYTHON:-} "$REPO/.venv/bin/python" python3 python; do
        if [[ -n "$candidate" ]] && "$candidate" "$REPO/packaging/make_smoke_models.py" "$MODELS" \
            >"$SCRATCH/make-models.log" 2>&1; then
            echo "model sources: $(tail -1 "$SCRATCH/make-models.log") (with $candidate)"
            return 0
        fi
    done
    cat "$SCRATCH/make-models.log" >&2
    return 1
}
HAVE_MODELS=0
if make_models; then HAVE_MODELS=1
else fail "no Python here with torch, transformers and timm to make the Hugging Face and timm test models (set SMOKE_MODELS_PYTHON)"; fi

check_against_library() {  # MODEL_KEY OUTPUT_DIR: labels and scores as the model's own library gives
    "$PY" - "$@" "$MODELS/expected.json" <<'EOF'
import json, sys
from pathlib import Path
key, out, expected = sys.argv[1], Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text("utf-8"))[sys.argv[1]]
lines = {json.loads(x)["image"]: json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()}
assert sorted(lines) == sorted(expected), f"{key}: results for {sorted(lines)}, expected {sorted(expected)}"
worst = 0.0
for image, want in expected.items():
    line = lines[image]
    assert line["status"] == "ok", f"{key} {image}: {line['error']}"
    got = [(t["label"], t["score"]) for t in line["top"][: len(want)]]
    assert [g[0] for g in got] == [w[0] for w in want], f"{key} {image}: labels {got}, library says {want}"
    worst = max(worst, *(abs(g[1] - w[1]) for g, w in zip(got, want)))
assert worst < 1e-4, f"{key}: scores differ from the library's by up to {worst:.1e}"
print(f"  {key}: {len(expected)} images, labels equal the library's, scores within {worst:.1e}")
EOF
}

check_outputs() {  # MODEL OUTPUT_DIR EXPECTED_COUNT
    "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
model, out, expected = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
assert len(lines) == expected, f"{model}: {len(lines)} JSONL lines for {expected} sample images"
bad = [line for line in lines if line["status"] != "ok" or line["error"] is not None]
assert not bad, f"{model}: {len(bad)} image(s) failed, e.g. {bad[0]}"
for line in lines:
    assert line["seconds"] >= 0, line
    if model == "demo-shapes":
        top = line["top"]
        assert top and all(0.0 <= t["score"] <= 1.0 for t in top), line
        assert top[0]["label"] in {"circle", "square", "triangle", "cross"}, line
    else:
        png = out / line["output"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
summary = json.loads((out / "summary.json").read_text("utf-8"))
assert summary["counts"]["ok"] == expected and summary["counts"]["error"] == 0, summary["counts"]
assert summary["device"] == "cpu", summary["device"]
print(f"  {model}: {expected} images ok, predictions.jsonl and summary.json checked "
      f"(the run itself: {summary['seconds']:.1f} s; the rest of the time above is start-up)")
EOF
}

run_against_library() {  # KEY WHAT MODEL-ARGS...: the bundle (smoke's $exe, $label) on the 3 photos
    local key=$1 what=$2 out="$SCRATCH/out-${1//[:\/]/-}" t
    shift 2
    rm -rf "$out"
    t=$(seconds_of run_isolated "$exe" run "$@" --input "$MODELS/in" --output "$out" --device cpu \
        --no-progress) || fail "$label: batchlens run on $what"
    echo "  batchlens run on $what (3 photos): $t s"
    check_against_library "$key" "$out" || fail "$label: results of $what"
}

smoke() {  # BUNDLE_DIR (holds the batchlens executable) LABEL
    local bundle=$1 label=$2 exe top
    exe="$bundle/batchlens"
    [[ -x "$exe" ]] || exe="$bundle/batchlens.exe"
    [[ -x "$exe" ]] || { fail "$label: no batchlens executable in $bundle"; return; }
    # A macOS app keeps its executables in Contents/MacOS and everything else beside it.
    top=$bundle
    [[ "$bundle" != */Contents/MacOS ]] || top=$(cd "$bundle/../.." && pwd)
    echo "-- $label"
    isolate_for "$top"
    echo "  bundle size: $(du -sh "$top" | cut -f1)"
    local t
    t=$(seconds_of run_isolated "$exe" --version) || { fail "$label: batchlens --version"; return; }
    echo "  start-up, \`batchlens --version\` (Python, no torch): $t s"
    t=$(seconds_of run_isolated "$exe" models) || { fail "$label: batchlens models"; return; }
    echo "  start-up, \`batchlens models\` (imports torch): $t s"
    grep -q "demo-shapes" "$SCRATCH/last.log" || fail "$label: batchlens models does not list demo-shapes"
    for model in demo-shapes demo-denoise; do
        # The samples as the bundle ships them (found inside the installed folder, not the checkout).
        local samples count out="$SCRATCH/out-$model"
        samples=$(find -L "$top/" -type d -path "*batchlens/resources/samples/$model" | head -1)
        [[ -n "$samples" ]] || { fail "$label: no bundled samples for $model"; continue; }
        count=$(find "$samples" -maxdepth 1 -type f -name '*.png' | wc -l)
        rm -rf "$out"
        t=$(seconds_of run_isolated "$exe" run --model "$model" --input "$samples" --output "$out" \
            --device cpu --no-progress) || { fail "$label: batchlens run --model $model"; continue; }
        echo "  batchlens run --model $model ($count samples): $t s"
        check_outputs "$model" "$out" "$count" || fail "$label: outputs of $model"
    done
    if [[ $HAVE_MODELS == 1 ]]; then  # the models people have
        run_against_library hf-vit "a Hugging Face folder (a tiny ViT)" --model "$MODELS/hf-vit"
        run_against_library timm:test_resnet "a timm checkpoint" --model timm:test_resnet \
            --weights "$MODELS/test_resnet.pth" --labels "$MODELS/labels.txt"
        run_against_library timm-hub "a timm hub folder" --model "$MODELS/timm-hub"
    fi
    if run_isolated "$exe" --help | grep -q -- "--self-test"; then
        t=$(seconds_of run_isolated "$exe" --self-test) || { fail "$label: batchlens --self-test"; return; }
        grep -v "does not support propagateSizeHints" "$SCRATCH/last.log" | sed 's/^/  | /'
        echo "  window self-test (offscreen, both demos through the window): $t s"
    else
        fail "$label: this build has no --self-test (the window is missing)"
    fi
}

for target in "${targets[@]}"; do
    case "$target" in
        *.deb)
            root="$SCRATCH/deb-root"
            rm -rf "$root" && mkdir -p "$root"
            dpkg-deb -x "$target" "$root"
            echo "== $target (unpacked into a temporary root)"
            # What the package promises: the program on the PATH and a valid applications-menu entry.
            [[ "$(readlink "$root/usr/bin/batchlens")" == /opt/batchlens/batchlens ]] \
                || fail "/usr/bin/batchlens does not point to /opt/batchlens/batchlens"
            if command -v desktop-file-validate >/dev/null; then
                desktop-file-validate "$root/usr/share/applications/batchlens.desktop" \
                    && echo "  .desktop entry valid" || fail "batchlens.desktop is not valid"
            fi
            [[ -f "$root/usr/share/icons/hicolor/256x256/apps/batchlens.png" ]] || fail "no 256x256 icon"
            # Runtime libraries the package depends on must be installed for the test to mean anything.
            missing=$(dpkg-deb -f "$target" Depends | tr ',' '\n' | sed 's/[ (].*//; s/^ *//' | while read -r pkg; do
                [[ -z "$pkg" ]] || dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
                    || echo "$pkg"; done)
            [[ -z "$missing" ]] || echo "note: not installed here (apt-get install $missing): the window may not start" >&2
            # Through the relocated symlink, as /usr/bin/batchlens -> /opt/batchlens/batchlens would be.
            ln -sfn "$root/opt/batchlens/batchlens" "$root/usr/bin/batchlens"
            smoke "$root/opt/batchlens" "deb: /opt/batchlens"
            echo "  via the symlink on the PATH: $(run_isolated "$root/usr/bin/batchlens" --version)"
            echo "  package: $(du -h "$target" | cut -f1), installed size $(dpkg-deb -f "$target" Installed-Size) KiB"
            rm -rf "$root"
            ;;
        *.tar.zst)
            dir="$SCRATCH/tarball"
            rm -rf "$dir" && mkdir -p "$dir"
            t0=$(date +%s)
            zstd -q -dc "$target" | tar -C "$dir" -xf -
            echo "== $target (unpacked in $(( $(date +%s) - t0 )) s)"
            smoke "$dir/batchlens" "tarball"
            echo "  tarball: $(du -h "$target" | cut -f1)"
            rm -rf "$dir"
            ;;
        *)
            [[ -d "$target" ]] || { fail "$target: not a .deb, .tar.zst or folder"; continue; }
            echo "== $target"
            smoke "$target" "bundle folder"
            ;;
    esac
done

if [[ $failures -gt 0 ]]; then
    echo "smoke test: $failures failure(s)" >&2
    exit 1
fi
echo "smoke test passed"
