"""Help > User guide: the bundled pages (resources/docs/, copied from docs/ by scripts/bundle_docs.py,
shipped in the wheel and the PyInstaller bundle) shown inside the app in a QTextBrowser, which reads
Markdown itself. A link to another bundled page opens it here; a web address opens in the browser."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox, QTextBrowser, QVBoxLayout, QWidget

from batchlens.core.resources import resource_path

FIRST_PAGE = "window.md"
#: A picture in a page: the screenshots stay in the source's docs/, so the guide says what each shows.
PICTURE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")


def without_pictures(markdown: str) -> str:
    return PICTURE.sub(lambda m: f"*(picture: {m.group(1)})*" if m.group(1).strip() else "", markdown)


def guide_page(name: str) -> Path:
    return resource_path("docs", name)


class UserGuide(QDialog):
    """The guide's window: one page at a time, its links followed inside it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("BatchLens user guide")
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)  # links are followed by show_link: pages here, the web outside
        self.browser.anchorClicked.connect(self.show_link)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(900, 700)
        self.page = ""

    def show_page(self, name: str) -> bool:
        path = guide_page(name)
        if not path.is_file():
            return False
        self.browser.setMarkdown(without_pictures(path.read_text(encoding="utf-8")))
        self.browser.document().setBaseUrl(QUrl.fromLocalFile(str(path)))
        self.page = name
        return True

    def show_link(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)
            return
        name = Path(url.path()).name
        if name.endswith(".md") and name != self.page and not self.show_page(name):
            self.browser.setMarkdown(
                f"**{name}** is a page for BatchLens's developers, in the docs folder of its source; it "
                f"is not part of this guide.\n\n[Back to the guide]({FIRST_PAGE})"
            )
            self.page = name
            return
        if url.fragment():
            self.browser.scrollToAnchor(url.fragment())


def open_user_guide(parent: QWidget) -> UserGuide | None:
    """Help > User guide: the guide inside the app; a sentence if the bundled pages are missing."""
    guide = getattr(parent, "_user_guide", None) or UserGuide(parent)
    if not guide.show_page(FIRST_PAGE):
        QMessageBox.information(
            parent,
            "User guide",
            f"The user guide's pages are missing from this installation ({guide_page(FIRST_PAGE)} is not "
            "there): reinstall BatchLens to get them back.",
        )
        return None
    parent._user_guide = guide
    guide.show()
    guide.raise_()
    return guide
