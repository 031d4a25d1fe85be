"""The browser's after-the-run actions: "Evaluate…" (the Evaluation view: accuracy and a confusion
matrix whose cells show their images in the grid), "Sort into folders…" (the counts per folder shown
before acting) and "Export…". The engine does the work (core/outputs/evaluation.py, sorting.py,
export.py); every refusal it gives is its one sentence, shown in the dialog.

Each function opens its dialog without blocking and returns it (the tests drive it directly)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressDialog,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.errors import BatchLensError
from batchlens.core.tasks.kinds import kind_of


def _folder_row(edit: QLineEdit, title: str, parent: QWidget, save_file: str | None = None) -> QHBoxLayout:
    row = QHBoxLayout()
    button = QPushButton("Browse…")

    def browse() -> None:
        if save_file is not None:
            chosen, _ = QFileDialog.getSaveFileName(parent, title, edit.text(), save_file)
        else:
            chosen = QFileDialog.getExistingDirectory(parent, title, edit.text())
        if chosen:
            edit.setText(chosen)

    button.clicked.connect(browse)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


# -- Evaluate… -----------------------------------------------------------------------------------
TRUTHS = {
    "folders": "Class folders (each image's first folder)",
    "reviews": "My reviews",
    "file": "A file or folder…",
}


class EvaluationView(QDialog):
    """The accuracy (or mAP, mIoU) and, for classification, the confusion matrix: rows the truth,
    columns the model; clicking a cell shows its images in the browser's grid."""

    def __init__(self, browser):
        super().__init__(browser)
        self.browser = browser
        self.setWindowTitle("Evaluation")
        self.truth = QComboBox()
        for key, name in TRUTHS.items():
            self.truth.addItem(name, key)
        self.truth_path = QLineEdit()
        self.truth_path.setPlaceholderText("FILE.csv, COCO.json or a folder of masks")
        self.measure_button = QPushButton("Measure")
        self.measure_button.clicked.connect(self.measure)
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.headline.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.matrix = QTableWidget(0, 0)
        self.matrix.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.matrix.setToolTip(
            "Rows: the true label. Columns: the model's label. Click a cell to see its images."
        )
        self.matrix.cellClicked.connect(self.show_cell)
        form = QFormLayout()
        form.addRow("Truth:", self.truth)
        form.addRow("File:", _folder_row(self.truth_path, "The truth", self, "Truth (*.csv *.json)"))
        # Detection: a threshold that re-counts the boxes (and sets the sort's and export's) at once.
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(browser.box_threshold)
        self.threshold.setToolTip(
            "Keep the boxes at or above this score: the counts, Sort and Export follow it."
        )
        self.box_counts = QLabel()
        self.box_counts.setWordWrap(True)
        self.detection = kind_of(browser._task()).scored_boxes
        if self.detection:
            form.addRow("Boxes at or above:", self.threshold)
            self.truth.setCurrentIndex(self.truth.findData("file"))
        self.threshold.valueChanged.connect(self.recount)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.box_counts)
        layout.addWidget(self.measure_button)
        layout.addWidget(self.headline)
        self.matrix_caption = QLabel(
            "Rows: the true label · columns: the model's label · click a cell to see its images"
        )
        self.matrix_caption.hide()
        layout.addWidget(self.matrix_caption)
        layout.addWidget(self.matrix, 1)
        self.result = None
        self.facts = None
        self.box_counts.setVisible(self.detection)
        if self.detection:
            self.recount()
        self.resize(700, 520)

    def recount(self) -> None:
        """The boxes per label the threshold keeps, from the results as they are (no model run)."""
        from batchlens.core.outputs.export import box_counts
        from batchlens.core.outputs.run_facts import load_run

        self.browser.box_threshold = self.threshold.value()
        try:
            if self.facts is None:
                self.facts = load_run(self.browser.folder.path, self.browser.folder.input_dir)
        except BatchLensError as exc:
            self.box_counts.setText(str(exc))
            return
        counts, empty = box_counts(self.facts, self.threshold.value(), reviewed=True)
        listed = ", ".join(f"{label} {n:,}" for label, n in counts.most_common(12))
        more = f" and {len(counts) - 12} more labels" if len(counts) > 12 else ""
        self.box_counts.setText(
            f"At {self.threshold.value():.2f}: {sum(counts.values()):,} box(es) ({listed or 'none'}{more}); "
            f"{empty:,} image(s) with none."
        )

    def measure(self) -> None:
        from batchlens.core.outputs.evaluation import evaluate, headline

        key = self.truth.currentData()
        truth = self.truth_path.text().strip() if key == "file" else key
        if key == "file" and not truth:
            self.headline.setText(f"Choose {kind_of(self.browser._task()).truth}, then Measure.")
            return
        try:
            self.result = evaluate(self.browser.folder.path, truth)
        except (BatchLensError, OSError) as exc:
            self.result = None
            if isinstance(exc, OSError):
                path = exc.filename2 or exc.filename or self.browser.folder.path
                exc = f"Could not write {path}: {exc.strerror or exc}; check that the folder can be written."
            self.headline.setText(str(exc))
            self.matrix.setRowCount(0)
            self.matrix.setColumnCount(0)
            return
        report = self.result.report
        words = headline(report)
        if self.result.without_truth:
            words += f" {self.result.without_truth:,} image(s) have no true label and are not counted."
        names = ", ".join(p.name for p in self.result.files)
        self.headline.setText(f"{words} Written: {names}.")
        self._fill_matrix(report.get("confusion"))

    def _fill_matrix(self, confusion: dict | None) -> None:
        labels = confusion["labels"] if confusion else []
        self.matrix_caption.setVisible(bool(labels))
        self.matrix.setRowCount(len(labels))
        self.matrix.setColumnCount(len(labels))
        self.matrix.setHorizontalHeaderLabels(labels)
        self.matrix.setVerticalHeaderLabels(labels)
        for i, row in enumerate(confusion["matrix"] if confusion else []):
            total = sum(row) or 1
            for j, count in enumerate(row):
                item = QTableWidgetItem(f"{count:,}" if count else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                share = count / total
                shade = int(255 - 150 * share)
                item.setBackground(QColor(shade, 255, shade) if i == j else QColor(255, shade, shade))
                item.setToolTip(f"True {labels[i]}, model said {labels[j]}: {count:,} image(s)")
                self.matrix.setItem(i, j, item)

    def show_cell(self, row: int, column: int) -> None:
        if self.result is None or "confusion" not in self.result.report:
            return
        labels = self.result.report["confusion"]["labels"]
        images = self.result.cells.get((labels[row], labels[column]), [])
        self.browser.show_images(images, f"true {labels[row]}, model said {labels[column]}")


def evaluate(browser) -> EvaluationView | None:
    if browser.folder is None:
        return None
    view = EvaluationView(browser)
    view.show()
    view.measure()
    return view


# -- Sort into folders… --------------------------------------------------------------------------
class SortDialog(QDialog):
    def __init__(self, browser):
        super().__init__(browser)
        self.browser = browser
        self.setWindowTitle("Sort into folders")
        self.into = QLineEdit(str(browser.folder.path.parent / f"{browser.folder.path.name}-sorted"))
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setValue(browser.box_threshold if kind_of(browser._task()).scored_boxes else 0.0)
        self.min_score.setToolTip(
            "Classification: a lower top score goes to unsure/. Detection: boxes below it count for nothing."
        )
        self.modes = QButtonGroup(self)
        mode_row = QHBoxLayout()
        for i, (mode, words) in enumerate((("copy", "Copy"), ("link", "Link"), ("move", "Move"))):
            button = QRadioButton(words)
            button.setChecked(mode == "copy")
            button.setProperty("mode", mode)
            self.modes.addButton(button, i)
            mode_row.addWidget(button)
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.counts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.sort_button = self.buttons.addButton("Sort", QDialogButtonBox.ButtonRole.AcceptRole)
        self.undo_button = self.buttons.addButton("Undo that sort", QDialogButtonBox.ButtonRole.ActionRole)
        self.undo_button.setToolTip("Remove the copies or links that sort made, or move its files back.")
        self.undo_button.clicked.connect(self.undo)
        self.buttons.accepted.connect(self.sort)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Into:", _folder_row(self.into, "Sort into which folder?", self))
        form.addRow("Minimum score:", self.min_score)
        form.addRow("How:", mode_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.counts, 1)
        layout.addWidget(self.buttons)
        self.into.textChanged.connect(self.update_plan)
        self.min_score.valueChanged.connect(self.update_plan)
        self.modes.buttonToggled.connect(self.update_plan)
        self.plan = None
        self.done_counts = None
        self.update_plan()

    def mode(self) -> str:
        return self.modes.checkedButton().property("mode")

    def update_plan(self) -> None:
        """The counts per folder for the current choices (nothing is done yet)."""
        from batchlens.core.outputs.sorting import SORT_LOG, first_clash, plan_sort, plan_text

        self.plan = None
        into = self.into.text().strip()
        self.undo_button.setVisible(bool(into) and (Path(into) / SORT_LOG).is_file())
        if not into:
            self.counts.setText("Choose the folder to sort into.")
            self.sort_button.setEnabled(False)
            return
        try:
            plan = plan_sort(
                self.browser.folder.path,
                Path(self.into.text().strip()),
                self.min_score.value(),
                self.mode(),
                self.browser.folder.input_dir,
            )
        except BatchLensError as exc:
            self.counts.setText(str(exc))
            self.sort_button.setEnabled(False)
            return
        text = plan_text(plan)
        clash = first_clash(plan)
        if clash is not None:
            text += f"\n\nCannot sort: {plan.into / clash} already exists (sorting never overwrites)."
        elif plan.mode == "move":
            text += "\n\nMove takes the images out of the input folder (undo puts them back)."
        self.counts.setText(text)
        self.plan = plan if clash is None and plan.moves else None
        self.sort_button.setEnabled(self.plan is not None)

    def sort(self) -> None:
        from batchlens.core.outputs.sorting import do_sort

        if self.plan is None:
            return
        progress = QProgressDialog("Sorting…", "", 0, len(self.plan.moves), self)
        progress.setCancelButton(None)  # a sort stopped half way is undone from its log, not here
        progress.setMinimumDuration(500)

        def step(done: int, total: int) -> None:
            progress.setValue(done)
            QCoreApplication.processEvents()

        try:
            self.done_counts = do_sort(self.plan, step)
        except (BatchLensError, OSError) as exc:
            progress.close()
            self.counts.setText(
                f"The sort stopped: {exc}. What was placed is in {self.plan.into}/sort-log.jsonl."
            )
            return
        progress.close()
        self.accept()
        self.browser.notice_text(
            f"Sorted {sum(self.done_counts.values()):,} file(s) into {self.plan.into} "
            f'(to undo: batchlens sort --undo "{self.plan.into}").'
        )

    def undo(self) -> None:
        from batchlens.core.outputs.sorting import undo_sort

        into = Path(self.into.text().strip())
        try:
            result = undo_sort(into)
        except (BatchLensError, OSError) as exc:
            self.counts.setText(f"Could not undo the sort in {into}: {exc}")
            return
        kept = f"; left in place: {', '.join(result.kept[:3])}" if result.kept else ""
        self.browser.notice_text(
            f"Undid the sort in {into}: removed {result.removed:,} copies or links, "
            f"moved {result.moved_back:,} "
            f"file(s) back{kept}."
        )
        self.update_plan()


def sort_into_folders(browser) -> SortDialog | None:
    if browser.folder is None:
        return None
    dialog = SortDialog(browser)
    dialog.open()
    return dialog


# -- Export… -------------------------------------------------------------------------------------
class ExportDialog(QDialog):
    def __init__(self, browser):
        super().__init__(browser)
        self.browser = browser
        self.setWindowTitle("Export the results")
        self.format = QComboBox()
        for key, name in (
            ("csv", "CSV (a spreadsheet)"),
            ("coco", "COCO JSON (detection)"),
            ("yolo", "YOLO folder (detection)"),
        ):
            self.format.addItem(name, key)
        self.to = QLineEdit(str(browser.folder.path.parent / f"{browser.folder.path.name}.csv"))
        self.reviewed = QCheckBox(
            "With my reviews applied (COCO, YOLO; the CSV always has them beside the model's)"
        )
        self.reviewed.setChecked(True)
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setValue(browser.box_threshold)
        self.min_score.setToolTip("Detection: leave out the model's boxes below this score.")
        self.message = QLabel()
        self.message.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.export)
        buttons.rejected.connect(self.reject)
        self.format.currentIndexChanged.connect(self._format_changed)
        form = QFormLayout()
        form.addRow("Format:", self.format)
        form.addRow("To:", _folder_row(self.to, "Export to", self, "All files (*)"))
        if kind_of(browser._task()).scored_boxes:
            form.addRow("Boxes at or above:", self.min_score)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.reviewed)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.written: list[Path] = []

    def _format_changed(self) -> None:
        suffix = {"csv": ".csv", "coco": ".coco.json", "yolo": "-yolo"}[self.format.currentData()]
        self.to.setText(str(self.browser.folder.path.parent / f"{self.browser.folder.path.name}{suffix}"))

    def export(self) -> None:
        from batchlens.core.outputs.export import export

        try:
            self.written = export(
                self.browser.folder.path,
                self.format.currentData(),
                self.to.text().strip(),
                self.reviewed.isChecked(),
                self.min_score.value(),
            )
        except BatchLensError as exc:
            self.message.setText(str(exc))
            return
        except OSError as exc:
            self.message.setText(f"Could not write {self.to.text().strip()}: {exc.strerror or exc}.")
            return
        self.accept()
        self.browser.notice_text(f"Exported the results to {self.to.text().strip()}.")


def export(browser) -> ExportDialog | None:
    if browser.folder is None:
        QMessageBox.information(browser, "Export", "Open an output folder first.")
        return None
    dialog = ExportDialog(browser)
    dialog.open()
    return dialog
