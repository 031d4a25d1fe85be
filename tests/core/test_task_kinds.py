"""What a task is (core/tasks/kinds.py) lives with its adapter, and reads without torch: the window
asks it before PyTorch loads (the sidecar dialog's choices) and never branches on a task's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from batchlens.core.models.info import TASKS
from batchlens.core.tasks import ADAPTERS, KINDS, kind_of, make_adapter

APP = str(Path(__file__).resolve().parents[2] / "app")


def test_every_adapter_carries_its_own_kind():
    assert set(KINDS) == set(ADAPTERS) == set(TASKS)
    for task, adapter in ADAPTERS.items():
        assert adapter.kind is KINDS[task]
        assert make_adapter(task, transform=None).kind.task == task
    assert [task for task, kind in KINDS.items() if kind.many_classes] == ["detection", "segmentation"]
    assert [task for task, kind in KINDS.items() if kind.scored_boxes] == ["detection"]
    assert kind_of("segmentation").truth == "the folder of true masks"
    assert kind_of(None).truth == kind_of("classification").truth == "the CSV of image,label"
    assert kind_of("detection").label_words == ("Class", "Classes")
    assert kind_of("classification").label_words == ("Label", "Labels")
    assert kind_of(None).label_words == kind_of("no such task").label_words == ("Label", "Labels")


def test_the_kinds_import_without_torch():
    code = (
        "import sys; from batchlens.core.tasks import KINDS, kind_of; "
        "print(kind_of('segmentation').title, '|', 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([APP, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Segmentation: a class for every pixel | False"
