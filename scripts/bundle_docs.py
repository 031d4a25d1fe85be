"""Copy the user's pages of docs/ into resources/docs/, which ships inside the wheel and the PyInstaller
bundle (batchlens.resources), so Help > User guide shows them inside the app wherever it is installed.

    python scripts/bundle_docs.py

Run it after editing one of GUIDE_PAGES; tests/ui/test_user_guide.py fails while a copy differs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The pages a user reads (the developer pages stay in docs/ only).
GUIDE_PAGES = (
    "window.md",
    "models.md",
    "outputs.md",
    "after-the-run.md",
    "troubleshooting.md",
    "cli.md",
    "gpu.md",
    "performance.md",
    "clusters.md",
)


def main() -> None:
    target = ROOT / "resources" / "docs"
    target.mkdir(exist_ok=True)
    for name in GUIDE_PAGES:
        shutil.copyfile(ROOT / "docs" / name, target / name)
    print(f"Copied {len(GUIDE_PAGES)} pages into {target}")


if __name__ == "__main__":
    main()
