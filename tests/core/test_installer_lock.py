"""The installers' lock (packaging/requirements-installer.txt) agrees with pyproject.toml, and
packaging/check_lock.py, which CI runs, finds each way they can drift apart (docs/packaging.md)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "packaging" / "requirements-installer.txt"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "packaging" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_lock = _load_checker()


@pytest.fixture
def copies(tmp_path):
    """Copies of the real pyproject.toml and lock, to change one thing in."""
    pyproject, lock = tmp_path / "pyproject.toml", tmp_path / "requirements-installer.txt"
    pyproject.write_text(PYPROJECT.read_text("utf-8"), "utf-8")
    lock.write_text(LOCK.read_text("utf-8"), "utf-8")
    return pyproject, lock


def _repin(lock: Path, name: str, version: str) -> None:
    text, count = re.subn(rf"(?m)^{re.escape(name)}==\S+", f"{name}=={version}", lock.read_text("utf-8"))
    assert count == 1, f"{name} is not pinned once in the lock"
    lock.write_text(text, "utf-8")


def test_the_lock_agrees_with_pyproject_as_ci_runs_it():
    done = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "check_lock.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "agrees with pyproject.toml" in done.stdout


def test_the_lock_pins_what_the_installers_carry():
    pins = check_lock.read_lock(LOCK)
    # the libraries whose absence or drift broke a build: the HF folder needs kernels' data (issue 25)
    for name in (
        "torch",
        "torchvision",
        "transformers",
        "timm",
        "kernels",
        "pyinstaller",
        "pyside6-essentials",
    ):
        assert name in pins, name
    assert pins["torch"][0] == "2.14.1" and pins["torchvision"][0] == "0.29.1"
    assert all(hashes > 0 for _, hashes in pins.values())  # pip --require-hashes accepts the file


def test_a_pin_pyproject_does_not_allow_is_found(copies):
    pyproject, lock = copies
    _repin(lock, "transformers", "4.57.0")  # pyproject: transformers>=5.0,<6
    problems = check_lock.check(pyproject, lock)
    assert len(problems) == 1 and "transformers==4.57.0" in problems[0] and "lock.sh" in problems[0]


def test_torch_at_another_version_is_found(copies):
    pyproject, lock = copies
    _repin(lock, "torch", "2.14.0")
    problems = check_lock.check(pyproject, lock)
    assert len(problems) == 1 and "torch==2.14.0" in problems[0]


def test_a_new_requirement_without_a_pin_is_found(copies):
    pyproject, lock = copies
    text = pyproject.read_text("utf-8").replace(
        'timm = ["timm>=1.0.20"]', 'timm = ["timm>=1.0.20", "einops>=0.8"]'
    )
    pyproject.write_text(text, "utf-8")
    problems = check_lock.check(pyproject, lock)
    assert len(problems) == 1 and "no pin for einops" in problems[0]


def test_a_raised_floor_in_pyproject_is_found(copies):
    pyproject, lock = copies
    text = pyproject.read_text("utf-8").replace('"pillow>=10.3"', '"pillow>=99"')
    assert text != pyproject.read_text("utf-8")
    pyproject.write_text(text, "utf-8")
    problems = check_lock.check(pyproject, lock)
    assert len(problems) == 1 and "pillow>=99" in problems[0]


def test_a_pin_without_hashes_is_found(copies):
    pyproject, lock = copies
    lock.write_text(lock.read_text("utf-8") + "extra-thing==1.0\n", "utf-8")
    problems = check_lock.check(pyproject, lock)
    assert len(problems) == 1 and "no --hash for extra-thing" in problems[0]


def test_a_missing_lock_is_one_sentence(tmp_path):
    with pytest.raises(check_lock.LockFileError, match="cannot be read.*lock.sh"):
        check_lock.check(PYPROJECT, tmp_path / "requirements-installer.txt")


def test_installed_versions_are_compared_with_the_pins(tmp_path):
    lock = tmp_path / "requirements-installer.txt"
    pytest_version = importlib.metadata.version("pytest")
    lock.write_text(
        f"pytest=={pytest_version} \\\n    --hash=sha256:00\n"
        "pluggy==0.0.1 \\\n    --hash=sha256:00\n"
        "no-such-package-here==1.0 \\\n    --hash=sha256:00\n",
        "utf-8",
    )
    problems = check_lock.check_installed(lock)
    assert len(problems) == 2
    assert "no-such-package-here==1.0" in problems[0] and "not installed" in problems[0]  # sorted by name
    assert "pluggy is" in problems[1] and "pins 0.0.1" in problems[1]
