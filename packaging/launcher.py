"""Entry point of the PyInstaller bundle: the same `batchlens` command as a pip install."""

import multiprocessing
import sys

from batchlens.cli import main

if __name__ == "__main__":
    # A frozen program must call this before anything else can start a child process (Windows, macOS).
    multiprocessing.freeze_support()
    sys.exit(main())
