"""What the window remembers between sessions (QSettings): model, folders, device, geometry."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "BatchLens"
APPLICATION = "BatchLens"


class Settings:
    """Typed access to QSettings. Pass `path` to keep them in an ini file (tests, --self-test)."""

    def __init__(self, path: Path | None = None):
        if path is None:
            self._qs = QSettings(ORGANIZATION, APPLICATION)
        else:
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)

    def _str(self, key: str) -> str | None:
        value = self._qs.value(key)
        return str(value) if value not in (None, "") else None

    def _set(self, key: str, value) -> None:
        if value is None:
            self._qs.remove(key)
        else:
            self._qs.setValue(key, value)

    @property
    def model(self) -> str | None:
        return self._str("run/model")

    @model.setter
    def model(self, value: str | None) -> None:
        self._set("run/model", value)

    @property
    def input_dir(self) -> str | None:
        return self._str("run/input")

    @input_dir.setter
    def input_dir(self, value: str | None) -> None:
        self._set("run/input", value)

    @property
    def output_dir(self) -> str | None:
        return self._str("run/output")

    @output_dir.setter
    def output_dir(self, value: str | None) -> None:
        self._set("run/output", value)

    @property
    def device(self) -> str | None:
        return self._str("run/device")

    @device.setter
    def device(self, value: str | None) -> None:
        self._set("run/device", value)

    @property
    def recursive(self) -> bool:
        return str(self._qs.value("run/recursive", "false")).lower() == "true"

    @recursive.setter
    def recursive(self, value: bool) -> None:
        self._qs.setValue("run/recursive", "true" if value else "false")

    def state(self, key: str) -> QByteArray | None:
        """Window geometry or splitter state saved under `key`."""
        value = self._qs.value(f"window/{key}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_state(self, key: str, value: QByteArray) -> None:
        self._qs.setValue(f"window/{key}", value)

    def sync(self) -> None:
        self._qs.sync()
