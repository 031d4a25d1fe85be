"""Shared fixtures. Qt runs headless in every test run (no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from tests.helpers import make_denoise_folder, make_shapes_folder

torch.set_num_threads(min(2, torch.get_num_threads()))


TRACEBACK = "Traceback (most recent call last)"


SLOW_TIMEOUT = 1800  # seconds: the slow proofs' per-test limit (pyproject.toml's timeout is for the rest)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A traceback on stderr fails the test, whatever else it asserted: no traceback may reach a user
    (the top-level guards, core/crash_report.py, turn one into a sentence), and a guard must never hide
    a bug from the suite. A test that provokes one on purpose says so: @pytest.mark.traceback_ok(reason)."""
    outcome = yield
    report = outcome.get_result()
    # this phase's own stderr (a teardown's report also carries the call's, already checked)
    stderr = "".join(text for name, text in report.sections if name == f"Captured stderr {report.when}")
    if report.passed and TRACEBACK in stderr and not item.get_closest_marker("traceback_ok"):
        report.outcome = "failed"
        report.longrepr = (
            f"A traceback reached stderr during {report.when} (mark the test traceback_ok(reason) if it "
            f"is meant to print one):\n{stderr[-4000:]}"
        )


#: The import names of the optional extras (pyproject.toml: cluster, hf, timm), as tests/without_extras.py
#: hides them.
EXTRA_MODULES = ("ray", "transformers", "huggingface_hub", "timm")
_skipped_for_extras: set[str] = set()


def _skipped_for_an_extra(report) -> bool:
    if not report.skipped:
        return False
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return "extra" in reason or any(f"'{name}'" in reason for name in EXTRA_MODULES)


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call") and _skipped_for_an_extra(report):
        _skipped_for_extras.add(report.nodeid)


def pytest_collectreport(report):
    if _skipped_for_an_extra(report):  # a module that skips as a whole (importorskip at its top)
        _skipped_for_extras.add(report.nodeid)


def pytest_sessionfinish(session):
    """With BATCHLENS_EXTRAS_SKIPPED=FILE, list the tests that skipped for a missing extra, one node id a
    line: .ci/run runs the base suite so, installs the extras, then runs exactly those (pytest @FILE)."""
    path = os.environ.get("BATCHLENS_EXTRAS_SKIPPED")
    if path:
        Path(path).write_text("".join(f"{nodeid}\n" for nodeid in sorted(_skipped_for_extras)))


@pytest.fixture(autouse=True)
def _own_data_folder(tmp_path_factory, monkeypatch):
    """Crash reports (core/crash_report.py) go into the app's data folder: each test gets its own."""
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path_factory.mktemp("batchlens-data")))


@pytest.fixture(autouse=True)
def _own_tuning_cache(tmp_path_factory, monkeypatch):
    """Runs remember their batch size in the user's cache folder (core/run/tuning_cache.py): each test
    gets an empty one of its own, so no test reads another's choice or writes into ~/.cache."""
    monkeypatch.setenv("BATCHLENS_CACHE_DIR", str(tmp_path_factory.mktemp("batchlens-cache")))


@pytest.fixture(autouse=True)
def _own_data_folder(tmp_path_factory, monkeypatch):
    """The app's data folder (stored sidecars, crash reports: core/data_dir.py) is a fresh one per
    test, never the developer's own."""
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path_factory.mktemp("batchlens-data")))


@pytest.fixture(autouse=True)
def _empty_hugging_face_cache(tmp_path_factory, monkeypatch):
    """The model list shows the Hugging Face models cached on this computer: each test sees an empty
    cache of its own (tests that need one fill it), so a developer's own models change no test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 12)
    return folder


@pytest.fixture
def denoise_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 6, size=120)
    return folder


@pytest.fixture
def fake_hub(monkeypatch, tmp_path: Path):
    """A Hugging Face hub on 127.0.0.1 (tests/fake_hub.py) and an empty cache at tmp_path/hf-cache.
    Its tests send Hugging Face models through it: without the hf extra they skip, saying so."""
    for name in ("huggingface_hub", "transformers"):
        pytest.importorskip(name, reason='needs the hf extra: pip install -e ".[hf]"')
    from tests.fake_hub import FakeHub

    hub = FakeHub()
    hub.use(monkeypatch, tmp_path / "hf-cache")
    yield hub
    hub.close()
