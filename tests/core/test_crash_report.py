"""The top-level guard (core/crash_report.py): an exception nobody expected becomes one sentence naming
a report file in the app's data folder, and exit 70; and the suite fails on any traceback on stderr
(tests/conftest.py), so the guard never hides a bug from the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import batchlens.cli as cli
from batchlens.core import crash_report
from batchlens.core.crash_report import EXIT_CRASH, install_excepthook, write_crash_report
from batchlens.core.data_dir import user_data_dir as data_dir
from tests.helpers import assert_no_traceback

ROOT = Path(__file__).resolve().parents[2]


def _boom(args):
    raise ZeroDivisionError("the bug under test")


def _report_named_in(err: str) -> Path:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "did not expect" in lines[0] and "Traceback" not in err, err
    path = Path(lines[0].split("the details are in ", 1)[1].split(" (please", 1)[0])
    assert path.is_file()
    return path


def test_an_unexpected_exception_is_one_sentence_a_report_and_exit_70(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli, "models_command", _boom)
    assert cli.main(["models", "resnet"]) == EXIT_CRASH
    report = _report_named_in(capsys.readouterr().err)
    assert report.parent == tmp_path / "data" / "crash-reports"
    text = report.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError: the bug under test" in text
    assert "in _boom" in text  # the real traceback, down to the frame that raised
    assert "Command line: batchlens models resnet" in text
    for name in ("batchlens:", "python:", "platform:", "torch:", "torchvision:", "PySide6:"):
        assert f"\n{name} " in text, name


def test_a_refusal_is_still_exit_2_and_no_report(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    assert (
        cli.main(["run", "--model", "demo-shapes", "--input", str(tmp_path / "none"), "--output", "o"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_the_data_folder_follows_the_platform_and_the_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv("BATCHLENS_DATA_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert data_dir() == tmp_path / "xdg" / "BatchLens" / "BatchLens"
        monkeypatch.delenv("XDG_DATA_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert data_dir() == tmp_path / "home" / ".local" / "share" / "BatchLens" / "BatchLens"


def test_a_data_folder_that_cannot_be_written_falls_back_to_the_temporary_folder(monkeypatch, tmp_path):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("in the way")  # (a folder without write permission does not stop root)
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(not_a_folder))
    monkeypatch.setattr(crash_report.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = write_crash_report(ValueError("x"), ["batchlens"])
    assert path.parent == tmp_path / "tmp" / "batchlens-crash-reports" and "ValueError: x" in path.read_text()


def test_the_window_hook_reports_and_ends_the_event_loop(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    ended = []
    previous = install_excepthook(lambda: ended.append(True))
    try:
        try:
            raise KeyError("slot")
        except KeyError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        sys.excepthook = previous
    assert ended == [True]
    assert "KeyError: 'slot'" in _report_named_in(capsys.readouterr().err).read_text()


def test_the_real_command_line_prints_no_traceback_when_it_crashes(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import batchlens.cli as cli
        def boom(args):
            raise RuntimeError("deliberate")
        cli.models_command = boom
        sys.argv = ["batchlens", "models"]
        raise SystemExit(cli.main())
        """
    )
    env = {**os.environ, "BATCHLENS_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert_no_traceback(result)
    assert result.returncode == EXIT_CRASH
    assert "RuntimeError: deliberate" in _report_named_in(result.stderr).read_text()


def test_the_suite_fails_a_test_that_prints_a_traceback(tmp_path):
    """tests/conftest.py's hook, run on a two-test file: the one that prints a traceback fails, the one
    marked traceback_ok passes."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'traceback_ok(reason): on purpose')\n"
    )
    (tmp_path / "test_printer.py").write_text(
        textwrap.dedent(
            """
            import sys, traceback
            import pytest

            def _print():
                try:
                    1 / 0
                except ZeroDivisionError:
                    traceback.print_exc(file=sys.stderr)

            def test_prints():
                _print()

            @pytest.mark.traceback_ok("the test shows one on purpose")
            def test_prints_on_purpose():
                _print()

            def test_quiet():
                pass
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "app")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert "1 failed, 2 passed" in result.stdout, result.stdout + result.stderr
    assert "test_printer.py::test_prints " in result.stdout and "A traceback reached stderr" in result.stdout
