"""The results browser: every image of an output folder in a grid with its result drawn on it, filters
and sorting on the side, and one result large on demand.

Use: `browser = ResultsBrowser(parent)`, `browser.open_folder(path)`; `back_requested` is emitted when
the user asks to leave (Esc on the grid, the Back button shown with `show_back=True`). The folder may
still be written by a run: new lines are read as they arrive (a timer checks the file's size).
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.outputs.result_pictures import ResultPictures, task_of
from batchlens.core.outputs.results_index import (
    OutputFolder,
    PredictionsReader,
    ResultRecord,
    describe_folder,
    read_line,
)
from batchlens.core.outputs.reviews import ReviewsReader, append_review
from batchlens.ui.results.detail import LARGE, ResultDetail
from batchlens.ui.results.filters import FilterPanel
from batchlens.ui.results.grid import ResultsGrid, TileDelegate, tile_pixels
from batchlens.ui.results.memory_histogram import MemoryHistogram
from batchlens.ui.results.model import ResultsFilter, ResultsModel, changed
from batchlens.ui.results.thumbnails import Job, ThumbnailCache, ThumbnailLoader, make_pictures

POLL_MS = 500  # how often a folder is checked for new lines (a stat call when nothing changed)


class ResultsBrowser(QWidget):
    back_requested = Signal()
    folder_opened = Signal(str)

    def __init__(self, parent: QWidget | None = None, show_back: bool = False):
        super().__init__(parent)
        self.folder: OutputFolder | None = None
        self.reader: PredictionsReader | None = None
        self.reviews_reader: ReviewsReader | None = None
        self._inferred_task: str | None = None
        self.generation = 0  # bumped whenever the records are read afresh: old tiles are ignored

        self.results = ResultsModel(self)
        self.shown = ResultsFilter(self.results, self)
        self.cache = ThumbnailCache()
        self.loader = ThumbnailLoader(parent=self)
        self.loader.ready.connect(self._picture_ready)
        self.cell_caption = ""
        self.box_threshold = 0.0  # detection: the score the Evaluation view keeps boxes at (Sort, Export)

        self._build_top(show_back)
        side = self._build_filters()
        self._build_pages()
        self._build_layout(side)
        for signal in (
            self.shown.rowsInserted,
            self.shown.rowsRemoved,
            self.shown.modelReset,
            self.shown.layoutChanged,
        ):
            signal.connect(self._update_count)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self._update_count()
        app = QCoreApplication.instance()
        if app is not None:  # embedded in a window that closes without closing us: stop the threads too
            app.aboutToQuit.connect(self.shutdown)

    # -- built once, by __init__ ---------------------------------------------------------------
    def _build_top(self, show_back: bool) -> None:
        """Top: where the results come from, what is missing, the after-run actions, what one did."""
        self.back_button = QPushButton("← Back")
        self.back_button.setToolTip("Back to the run (Esc).")
        self.back_button.clicked.connect(self.back_requested)
        self.back_button.setVisible(show_back)
        self.title = QLabel("No results opened.")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.title.setWordWrap(True)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("QLabel { background: rgba(240, 140, 0, 40); padding: 4px; }")
        self.notice.hide()
        self.choose_input_button = QPushButton("Choose input folder…")
        self.choose_input_button.setToolTip("Show the input pictures from the folder where they are now.")
        self.choose_input_button.clicked.connect(self.choose_input_folder)
        self.choose_input_button.hide()
        self.evaluate_button = QPushButton("Evaluate…")
        self.evaluate_button.setToolTip("Measure the model against the true labels (evaluation.json).")
        self.sort_button = QPushButton("Sort into folders…")
        self.sort_button.setToolTip("Copy (or link, or move) the images into one folder per label.")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the results as CSV (for a spreadsheet), COCO JSON or YOLO.")
        from batchlens.ui.results import after_run_dialogs

        self.evaluate_button.clicked.connect(lambda: after_run_dialogs.evaluate(self))
        self.sort_button.clicked.connect(lambda: after_run_dialogs.sort_into_folders(self))
        self.export_button.clicked.connect(lambda: after_run_dialogs.export(self))
        self.message = QLabel()  # what an action did (a sort, an export)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()

    def _build_filters(self) -> QScrollArea:
        """Left: the filters, wired to the proxy model and the sort, in a scroll area."""
        self.filters = FilterPanel()
        self.filters.statuses_changed.connect(self.shown.set_statuses)
        self.filters.label_changed.connect(self.shown.set_label)
        self.filters.score_changed.connect(self.shown.set_score_range)
        self.filters.sort_changed.connect(self.results.set_sort)
        self.filters.review_changed.connect(self.shown.set_review_state)
        self.filters.reset_button.clicked.connect(lambda: self.show_images(None))
        self.memory_histogram = MemoryHistogram(self.results)  # which images cost the most
        self.filters.layout().addWidget(self.memory_histogram)
        side = QScrollArea()
        side.setWidget(self.filters)
        side.setWidgetResizable(True)
        side.setMinimumWidth(190)
        return side

    def _build_pages(self) -> None:
        """Right: the grid with its count, or one result large (`pages` switches between them)."""
        self.count_label = QLabel()
        self.grid = ResultsGrid()
        self.grid.setModel(self.shown)
        self.grid.setItemDelegate(TileDelegate(self.cache, self.loader, self._job, self.grid))
        self.grid.open_requested.connect(self.open_row)
        self.grid.back_requested.connect(self.back_requested)
        grid_page = QWidget()
        grid_layout = QVBoxLayout(grid_page)
        grid_layout.setContentsMargins(0, 0, 0, 0)
        grid_layout.addWidget(self.count_label)
        grid_layout.addWidget(self.grid, 1)
        self.detail = ResultDetail()
        self.detail.back_requested.connect(self.show_grid)
        self.detail.step_requested.connect(lambda step: self.open_row(self.detail.row + step))
        self.detail.review.decided.connect(lambda label: self.decide(label=label))
        self.detail.review.boxes_decided.connect(lambda boxes: self.decide(boxes=boxes))
        self.pages = QStackedWidget()
        self.pages.addWidget(grid_page)
        self.pages.addWidget(self.detail)

    def _build_layout(self, side: QScrollArea) -> None:
        splitter = QSplitter()
        splitter.addWidget(side)
        splitter.addWidget(self.pages)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([230, 800])
        splitter.setCollapsible(1, False)
        top = QHBoxLayout()
        top.addWidget(self.back_button)
        top.addWidget(self.title, 1)
        for button in (self.evaluate_button, self.sort_button, self.export_button):
            top.addWidget(button)
        notice_row = QHBoxLayout()
        notice_row.addWidget(self.notice, 1)
        notice_row.addWidget(self.choose_input_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addLayout(notice_row)
        layout.addWidget(self.message)
        layout.addWidget(splitter, 1)

    # -- public API ----------------------------------------------------------------------------
    def open_folder(self, path: Path | str, input_dir: Path | str | None = None) -> None:
        """Show the results in `path` (read now, then followed while a run adds to them). `input_dir`:
        where the input images are, when not where the run recorded them."""
        self.folder = describe_folder(Path(path), Path(input_dir) if input_dir else None)
        self.reader = PredictionsReader(self.folder.predictions)
        self.reviews_reader = ReviewsReader(self.folder.path)
        self._restart()
        self.show_grid()
        self.poll()
        self.timer.start()
        self.folder_opened.emit(str(self.folder.path))

    def choose_input_folder(self) -> None:
        if self.folder is None:
            return
        start = str(self.folder.recorded_input or self.folder.path)
        chosen = QFileDialog.getExistingDirectory(self, "Where are the input images now?", start)
        if chosen:
            self.set_input_folder(Path(chosen))

    def set_input_folder(self, input_dir: Path) -> None:
        """Draw the input pictures from `input_dir` (the images' paths are relative to it)."""
        if self.folder is None:
            return
        self.folder = describe_folder(self.folder.path, input_dir)
        self.generation += 1
        self.cache.clear()
        self.loader.cancel_all()
        self._update_title()
        self.grid.viewport().update()

    def show_images(self, images, caption: str = "") -> None:
        """Show only these images in the grid (a cell of the confusion matrix); None: every image."""
        self.cell_caption = caption if images is not None else ""
        self.shown.set_images(None if images is None else set(images))
        self.show_grid()
        self._update_count()

    def notice_text(self, text: str) -> None:
        self.message.setText(html.escape(text))
        self.message.setVisible(bool(text))

    def shutdown(self) -> None:
        """Stop following the folder and wait for the picture threads (called on close)."""
        self.timer.stop()
        self.loader.shutdown()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def showing_detail(self) -> bool:
        return self.pages.currentWidget() is self.detail

    # -- reading -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the lines added since the last call; a big file is read in steps without blocking."""
        if self.reader is None or self.folder is None:
            return
        records, restarted = self.reader.read_new()
        if restarted:
            self._restart()
        self.results.append(records)
        if self.reviews_reader.read_new() or records or restarted:
            self._reviews_changed()
        if records and not self.grid.currentIndex().isValid() and self.shown.rowCount():
            self.grid.setCurrentIndex(self.shown.index(0, 0))  # so Enter opens something at once
        if not self.folder.finished:
            finished_before = self.folder.finished
            self.folder = describe_folder(self.folder.path, self.folder.input_dir)
            if self.folder.finished != finished_before or records:
                self._update_title()
        if records:
            self.filters.set_counts(
                self.results.status_counts, self.results.label_counts, self.results.has_scores, self._task()
            )
            if len(records) and self.reader.offset < self._file_size():
                QTimer.singleShot(0, self.poll)  # more to read: continue after the window repaints

    def _file_size(self) -> int:
        try:
            return self.reader.path.stat().st_size
        except OSError:
            return 0

    def _restart(self) -> None:
        self.generation += 1
        self._inferred_task = None
        self.cache.clear()
        self.loader.cancel_all()
        self.results.clear()
        self.filters.clear()
        self._update_title()

    def _task(self) -> str | None:
        """The run's task: as recorded, else from the shape of its first successful result."""
        if self.folder is not None and self.folder.task:
            return self.folder.task
        if self._inferred_task is None and self.folder is not None:
            first = next((r for r in self.results.records[:200] if r.status != "error"), None)
            if first is not None:
                self._inferred_task = task_of(read_line(self.folder.predictions, first))
        return self._inferred_task

    # -- reviews -------------------------------------------------------------------------------
    def decide(self, label: str | None = None, boxes: list | None = None) -> None:
        """Write the person's decision on the image shown large, then show the next one."""
        record = self.detail.record
        if record is None or self.folder is None:
            return
        try:
            append_review(self.folder.path, record.image, label=label, boxes=boxes)
        except OSError as exc:
            self.notice.setText(
                html.escape(
                    f"Could not write your review to {self.folder.path / 'reviews.jsonl'}: "
                    f"{exc.strerror or exc}; check that the folder is writable."
                )
            )
            self.notice.show()
            return
        self.reviews_reader.read_new()
        row = self.detail.row
        self._reviews_changed()
        still_shown = self.shown.record(row) is record
        following = row + 1 if still_shown else row  # a filter may have hidden the reviewed image
        if following < self.shown.rowCount():
            self.open_row(following)
        else:
            self.detail.show_review(self.reviews_reader.reviews.get(record.image))

    def _reviews_changed(self) -> None:
        reviews = self.reviews_reader.reviews if self.reviews_reader is not None else {}
        self.shown.reviews = reviews
        reviewed = changes = 0
        for record in self.results.records:
            review = reviews.get(record.image)
            if review is not None:
                reviewed += 1
                changes += changed(record, review)
        total = len(self.results.records)
        self.filters.set_review_counts(
            {"all": total, "reviewed": reviewed, "not reviewed": total - reviewed, "changed": changes}
        )
        self.shown.reviews_changed()
        self.grid.viewport().update()  # the tiles' ticks

    # -- pictures ------------------------------------------------------------------------------
    def _job(self, record: ResultRecord, size: int | None = None, large: bool = False) -> Job:
        folder = self.folder
        return Job(
            key=("large" if large else "tile", self.generation, record.offset),
            record=record,
            predictions=folder.predictions,
            input_dir=folder.input_dir,
            output_dir=folder.path,
            task=self._task(),
            size=size or tile_pixels(self.grid),
        )

    def _picture_ready(self, key: tuple, result) -> None:
        kind, generation, offset = key
        if generation != self.generation:
            return
        if kind == "tile":
            self.cache.put(key, result)
            self.grid.viewport().update()
        elif isinstance(result, ResultPictures) and self.detail.record is not None:
            if self.showing_detail() and self.detail.record.offset == offset:
                self.detail.show_pictures(result)

    # -- pages ---------------------------------------------------------------------------------
    def open_row(self, row: int) -> None:
        """Show the row'th shown result large (rows outside the shown ones are ignored)."""
        record = self.shown.record(row)
        if record is None or self.folder is None:
            return
        self.grid.setCurrentIndex(self.shown.index(row, 0))
        fields = read_line(self.folder.predictions, record)
        review = self.reviews_reader.reviews.get(record.image) if self.reviews_reader else None
        self.detail.review.add_labels(self.results.label_counts)
        self.detail.show_record(record, fields, row, self.shown.rowCount(), review)
        self.pages.setCurrentWidget(self.detail)
        self.detail.setFocus()
        self.loader.request(self._job(record, LARGE, large=True), make_pictures)

    def show_grid(self) -> None:
        self.pages.setCurrentIndex(0)
        current = self.grid.currentIndex()
        if current.isValid():
            self.grid.scrollTo(current)
        self.grid.setFocus()

    # -- text ----------------------------------------------------------------------------------
    def _update_count(self) -> None:
        total, shown = self.results.rowCount(), self.shown.rowCount()
        if self.folder is None:
            text = "Open an output folder to see its results."
        elif total == 0:
            text = (
                "No results yet: waiting for the run's first image…"
                if not self.folder.finished
                else "This folder holds no results (its predictions.jsonl is empty or missing)."
            )
        else:
            text = f"Showing {shown:,} of {total:,}"
            if self.cell_caption:
                text += f": {self.cell_caption} (“Show everything” shows them all again)"
        self.count_label.setText(text)

    def _update_title(self) -> None:
        folder = self.folder
        if folder is None:
            self.title.setText("No results opened.")
            return
        model = f" by <b>{html.escape(folder.model)}</b>" if folder.model else ""
        state = "" if folder.finished else " — <i>not finished (new results appear as they are written)</i>"
        self.title.setText(f"Results{model} in {html.escape(str(folder.path))}{state}")
        missing = folder.input_dir is None
        if missing:
            where = (
                f"The input folder {folder.recorded_input} is not on this computer"
                if folder.recorded_input
                else "This folder does not say where its input images are"
            )
            self.notice.setText(
                f"{html.escape(where)}, so the results are shown without the input pictures. "
                "Choose the folder where the images are now to see them."
            )
        self.notice.setVisible(missing)
        self.choose_input_button.setVisible(missing)
        self._update_count()
