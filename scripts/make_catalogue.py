"""Write app/batchlens/core/models/catalogue_data.py from the installed torchvision's registry.

    python scripts/make_catalogue.py

Run it after upgrading torchvision (tests/core/test_catalogue_index.py fails until then): the window's
model list and `batchlens models` read that file so that they need no torch import.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "app"))

from batchlens.core.models.catalogue_index import write_data_module  # noqa: E402

if __name__ == "__main__":
    target = HERE / "app" / "batchlens" / "core" / "models" / "catalogue_data.py"
    write_data_module(target)
    print(f"wrote {target}")
