"""BatchLens: run a PyTorch image model over a folder and watch device memory while it works."""

__version__ = "0.1.0"
