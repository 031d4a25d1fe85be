#!/usr/bin/env bash
# Shows that each protection test fails when its one protection is taken out of core/
# (docs/development.md, "Protection tests"): the three layers that keep nothing alive per image
# (tests/core/test_protections.py) and the guards that keep a NaN, a special file or a pickle's code out
# of a run (tests/core/test_guards.py). Each protection is removed in a scratch copy of app/ (never in the
# working tree), and its tests run against that copy through PYTHONPATH.
# Usage: bash scripts/check_protection_tests.sh   (a few minutes of CPU; needs only the .[test] extra)
# PYTHON names the interpreter (default: python). Prints one block per case and "caught" or
# "NOT CAUGHT" for each; exits non-zero when a removal is not caught or a test fails with nothing removed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
missed=0

copy() {
    rm -rf "$scratch/app"
    cp -r app "$scratch/app"
    rm -rf "$scratch/app/batchlens/resources"
    ln -s "$PWD/resources" "$scratch/app/batchlens/resources"
}

remove() {  # remove FILE OLD NEW: replace the one occurrence of OLD in the copy of FILE
    "$PYTHON" - "$scratch/app/batchlens/$1" "$2" "$3" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected one {old!r}; update this script to the code")
open(path, "w").write(text.replace(old, new))
PY
    if [ $? -ne 0 ]; then missed=1; return 1; fi
}

run_tests() {  # run_tests TEST...: the tests against the scratch copy; a hang fails after 120 s
    PYTHONPATH="$scratch/app${PYTHONPATH:+:$PYTHONPATH}" timeout 600 "$PYTHON" -m pytest "$@" -q -p no:cacheprovider -W ignore \
        -o addopts="" -m "not slow" -p timeout --timeout=120 2>&1
}

baseline() {  # baseline TEST...: with nothing removed every test passes
    echo "=== nothing removed"
    local output
    output=$(run_tests "$@")
    echo "$output" | grep -E "^(FAILED|ERROR)|passed|failed|skipped|no tests ran"
    if echo "$output" | grep -qE "^(FAILED|ERROR)|failed|no tests ran"; then
        echo "--- NOT GREEN: a test fails with nothing removed"
        missed=1
    fi
}

check() {  # check "WHAT WAS REMOVED" TEST...: each named test must fail
    local what=$1 output test caught=1
    shift
    echo "=== $what"
    output=$(run_tests "$@")
    echo "$output" | grep -E "^(FAILED|ERROR)|passed|failed|^E.*requiring grad|Timeout"
    for test in "$@"; do
        # a parametrised test counts once every case of it fails or errors
        if ! echo "$output" | grep -qE "^(FAILED|ERROR) ${test//[/\\[}"; then
            caught=0
            echo "--- NOT CAUGHT by $test"
        fi
    done
    if [ $caught = 1 ]; then echo "--- caught: every test named failed"; else missed=1; fi
}

P=tests/core/test_protections.py
G=tests/core/test_guards.py

copy
baseline $P $G

copy
remove core/run/inference.py "with torch.inference_mode(), torch.autocast(" \
    "with __import__('contextlib').nullcontext(), torch.autocast(" &&
check "(a) inference_mode replaced by a null context" \
    $P::test_every_forward_of_a_run_is_under_inference_mode

copy
remove core/models/base.py "        parameter.requires_grad_(False)" "        pass" &&
check "(b) parameters left trainable by prepare()" $P::test_every_model_source_loads_with_frozen_parameters

copy
remove core/run/inference.py "    tensor = tensor.detach()
" "" &&
check "(c) .detach() removed from to_cpu_compact" $P::test_split_outputs_are_detached_compact_copies_even_of_a_graph

copy
remove core/run/inference.py "    tensor = tensor.detach()
" "    return tensor
" &&
check "(c) to_cpu_compact hands outputs on as they came (no detach, no CPU copy)" \
    $P::test_split_outputs_are_detached_compact_copies_even_of_a_graph $P::test_what_the_task_keeps_is_plain_cpu_data

copy
remove core/run/batch_item.py '    """Whether a model output (a tensor, or a mapping or list of them) holds no NaN or infinity."""
' '    """Whether a model output (a tensor, or a mapping or list of them) holds no NaN or infinity."""
    return True
' &&
check "(d) all_finite made always true: a model output's NaN goes unchecked" \
    "$G::test_a_model_output_holding_nan_gives_error_lines_and_no_files[image_to_image]" \
    "$G::test_a_model_output_holding_nan_gives_error_lines_and_no_files[segmentation]" \
    "$G::test_a_model_output_holding_nan_gives_error_lines_and_no_files[detection]"

copy
remove core/run/pipeline.py "        where = non_finite(result.fields)
" "        where = None
" &&
check "(e) _keep without its NaN check of the result's fields" \
    $G::test_a_result_holding_nan_is_an_error_in_the_events_and_the_file

copy
remove core/outputs/results.py "        try:
            text = dumps_line(record)
        except ValueError:" "        text = dumps_line(record)
        if False:" &&
check "(f) the writer's fallback that turns a NaN into an error line" \
    $G::test_the_writer_turns_a_nan_it_is_handed_into_an_error_line

copy
remove core/outputs/results.py '        return self.folder.write_text(SUMMARY, text + "\n")' \
    '        (self.folder.path / SUMMARY).write_text(text + "\n", encoding="utf-8")
        return self.folder.path / SUMMARY' &&
check "(g) summary.json written in place instead of atomically" \
    $G::test_summary_json_is_replaced_whole_never_rewritten_in_place

copy
remove core/inputs/images.py "    if not stat.S_ISREG(st.st_mode):
        raise ImageError(_NOT_REGULAR)
    try:" "    try:" &&
check "(h) the guarded opener's file-type check before opening" \
    $G::test_a_named_pipe_is_refused_before_it_is_opened

copy
remove core/inputs/images.py 'os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)' "os.O_RDONLY" &&
check "(i) the guarded opener's O_NONBLOCK" \
    $G::test_a_file_swapped_for_a_named_pipe_after_the_check_does_not_hang

copy
remove core/inputs/images.py "    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        f.close()" "    if False:
        f.close()" &&
check "(j) the guarded opener's check of what it opened (a special file has size 0, so one check)" \
    $G::test_a_file_swapped_for_a_named_pipe_after_the_check_does_not_hang

copy
remove core/models/state_dict.py 'return torch.load(path, map_location="cpu", weights_only=True)' \
    'return torch.load(path, map_location="cpu", weights_only=False)' &&
check "(k) untrusted checkpoints loaded with weights_only=False" \
    $G::test_a_legacy_pickle_checkpoint_cannot_run_code

echo
if [ $missed = 0 ]; then
    echo "All protections caught: each removal fails its own tests, and nothing removed passes."
else
    echo "Some removal was NOT caught, or the tests fail with nothing removed (see above)."
fi
exit $missed
