"""What the window remembers between sessions (QSettings): the run's choices and the geometry."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "BatchLens"
APPLICATION = "BatchLens"


class _Text:
    """A remembered string (None when unset or empty)."""

    def __init__(self, key: str):
        self.key = key

    def __get__(self, settings: Settings, owner=None) -> str | None:
        value = settings._qs.value(self.key)
        return str(value) if value not in (None, "") else None

    def __set__(self, settings: Settings, value: str | None) -> None:
        if value is None:
            settings._qs.remove(self.key)
        else:
            settings._qs.setValue(self.key, value)


class _Flag:
    """A remembered yes/no (stored as "true"/"false": ini files have no booleans)."""

    def __init__(self, key: str):
        self.key = key

    def __get__(self, settings: Settings, owner=None) -> bool:
        return str(settings._qs.value(self.key, "false")).lower() == "true"

    def __set__(self, settings: Settings, value: bool) -> None:
        settings._qs.setValue(self.key, "true" if value else "false")


class Settings:
    """Typed access to QSettings. Pass `path` to keep them in an ini file (tests, --self-test)."""

    model = _Text("run/model")
    input_dir = _Text("run/input")
    output_dir = _Text("run/output")
    device = _Text("run/device")
    cluster = _Text("run/cluster")  # the Ray cluster address, when the device is "Ray cluster"
    speed = _Text("run/speed")  # one of run_form.SPEEDS
    empty_cache = _Text("run/empty_cache")  # one of menus.CACHE_POLICIES (core/run/cache_policy.py)
    recursive = _Flag("run/recursive")
    cpu_fallback = _Flag("run/cpu_fallback")
    theme = _Text("view/theme")  # View > Theme: "light" or "dark"; unset: the system's (qt_app.THEMES)
    whole_gpu = _Flag("plot/whole_gpu")  # the memory plot's Whole GPU box: scaled to the whole card

    def __init__(self, path: Path | None = None):
        if path is None:
            self._qs = QSettings(ORGANIZATION, APPLICATION)
        else:
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)

    def state(self, key: str) -> QByteArray | None:
        """Window geometry or splitter state saved under `key`."""
        value = self._qs.value(f"window/{key}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_state(self, key: str, value: QByteArray) -> None:
        self._qs.setValue(f"window/{key}", value)

    def sync(self) -> None:
        self._qs.sync()
