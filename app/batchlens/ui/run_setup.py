"""What Run checks and asks before a run starts: why it cannot start yet (in plain words), the
questions about the output folder (inside the input? holding an earlier run?), and the RunConfig made
from the form's choices. The window calls it; it talks to the user through the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.devices import resolve_device
from batchlens.core.models.request import model_request
from batchlens.core.outputs.manifest import (
    existing_run,
    existing_run_question,
    free_folder_beside,
    resume_refusal_before_load,
)
from batchlens.core.run.config import RunConfig
from batchlens.ui.run_form import CLUSTER, default_output_for


class RunSetup:
    """Needs `window.form`, `window.model_picker`, `window.show_error(str)`, `window.ask_questions`
    and `window.device_name()`."""

    def __init__(self, window):
        self.window = window

    def config(self) -> RunConfig | None:
        """The RunConfig for the current choices, or None (after telling the user what is missing)."""
        form = self.window.form
        model = form.model_id()
        input_text = form.input_text()
        output_text = form.output_text()
        if not model:
            self.window.show_error("Choose a model first.")
            return None
        if not input_text:
            self.window.show_error("Choose the folder of images first (Browse, or drop a folder here).")
            return None
        input_dir = Path(input_text).expanduser()
        output_dir = Path(output_text).expanduser() if output_text else default_output_for(input_dir)
        if output_text != str(output_dir):
            form.set_output(output_dir, chosen=False)
        try:
            inside = output_dir.resolve() != input_dir.resolve() and output_dir.resolve().is_relative_to(
                input_dir.resolve()
            )
        except OSError:
            inside = False
        if inside and self.window.ask_questions:
            answer = QMessageBox.question(
                self.window,
                "Output inside the input folder",
                f"The output folder {output_dir} is inside the folder of images {input_dir}. "
                "BatchLens will leave it out of the scan. Write the results there?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return None
        choice = self.choose_for_existing_run(output_dir, model, input_dir)
        if choice is None:
            return None
        mode, output_dir = choice
        device = "auto" if self.window.device_name() == CLUSTER else self.window.device_name()
        return RunConfig(
            model=model,
            input_dir=input_dir,
            output_dir=output_dir,
            device=device,
            recursive=form.recursive(),
            resume=mode == "resume",
            overwrite=mode == "overwrite",
            previews=True,
            model_options=model_request(form.model_options()),
            cpu_fallback=form.cpu_fallback(),
            empty_cache=self.window.menus.empty_cache(),
            **form.speed_settings(device_type(device)),
        )

    def choose_for_existing_run(
        self, output_dir: Path, model: str, input_dir: Path
    ) -> tuple[str, Path] | None:
        """When the output folder already holds a run, ask (core/outputs/manifest.py has the words): Another
        folder (the default, a new one beside it), Resume (off when the earlier run is of another model
        or input folder), Overwrite, or Cancel (None). Returns ("plain" | "resume" | "overwrite",
        folder). Overwrite is off for a folder without run.json (only what run.json lists is ever
        deleted). Without questions (--start, --self-test): resume when allowed, else another folder."""
        earlier = existing_run(output_dir)
        if earlier is None:
            return "plain", output_dir
        refusal = resume_refusal_before_load(output_dir, model, input_dir)
        free = free_folder_beside(output_dir)
        if not self.window.ask_questions:
            return ("resume", output_dir) if refusal is None else self._use_output(free)
        text = existing_run_question(earlier, output_dir, refusal, free)
        title, cancel = "The output folder holds a run", QMessageBox.StandardButton.Cancel
        box = QMessageBox(QMessageBox.Icon.Question, title, text, cancel, self.window)
        another = box.addButton("Another folder", QMessageBox.ButtonRole.AcceptRole)
        resume = box.addButton("Resume", QMessageBox.ButtonRole.YesRole)
        overwrite = box.addButton("Overwrite", QMessageBox.ButtonRole.DestructiveRole)
        resume.setEnabled(refusal is None)
        overwrite.setEnabled(earlier.manifest is not None)  # no run.json: --overwrite is refused
        box.setDefaultButton(another)
        box.exec()
        clicked = box.clickedButton()
        if clicked is another:
            return self._use_output(free)
        if clicked in (resume, overwrite):
            return ("resume" if clicked is resume else "overwrite"), output_dir
        return None

    def _use_output(self, folder: Path) -> tuple[str, Path]:
        self.window.form.set_output(folder, chosen=True)
        return "plain", folder

    def blocker(self) -> str | None:
        """Why Run cannot start now, in plain words; None when it can."""
        form = self.window.form
        info = self.window.model_picker.current_model()
        if info is None:
            return "choose a model."
        if info.source == "file" and not Path(info.id).is_file():
            return f"the model file {info.id} is not there any more."
        if not form.input_text():
            return "choose the folder of images (Browse, or drop a folder on the window)."
        folder = Path(form.input_text()).expanduser()
        if not folder.exists():
            return f"the input folder {folder} does not exist."
        if not folder.is_dir():
            return f"{folder} is a file, not a folder of images."
        if form.image_count() == 0:
            hint = "" if form.recursive() else " (tick Include subfolders to look inside its folders)"
            return f"there are no images in {folder}{hint}."
        return None


def device_type(name: str) -> str:
    """ "cuda", "cpu", "mps"... for a device name of the picker ("auto" as it resolves here); the run
    itself reports a device that is not there."""
    try:
        return resolve_device(name).type
    except BatchLensError:
        return "cpu"
