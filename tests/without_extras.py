"""A pytest plugin that hides the optional extras, as on a machine with only `pip install -e ".[test]"`:

    python -m pytest -p tests.without_extras

`import ray` (and transformers, huggingface_hub, timm) then fails with ImportError, as where the package
is not installed, so every test that needs one must skip with its reason (pytest.importorskip, or the
`extras` marker). .ci/run proves the same in a fresh virtual environment; this checks it in seconds
in a development one, without uninstalling anything.
"""

from __future__ import annotations

import sys

#: the import names of the extras (pyproject.toml: cluster, hf, timm; huggingface_hub comes with hf),
#: as tests/conftest.py's EXTRA_MODULES names them
EXTRAS = ("ray", "transformers", "huggingface_hub", "timm")

for name in EXTRAS:
    loaded = [module for module in sys.modules if module == name or module.startswith(name + ".")]
    if loaded:  # imported before this plugin (by another plugin): hiding it now would be half a lie
        raise RuntimeError(f"{name} was imported before tests.without_extras could hide it")
    sys.modules[name] = None  # what `import NAME` sees where NAME is not installed: ImportError
