"""The window's menu bar: File, View, Settings and Help, and what their entries do."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QFileDialog

from batchlens.ui.about import copy_system_info, show_about
from batchlens.ui.qt_app import THEMES, set_theme
from batchlens.ui.user_guide import open_user_guide

#: Settings > GPU memory cache: when a run hands PyTorch's cached GPU memory back to the driver
#: (--empty-cache; core/run/cache_policy.py and docs/gpu.md say what each costs).
CACHE_POLICIES = {
    "never": "&Keep it for reuse (fastest)",
    "image": "Hand it back after every &image",
    "reserved:0.5": "Hand it back when over &half the GPU (leaves room for other programs)",
}


class Menus:
    """File (Open model file…, Open results…, Quit), View (run screen or results, which panels show),
    Help (user guide, Copy system info, About). Needs the window's `form`, `model_picker`, `pages`,
    `preview_box`, `memory_box` and `problems`."""

    def __init__(self, window):
        self.window = window
        bar = window.menuBar()

        file_menu = bar.addMenu("&File")
        self.open_model_action = file_menu.addAction("Open &model file…", self.open_model_file)
        self.open_results_action = file_menu.addAction("Open &results…", self.ask_results_folder)
        self.open_results_action.setShortcut(QKeySequence.StandardKey.Open)
        self.export_action = file_menu.addAction("&Export results…", self.export_results)
        self.open_snapshot_action = file_menu.addAction("Open memory &snapshot…", self.ask_snapshot_file)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit", window.close)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))

        view_menu = bar.addMenu("&View")
        self.run_screen_action = view_menu.addAction("&Run screen", window.pages.show_run_screen)
        self.results_action = view_menu.addAction("R&esults in the output folder", self.show_output_results)
        view_menu.addSeparator()
        self.panel_actions: dict[str, QAction] = {}
        for name, title in (("previews", "&Previews"), ("memory", "&Memory plot"), ("problems", "Pro&blems")):
            action = QAction(title, window, checkable=True, checked=True)
            action.toggled.connect(lambda on, name=name: self.show_panel(name, on))
            view_menu.addAction(action)
            self.panel_actions[name] = action
        view_menu.addSeparator()
        self._theme_menu(view_menu.addMenu("&Theme"))

        settings_menu = bar.addMenu("&Settings")
        cache_menu = settings_menu.addMenu("GPU memory &cache")
        cache_menu.setToolTipsVisible(True)
        remembered = window.settings.empty_cache
        self.cache_actions = QActionGroup(window)
        for policy, title in CACHE_POLICIES.items():
            action = QAction(title, window, checkable=True, checked=policy == (remembered or "never"))
            action.setData(policy)
            action.setToolTip(
                "Memory stays flat either way: handing the cache back only makes room for other "
                "programs, and the next images pay to allocate it again. The Clear cache button "
                "under the plot does it once, now."
            )
            self.cache_actions.addAction(action)
            cache_menu.addAction(action)
        if self.cache_actions.checkedAction() is None:  # a value from another version: the default
            self.cache_actions.actions()[0].setChecked(True)
        self.cache_actions.triggered.connect(self._remember_cache_policy)

        help_menu = bar.addMenu("&Help")
        self.guide_action = help_menu.addAction("&User guide", lambda: open_user_guide(window))
        self.guide_action.setShortcut(QKeySequence.StandardKey.HelpContents)
        self.copy_info_action = help_menu.addAction("&Copy system info", self.copy_system_info)
        help_menu.addSeparator()
        self.about_action = help_menu.addAction("&About BatchLens", lambda: show_about(window))

    def _theme_menu(self, menu) -> None:
        """View > Theme: System, Light, Dark; remembered, and applied at once (also at start)."""
        chosen = self.window.settings.theme if self.window.settings.theme in THEMES else "system"
        self.theme_actions = QActionGroup(self.window)
        for name in THEMES:
            action = QAction(f"&{name.title()}", self.window, checkable=True, checked=name == chosen)
            action.setData(name)
            self.theme_actions.addAction(action)
            menu.addAction(action)
        self.theme_actions.triggered.connect(self._choose_theme)
        if chosen != "system":
            set_theme(chosen)

    def _choose_theme(self, action: QAction) -> None:
        name = action.data()
        self.window.settings.theme = None if name == "system" else name
        set_theme(name)

    def _remember_cache_policy(self, action: QAction) -> None:
        self.window.settings.empty_cache = action.data()

    def empty_cache(self) -> str:
        """The GPU cache policy chosen in Settings > GPU memory cache (RunConfig.empty_cache)."""
        return self.cache_actions.checkedAction().data()

    def open_model_file(self) -> None:
        """File > Open model file…: the model picker's own chooser."""
        self.window.pages.show_run_screen()
        picker = self.window.model_picker
        info = picker.file_chooser(self.window)
        if info is not None:
            picker.add_model(info, select=True)

    def ask_results_folder(self) -> None:
        start = self.window.form.output_text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Open the output folder of a run", start)
        if folder:
            self.window.pages.show_results(Path(folder))

    def export_results(self) -> None:
        """File › Export…: the results shown (or the output folder's) as CSV, COCO or YOLO."""
        from batchlens.ui.results.after_run_dialogs import export

        if not self.window.pages.showing_results():
            self.show_output_results()
        if self.window.pages.showing_results():
            export(self.window.pages.results_browser)

    def ask_snapshot_file(self) -> None:
        start = self.window.form.output_text() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Open a memory snapshot", start, "Memory snapshot (*.pickle);;All files (*)"
        )
        if path:
            self.window.open_snapshot(Path(path))

    def show_output_results(self) -> None:
        output = Path(self.window.form.output_text()).expanduser()
        if output.is_dir():
            self.window.pages.show_results(output)
        else:
            self.window.statusBar().showMessage("No results there yet: run first, or File > Open results…")

    def show_panel(self, name: str, visible: bool) -> None:
        w = self.window
        if name == "memory":
            w.memory_box.setVisible(visible)
        else:  # a tab beside the memory plot (ui/run_screen.py); the tabs go when neither is shown
            w.panel_tabs.setTabVisible(
                w.panel_tabs.indexOf(w.preview_box if name == "previews" else w.problems), visible
            )
            w.panel_tabs.setVisible(any(w.panel_tabs.isTabVisible(i) for i in range(w.panel_tabs.count())))

    def copy_system_info(self) -> str:
        text = copy_system_info()
        self.window.statusBar().showMessage("System info copied: paste it into a bug report.")
        return text
