"""Find files shipped in batchlens.resources (a checkout, an installed wheel or a PyInstaller bundle)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """The path of a bundled resource, e.g. resource_path("models", "demo-shapes.json")."""
    base = resources.files("batchlens.resources")
    return Path(str(base.joinpath(*parts)))


def sample_folder(model_id: str) -> Path:
    """The bundled sample images for a demo model (resources/samples/<model id>)."""
    return resource_path("samples", model_id)
