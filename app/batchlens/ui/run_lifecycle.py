"""A run's life in the window: Run pressed (or `--start`), Pause, Cancel, the worker's events on
the way (progress, previews, problems, memory markers, the status bar) and its end. A mixin of
MainWindow (ui/main_window.py), which holds the widgets it updates."""

from __future__ import annotations

from batchlens.core.cluster import ClusterConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.run_speed import format_rate
from batchlens.core.run.run_text import describe_summary
from batchlens.ui.engine import LOADING
from batchlens.ui.run_form import CLUSTER
from batchlens.ui.wording import for_window


class RunLifecycle:
    """Starts, pauses, cancels and follows a run; needs MainWindow's widgets and `engine`. The handlers
    of the signals the run's thread emits (`_on_event`, `_on_paused`, `_on_resumed`, `_on_errored`,
    `_on_thread_finished`) are MainWindow's own methods: defined on a mixin, PySide did not take them for
    the window's slots and ran them on the run's thread."""

    def start_when_counted(self) -> None:
        """`batchlens --start`: press Run once the input's images are counted, so a folder without images
        is refused as the Run button refuses it (pressed at once, a count still under way let it run)."""
        self.ask_questions = False
        form = self.form

        def counted(*_args) -> None:
            form.counted.disconnect(counted)
            self.start_run()

        form.counted.connect(counted)
        form.count_now()

    def start_run(self) -> bool:
        if self.is_running():
            return False
        if not self.engine.is_ready():  # Run pressed while PyTorch loads: start when it is ready
            if self.engine.error is not None:
                self.show_error(self.engine.error)
                return False
            self._run_waits_for_engine = True
            self.controls.show_message(f"{LOADING} The run starts as soon as it is ready.")
            self.status(LOADING)
            return False
        from batchlens.core.cluster import ClusterRunner
        from batchlens.ui.worker import RunWorker, start_in_thread

        self.build_memory_plot()  # the engine's `ready` may still be on its way to _on_engine_ready

        form = self.form
        blocker = self.run_blocker()
        if blocker is not None:
            self.show_error(f"Nothing to run: {blocker}")
            return False
        if not self.model_sources.ready(form.model_id(), form.model_options(), self.start_run):
            return False  # the user declined a pickle file, or the weights download first and then start
        config = self.build_config()
        if config is None:
            return False
        self.save_settings()
        self.last_summary = None
        self.last_error = None
        self._latest = None
        self.previews.clear("Loading the model…")
        self.thumbnails.clear()
        self.problems.clear()
        self.controls.set_busy()  # busy until the engine says how many images there are
        self.controls.set_rate("")
        self.controls.show_message("")
        self.status(f"Starting {config.model} on {config.input_dir}…")
        self.memory_plot.set_save_folder(config.output_dir)

        runner = None
        self._cluster_run = self.device_name() == CLUSTER
        if self._cluster_run:
            runner = ClusterRunner(config, ClusterConfig(form.cluster_address()))
        worker = RunWorker(config, runner=runner)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_errored)
        # Bound methods of the window (not lambdas), so Qt queues them onto the GUI thread whichever
        # thread emits.
        worker.paused.connect(self._on_paused)
        worker.resumed.connect(self._on_resumed)
        self.worker = worker
        self.worker_created.emit(worker)  # before the thread starts: a hook for extensions and tests
        self.thread = start_in_thread(worker)
        self.thread.finished.connect(self._on_thread_finished)
        self._set_running(True)
        self.preview_timer.start()
        if self.memory_plot.probe is not None:  # its peak line is this run's (as the run's own probe)
            self.memory_plot.probe.reset_peak()
        self.memory_plot.add_marker("run_start", f"Run started: {config.model}")
        return True

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        if self.worker.is_paused:
            self.worker.resume()
        else:
            self.worker.pause()

    def cancel_run(self) -> None:
        if self.worker is None:
            return
        self.worker.cancel()
        self.controls.set_cancelling()
        self.controls.set_rate("")  # no speed or time left for a run that is stopping
        self.clock.pause()
        self.status("Cancelling after the current image…")

    def _show_paused(self, paused: bool) -> None:
        if paused:
            self.clock.pause()
            self.controls.set_rate("paused")
        else:
            self.clock.resume()
            self._show_rate()
        self.controls.set_paused(paused)
        self.status("Paused. Press Resume to go on." if paused else "Running…")

    def _on_image(self, event: ImageResult) -> None:
        # Per image only bookkeeping; progress and previews are drawn by the refresh timer, so a fast
        # model costs the GUI thread almost nothing per image.
        self._latest = event
        self.thumbnails.add(event)
        if not event.ok:
            error = for_window(event.error or "failed")
            self.problems.add(event.image, error)
            self.memory_plot.add_marker("failure", f"{event.image}: {error}")

    def _on_finished(self, event: RunFinished) -> None:
        self._refresh_previews()  # the last image's result, before anyone hears the run finished
        self.last_summary = event.summary
        if not event.cancelled:
            self.controls.set_finished()
        # The summary's figure (core/run/run_speed.py), shown the same way as in the summary sentence.
        self.controls.set_rate(format_rate(event.summary.get("images_per_second")))
        text = describe_summary(event.summary)
        if event.cancelled:
            text += " Cancelled: the images not reached are not in predictions.jsonl yet."
        self.controls.show_message(text)
        self.status("Cancelled." if event.cancelled else "Finished.")
        self.memory_plot.add_marker("run_end", "Run cancelled" if event.cancelled else "Run finished")

    def _refresh_previews(self) -> None:
        """Draw the newest result: progress, speed, previews, thumbnails (on a timer, ~12 per second)."""
        event = self._latest
        if event is None or event is self.previews.shown:
            return
        self.controls.set_done(event.index)
        if self.worker is not None and not self.worker.runner.cancelled and not self.clock.paused:
            self._show_rate()
        self.previews.show_result(event)
        self.thumbnails.refresh()

    def _show_rate(self) -> None:
        if self._latest is not None:
            self.controls.show_speed(self._latest.index, self._latest.total, self.clock.running_seconds())
