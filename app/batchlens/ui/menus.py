"""The window's menu bar: File, View and Help. Each entry calls one of the window's public methods."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence

from batchlens.ui.about import open_user_guide, show_about


def add_menus(window) -> None:
    """File (Open model file…, Open results…, Quit), View (panels, run screen or results), Help."""
    bar = window.menuBar()

    file_menu = bar.addMenu("&File")
    window.open_model_action = file_menu.addAction("Open &model file…", window.open_model_file)
    window.open_results_action = file_menu.addAction("Open &results…", window.ask_results_folder)
    window.open_results_action.setShortcut(QKeySequence.StandardKey.Open)
    file_menu.addSeparator()
    window.quit_action = file_menu.addAction("&Quit", window.close)
    window.quit_action.setShortcut(QKeySequence("Ctrl+Q"))

    view_menu = bar.addMenu("&View")
    window.run_screen_action = view_menu.addAction("&Run screen", window.show_run_screen)
    window.results_action = view_menu.addAction("R&esults of the last run", window.show_last_results)
    view_menu.addSeparator()
    window.panel_actions = {}
    for name, title in (("previews", "&Previews"), ("memory", "&Memory plot"), ("problems", "Pro&blems")):
        action = QAction(title, window, checkable=True, checked=True)
        action.toggled.connect(lambda on, name=name: window.show_panel(name, on))
        view_menu.addAction(action)
        window.panel_actions[name] = action

    help_menu = bar.addMenu("&Help")
    window.guide_action = help_menu.addAction("&User guide", lambda: open_user_guide(window))
    window.guide_action.setShortcut(QKeySequence.StandardKey.HelpContents)
    window.copy_info_action = help_menu.addAction("&Copy system info", window.copy_system_info)
    help_menu.addSeparator()
    window.about_action = help_menu.addAction("&About BatchLens", lambda: show_about(window))
