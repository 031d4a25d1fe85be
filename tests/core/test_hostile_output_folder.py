"""The output folder under attack while a run writes into it (issue 24, defence 3: one guarded file
layer for outputs, core/files.py OutputFolder), and the run's own names in the way.

Every attack comes "mid-run" at a fixed point: right after the second image's event, through the real
runner's events, while `batchlens run` runs in this process. Each must end the run with exit 2 and one
sentence naming the file or folder, never report it finished, write nothing outside the output folder,
and leave whole lines in what remains of predictions.jsonl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchlens.cli import main as cli_main
from batchlens.core import files
from batchlens.core.errors import BatchLensError
from batchlens.core.files import RESERVED_NAMES, OutputFolder, output_rel
from batchlens.core.outputs.manifest import RUN_FILES
from batchlens.core.outputs.runlock import RunLock
from batchlens.core.run import runner as runner_module
from batchlens.core.run.events import ImageResult
from tests.core.hostile import assert_one_sentence
from tests.core.test_results_integrity import refusal, strict_lines, tree
from tests.helpers import make_denoise_folder, make_shapes_folder

IMAGES = 6


def run(capsys, *args) -> tuple[int, str, str]:
    """`batchlens run ARGS` in this process: (exit code, stdout, stderr). Never a traceback."""
    code = cli_main(["run", "--device", "cpu", "--no-progress", "--batch-size", "3", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def attack_after_second_image(monkeypatch, attack: Callable[[], None]) -> None:
    """Call attack() once the run's second image event has been handed out (mid-batch: batch 3)."""
    real = runner_module.Runner.events

    def events(self):
        seen = 0
        for event in real(self):
            yield event
            if isinstance(event, ImageResult):
                seen += 1
                if seen == 2:
                    attack()

    monkeypatch.setattr(runner_module.Runner, "events", events)


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, IMAGES, size=40)
    return folder


@pytest.fixture
def noisy(tmp_path: Path) -> Path:
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, IMAGES, size=32)
    return folder


def outside(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("the user's own file\n")
    return victim


# -- the attacks: (what it does to `out`, where the run's files are afterwards, the sentence's start) --


def delete_predictions(out: Path, tmp: Path) -> Path:
    (out / "predictions.jsonl").unlink()
    return out


def delete_folder(out: Path, tmp: Path) -> Path | None:
    shutil.rmtree(out)
    return None


def replace_folder(out: Path, tmp: Path) -> Path:
    out.rename(tmp / "moved")
    out.mkdir()
    (out / "theirs.txt").write_text("another folder now\n")
    return tmp / "moved"


def rename_folder(out: Path, tmp: Path) -> Path:
    out.rename(tmp / "renamed")
    return tmp / "renamed"


def predictions_to_link(out: Path, tmp: Path) -> Path:
    (out / "predictions.jsonl").unlink()
    (out / "predictions.jsonl").symlink_to(tmp / "elsewhere" / "precious.txt")
    return out


def predictions_to_folder(out: Path, tmp: Path) -> Path:
    (out / "predictions.jsonl").unlink()
    (out / "predictions.jsonl").mkdir()
    return out


def read_only(out: Path, tmp: Path) -> Path:
    out.chmod(0o555)
    return out


ATTACKS = {
    "delete predictions.jsonl": (delete_predictions, "{out}/predictions.jsonl was deleted during the run"),
    "delete the folder": (delete_folder, "The output folder {out} was deleted during the run"),
    "replace the folder": (replace_folder, "The output folder {out} was moved away or replaced"),
    "rename the folder away": (rename_folder, "The output folder {out} was moved away or replaced"),
    "predictions.jsonl becomes a link outside": (predictions_to_link, "{out}/predictions.jsonl was replaced"),
    "predictions.jsonl becomes a folder": (predictions_to_folder, "{out}/predictions.jsonl was replaced"),
    "make the folder read-only": (read_only, "The output folder {out} became read-only during the run"),
}


@pytest.mark.parametrize("model", ["demo-shapes", "demo-denoise"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_on_the_output_folder_mid_run_stops_it_with_one_sentence(
    attack, model, shapes, noisy, tmp_path, capsys, monkeypatch
):
    if attack == "make the folder read-only" and os.geteuid() == 0:
        pytest.skip(
            "root writes into read-only folders: the attack does nothing (the folder becoming a "
            "file or a link is tested beside it)"
        )
    act, sentence = ATTACKS[attack]
    images = shapes if model == "demo-shapes" else noisy
    out = tmp_path / "out"
    victim = outside(tmp_path)
    where: list[Path | None] = []
    attack_after_second_image(monkeypatch, lambda: where.append(act(out, tmp_path)))
    before_inputs = tree(images)

    try:
        code, stdout, err = run(capsys, "--model", model, "--input", images, "--output", out)
    finally:
        if out.exists():
            out.chmod(0o755)

    assert where, "the attack never ran"
    assert code == 2, stdout + err
    message = refusal(err).removeprefix("batchlens: ")
    assert message.startswith(sentence.format(out=out)), message
    assert_one_sentence(message, out)
    assert "Finished" not in stdout
    # Nothing outside the output folder: the inputs and the user's file as they were.
    assert tree(images) == before_inputs
    assert victim.read_text() == "the user's own file\n"
    if attack == "replace the folder":  # the new folder is someone else's: not a byte of the run in it
        assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    kept = where[0]
    predictions = kept / "predictions.jsonl" if kept is not None else None
    if predictions is not None and predictions.is_file() and not predictions.is_symlink():
        lines = strict_lines(kept)  # whole lines only, and at most the images before the stop
        assert 1 <= len(lines) <= 3 and all(line["status"] == "ok" for line in lines)
    for folder in {kept, out} - {None}:
        assert not (folder / "summary.json").exists(), "a stopped run wrote a summary"
        if model == "demo-denoise" and folder.is_dir():  # no output picture past the stop
            assert len([p for p in folder.glob("*.png")]) <= 3


def test_a_run_left_alone_passes_every_check(shapes, tmp_path, capsys):
    """The control: the same run with no attack finishes (exit 0) and says so."""
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)
    assert code == 0 and "Finished" in stdout
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == IMAGES


@pytest.mark.skipif(not files.DIR_FD, reason="the folder is held by descriptor only where openat exists")
def test_the_folder_is_held_by_descriptor_so_a_write_after_a_swap_lands_in_the_folder_opened(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputFolder.open(out) as folder:
        out.rename(tmp_path / "moved")
        out.mkdir()
        folder.write_text("deep/a.txt", "mine\n")
        assert (tmp_path / "moved" / "deep" / "a.txt").read_text() == "mine\n"
        assert list(out.iterdir()) == []
        with pytest.raises(BatchLensError, match="was moved away or replaced"):
            folder.check_still_ours()


def test_a_link_in_the_way_is_replaced_never_written_through(tmp_path):
    victim = outside(tmp_path)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "summary.json").symlink_to(victim)
    (out / "linked").symlink_to(victim.parent, target_is_directory=True)
    with OutputFolder.open(out) as folder:
        folder.write_text("summary.json", "{}\n")
        assert not (out / "summary.json").is_symlink() and (out / "summary.json").read_text() == "{}\n"
        if files.DIR_FD:  # a folder link on the way is not followed either
            with pytest.raises(OSError):
                folder.write_text("linked/x.png", "no")
    assert victim.read_text() == "the user's own file\n"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]


# -- --overwrite deletes only what run.json lists ----------------------------------------------------


def test_overwrite_in_a_folder_without_run_json_is_refused_and_the_users_files_stay(shapes, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "summary.json").write_text('{"my": "own summary"}\n')
    (out / "predictions.csv").write_text("image,label\nmine.png,cat\n")
    before = tree(out)

    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, "--overwrite")

    assert code == 2
    assert refusal(err) == (
        f"batchlens: {out} holds no run.json, so it is not a BatchLens run and --overwrite deletes nothing "
        "in it: choose another output folder, or an empty one."
    )
    assert tree(out) == before


def test_a_plain_run_never_replaces_a_users_file_of_one_of_its_names(shapes, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "predictions.csv").write_text("image,label\nmine.png,cat\n")
    before = tree(out)

    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)

    assert code == 2
    assert refusal(err) == (
        f"batchlens: {out / 'predictions.csv'} was not written by a BatchLens run, and this run would "
        "replace it: move it out of the output folder or choose another output folder."
    )
    assert tree(out) == before


def test_overwrite_removes_only_the_files_run_json_lists(noisy, shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out)[0] == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["files"] == [
        "predictions.jsonl",
        "summary.json",
        "run.json",
        "predictions.rejected.jsonl",
    ]
    (out / "my notes.txt").write_text("mine")
    (out / "reviews.jsonl").write_text('{"image": "a.png", "label": "cat"}\n')  # a person's, not listed
    # A forged list names a user's file: only the run's own names are ever taken from it.
    manifest["files"].append("my notes.txt")
    (out / "run.json").write_text(json.dumps(manifest))

    code, _, err = run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out, "--overwrite")

    assert code == 0, err
    assert (out / "my notes.txt").read_text() == "mine"
    assert (out / "reviews.jsonl").read_text() == '{"image": "a.png", "label": "cat"}\n'
    assert len(strict_lines(out)) == IMAGES
    # A classification run would write predictions.csv: where a user's file has that name, refused.
    (out / "predictions.csv").write_text("mine\n")
    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, "--overwrite")
    assert code == 2 and "predictions.csv was not written by a BatchLens run" in err
    assert (out / "predictions.csv").read_text() == "mine\n"


# -- the run's own names: inputs named like them get other output names ------------------------------


def test_every_run_file_is_a_reserved_name():
    assert set(RUN_FILES) <= set(RESERVED_NAMES)


@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_an_input_folder_named_like_a_run_file_gets_another_output_name(name):
    outputs = {output_rel(rel) for rel in (f"{name}/a.png", f"{name}~/a.png", f"{name}~~/a.png", "a.png")}
    assert len(outputs) == 4  # one to one
    assert output_rel(f"{name}/a.png") == f"{name}~/a.png"
    assert output_rel(f"{name.upper()}/a.png") == f"{name.upper()}~/a.png"  # as Windows and macOS see it
    assert output_rel(f"x/{name}/a.png") == f"x/{name}/a.png"  # only the top of the folder is the run's
    assert output_rel(f"{name}.png") == f"{name}.png"  # a file's output always ends in .png


def test_inputs_named_like_the_run_files_finish_and_resume(tmp_path, capsys):
    images = tmp_path / "in"
    names = [n for n in RESERVED_NAMES if not n.startswith(".")]  # hidden folders are not scanned
    for folder in (*names, "summary.json~"):
        make_denoise_folder(images / folder, 1, size=24)
    make_denoise_folder(images, 1, size=24)
    out = tmp_path / "out"
    args = ("--model", "demo-denoise", "--input", images, "--output", out, "--recursive")

    code, stdout, err = run(capsys, *args)

    assert code == 0, err
    lines = strict_lines(out)
    written = [line["output"] for line in lines]
    assert len(lines) == len(names) + 2 and len(set(written)) == len(written)
    assert all((out / name).is_file() for name in written)
    assert "summary.json~~/noisy_0000.png" in written and "summary.json~/noisy_0000.png" in written
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == len(lines)
    code, stdout, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert len(strict_lines(out)) == len(lines)
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 0  # nothing left to do


# -- lock and state files of the wrong type: one sentence each --------------------------------------


def lock_is_folder(out: Path, tmp: Path) -> None:
    (out / ".batchlens.lock").mkdir()


def lock_is_link(out: Path, tmp: Path) -> None:
    (out / ".batchlens.lock").symlink_to(tmp / "elsewhere" / "precious.txt")


def lock_holds(pid) -> Callable[[Path, Path], None]:
    def write(out: Path, tmp: Path) -> None:
        text = json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()})
        (out / ".batchlens.lock").write_text(text)

    return write


def lock_garbage(out: Path, tmp: Path) -> None:
    (out / ".batchlens.lock").write_bytes(b"\x00\xffnot a lock")


def state_is_folder(name: str) -> Callable[[Path, Path], None]:
    return lambda out, tmp: (out / name).mkdir()


def state_is_link(name: str) -> Callable[[Path, Path], None]:
    return lambda out, tmp: (out / name).symlink_to(tmp / "elsewhere" / "precious.txt")


WRONG = {
    "lock is a folder": (lock_is_folder, "is a folder, not a file BatchLens wrote"),
    "lock is a link": (lock_is_link, "is a link, not a file BatchLens wrote"),
    "lock holds pid -1": (lock_holds(-1), "is in use by another BatchLens run (lock "),
    "lock holds pid 'x'": (lock_holds("x"), "is in use by another BatchLens run (lock "),
    "lock is garbage": (lock_garbage, "is in use by another BatchLens run (lock "),
    **{f"{name} is a folder": (state_is_folder(name), "is a folder, not a file") for name in RUN_FILES},
    **{f"{name} is a link": (state_is_link(name), "is a link, not a file") for name in RUN_FILES[:3]},
}


def wrong_cases():
    """Every wrong thing in a plain run; the lock, predictions.jsonl and run.json also with --resume and
    --overwrite (the other names take the same check, check_own_names, in every mode)."""
    for wrong in WRONG:
        modes = ["plain"]
        if wrong.startswith(("lock", "predictions.jsonl", "run.json")):
            modes += ["--resume", "--overwrite"]
        for mode in modes:
            yield pytest.param(wrong, [] if mode == "plain" else [mode], id=f"{wrong}-{mode}")


@pytest.mark.parametrize(("wrong", "mode"), list(wrong_cases()))
def test_lock_and_state_files_of_the_wrong_type_are_one_sentence(wrong, mode, shapes, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = outside(tmp_path)
    make, words = WRONG[wrong]
    make(out, tmp_path)
    before = tree(out)

    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, *mode)

    assert code == 2
    message = refusal(err).removeprefix("batchlens: ")
    assert words in message, message
    assert_one_sentence(message, out)
    assert tree(out) == before and victim.read_text() == "the user's own file\n"


def test_an_old_lock_without_a_usable_pid_is_taken_over(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    lock_holds(-1)(out, tmp_path)
    os.utime(out / ".batchlens.lock", (time.time() - 60, time.time() - 60))  # a writer long gone
    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)
    assert code == 0, err
    assert not (out / ".batchlens.lock").exists()


def test_release_leaves_a_lock_replaced_by_a_folder_alone(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    (tmp_path / ".batchlens.lock").unlink()
    (tmp_path / ".batchlens.lock").mkdir()
    lock.release()  # no traceback, and the folder stays
    assert (tmp_path / ".batchlens.lock").is_dir()


# -- issue 26: summary.json is written atomically --------------------------------------------------


def test_an_interrupted_summary_write_leaves_the_old_summary_whole(shapes, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)[0] == 0
    old = (out / "summary.json").read_bytes()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # the disk fills as the new summary is put in place
        if os.fsdecode(dst).endswith("summary.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    code, _, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, "--resume")

    assert code == 2 and "is full" in err
    assert (out / "summary.json").read_bytes() == old  # in place, it would be half the new one
    assert not [p for p in out.iterdir() if files.TEMP_NAME.fullmatch(p.name)]


def test_a_link_folder_or_file_in_an_outputs_way_fails_that_image_alone(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "in"
    for rel in ("sub/a.png", "b.png", "c/x.png", "fine.png"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), (90, 40, 200)).save(images / rel)
    victim = outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(victim.parent, target_is_directory=True)  # a link on the way
    (out / "b.png").mkdir()  # a folder in the output's place
    (out / "c").write_text("a file where the mirror folder goes\n")
    args = ("--model", "demo-denoise", "--input", images, "--output", out, "--recursive")

    code, _, err = run(capsys, *args)

    assert code == 0, err
    lines = {line["image"]: line for line in strict_lines(out)}
    assert lines["fine.png"]["status"] == "ok"
    for rel in ("sub/a.png", "b.png", "c/x.png"):
        assert lines[rel]["status"] == "error"
        assert "stands in its way in the output folder" in lines[rel]["error"], lines[rel]
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]
    assert (out / "c").read_text() == "a file where the mirror folder goes\n"


@pytest.mark.parametrize(
    "attack", ["delete predictions.jsonl", "delete the folder", "rename the folder away"]
)
def test_where_folders_cannot_be_held_by_descriptor_the_checks_still_stop_the_run(
    attack, shapes, tmp_path, capsys, monkeypatch
):
    """Windows (no dir_fd): OutputFolder works on paths; the checks after each batch still hold."""
    monkeypatch.setattr(files, "DIR_FD", False)
    act, _ = ATTACKS[attack]
    out = tmp_path / "out"
    attack_after_second_image(monkeypatch, lambda: act(out, tmp_path))

    code, stdout, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)

    assert code == 2 and "Finished" not in stdout
    message = refusal(err).removeprefix("batchlens: ")
    assert_one_sentence(message, out)
    assert "during the run, so the run stopped" in message
    assert not (out / "summary.json").exists()


def test_a_folder_made_read_only_is_told_as_such(tmp_path, monkeypatch):
    """The read-only check itself, also where the tests run as root (which writes anyway)."""
    out = tmp_path / "out"
    out.mkdir()
    with OutputFolder.open(out) as folder:
        assert folder.problem() is None
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode, **kw: mode != os.W_OK and real_access(path, mode)
        )
        with pytest.raises(BatchLensError) as stopped:
            folder.check_still_ours()
    message = str(stopped.value)
    assert message.startswith(f"The output folder {out} became read-only during the run")
    assert_one_sentence(message, out)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
@pytest.mark.parametrize("held", [True, False], ids=["by descriptor", "by path"])
def test_a_named_pipe_in_predictions_jsonls_place_is_one_sentence_not_a_hang(held, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "DIR_FD", held and files.DIR_FD)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "predictions.jsonl")
    with OutputFolder.open(out) as folder:
        for call in (folder.read_bytes, folder.open_append):
            with pytest.raises(BatchLensError, match="predictions.jsonl is not a plain file"):
                call("predictions.jsonl")
