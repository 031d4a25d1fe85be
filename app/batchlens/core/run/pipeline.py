"""One batch of images through the model, the same code on a laptop and on a cluster worker.

Per image, in this order: decode -> preprocess -> forward under inference_mode -> per-image outputs
on the CPU -> postprocess to plain data -> write -> drop every device reference.
Nothing that holds a device tensor outlives `process()`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.files import (
    OutputFolder,
    is_name_problem,
    name_problem_words,
    output_path_for,
    write_error,
)
from batchlens.core.inputs.fast_preprocess import fast_preprocess_for
from batchlens.core.inputs.gpu_decode import DeviceDecoder, preprocess_pictures, preview_of, wait_for
from batchlens.core.inputs.images import Candidate, DecodedImage, ImageError, load_image
from batchlens.core.inputs.prefetch import Each, each_here
from batchlens.core.inputs.process_decode import ProcessDecoder, process_workers
from batchlens.core.machine.machine_load import usable_cores
from batchlens.core.models import LoadedModel
from batchlens.core.outputs.output_writers import OutputWriters
from batchlens.core.outputs.records import non_finite
from batchlens.core.run.batch_item import (
    NOT_FINITE,
    ForwardFailure,
    Item,
    Prepared,
    all_finite,
    share_time,
)
from batchlens.core.run.config import RunConfig
from batchlens.core.run.inference import compile_module, describe_error, infer, split_on_cpu
from batchlens.core.run.precision import PrecisionDecision, decide_precision
from batchlens.core.run.recovery import OomRecovery, is_out_of_memory
from batchlens.core.run.watchdog import ForwardTimeout, call_with_timeout
from batchlens.core.tasks.base import ImageMeta, TaskResult, thumbnail

#: CUDA with CPU decode: copy each prepared batch to the device on a side stream ahead of its forward
COPY_AHEAD = True


class BatchPipeline:
    """Processes lists of candidates with one loaded model, writing each image's output files."""

    def __init__(
        self,
        model: LoadedModel,
        output_dir: Path | OutputFolder,
        max_pixels: int | None,
        precision: str = "fp32",
        channels_last: bool = False,
        fast_decode: bool = False,
        gpu_decode: bool = False,
        *,
        image_timeout: float | None = None,
        previews: bool = True,
        input_dir: Path | None = None,
        writers: OutputWriters | None = None,
        cpu_fallback: bool = False,
        on_first_oom=None,
        compiled: bool | str = False,
        decode_processes: int = 0,
    ):
        """Complete once made: `for_run` passes a run's settings; the defaults are a bare pipeline's
        (one writer thread, no time limit, the model as loaded)."""
        self.model = model
        self.output_dir = output_dir
        self.max_pixels = max_pixels
        self.precision = precision
        self.channels_last = channels_last
        self.fast_decode = fast_decode  # JPEGs decoded at the reduced scale the adapter allows
        # --fast-decode also resizes on the uint8 tensor (torch's SIMD kernel) where that is the same
        # preprocessing; `fast_resize` is True or why not, for summary.json
        self.fast_preprocess, self.fast_resize = fast_preprocess_for(model) if fast_decode else (None, False)
        self.pin_memory = model.device.type == "cuda"
        # CUDA, CPU decode: each batch goes to the device on this side stream ahead of its forward
        # (`_copy_ahead`); set after the device decoder below (which has its own stream)
        self.copy_stream = None
        # --gpu-decode: a batch's JPEGs are decoded and preprocessed on the model's device
        self.device_decoder = (
            DeviceDecoder(model.device, model.adapter.color_mode, max_pixels)
            if gpu_decode and model.adapter.position_free
            else None
        )
        # decoding processes (RunConfig.decode_processes; `for_run` gives the local runner's number)
        self.process_decoder = ProcessDecoder(decode_processes) if decode_processes else None
        self.decode_processes = decode_processes  # how many, for summary.json
        self.decoded_in_processes = 0  # images they decoded (the first ones decode here while they start)
        if self.pin_memory and self.device_decoder is None and COPY_AHEAD:
            self.copy_stream = torch.cuda.Stream(model.device)
        self.first_forward_seconds: float | None = None
        self.precision_check: PrecisionDecision | None = None  # --precision auto, after the first batch
        self.compiled = bool(compiled)  # --compile asked for
        # torch.compile's mode (RunConfig.compile a string; None: torch's default)
        self.compile_mode: str | None = compiled if isinstance(compiled, str) else None
        self.uncompiled: nn.Module | None = None  # --compile: the model as loaded, until a forward worked
        if compiled:
            self.uncompiled, model.module = model.module, compile_module(model.module, self.compile_mode)
        self.compile_failed: str | None = None  # why torch.compile could not run the model
        self.recovery = self.make_recovery(cpu_fallback, on_first_oom)
        self.image_timeout = image_timeout  # --image-timeout (core/run/watchdog.py)
        self.previews = previews  # keep a preview-sized copy of each photo (RunConfig.previews)
        self.batched_preprocess: bool | None = None  # --gpu-decode: one call per size? (None: untried)
        self.input_dir = input_dir  # resolved; no output file is ever written inside it
        # Why the model takes one image at a time, once a batch failed where its images ran one by
        # one: later batches go image by image without the failing try (the runner says so once).
        self.one_at_a_time: str | None = None
        self.writers = writers if writers is not None else OutputWriters(1)  # a run: a few threads

    @classmethod
    def for_run(
        cls,
        model: LoadedModel,
        output_dir: Path | OutputFolder,
        config: RunConfig,
        channels_last: bool,
        on_first_oom=None,
        local: bool = False,
    ) -> BatchPipeline:
        """The pipeline a run of `config` uses: the local runner's and every cluster worker's, complete
        (`on_first_oom`: what the out-of-memory ladder calls first, e.g. --memory-snapshot's saver;
        `local`: the local runner's, which may start decoding processes, and calls `close`)."""
        on_gpu = config.gpu_decode and model.adapter.position_free  # (the device decoder's condition)
        workers = process_workers(config.decode_processes, model.device.type, usable_cores(), on_gpu)
        return cls(
            model,
            output_dir,
            config.max_pixels,
            config.precision,
            channels_last,
            config.fast_decode,
            config.gpu_decode,
            image_timeout=config.image_timeout,
            previews=config.previews,
            input_dir=Path(config.input_dir).expanduser().resolve(),
            writers=OutputWriters(),  # whoever runs the pipeline calls `writers.close()`
            cpu_fallback=config.cpu_fallback,
            on_first_oom=on_first_oom,
            compiled=config.compile,
            decode_processes=workers if local else 0,
        )

    def close(self) -> None:
        """Stop the decoding processes, if any (the runner calls it however the run ends)."""
        if self.process_decoder is not None:
            self.process_decoder.close()
            self.decoded_in_processes = self.process_decoder.decoded_in_workers
            self.process_decoder = None

    def compile_report(self) -> tuple[str, dict] | None:
        """--compile, once the first forward ran: a sentence for the user and summary.json's entry."""
        if not self.compiled or self.first_forward_seconds is None:
            return None
        seconds = round(self.first_forward_seconds, 2)
        if self.compile_failed:
            message = (
                f"torch.compile could not compile this model here ({self.compile_failed}); "
                "the run goes on with the model as loaded."
            )
        else:
            message = f"torch.compile: the first batch took {seconds} s, compiling included."
        entry = {"first_forward_seconds": seconds, "failed": self.compile_failed}
        if self.compile_mode:
            entry["mode"] = self.compile_mode
        return message, entry

    def make_recovery(self, cpu_fallback: bool = False, on_first_oom=None) -> OomRecovery:
        """The out-of-memory ladder for this model (the runner adds --cpu-fallback and the snapshot)."""
        return OomRecovery(
            self.model.device,
            tiles=self.model.adapter.tileable,
            takes_list=self.model.takes_list,
            cpu_fallback=cpu_fallback,
            on_first_oom=on_first_oom,
        )

    def process(self, batch: list[Candidate]) -> list[Item]:
        return self.finish(self.prepare(batch))

    def prepare(self, batch: list[Candidate], each: Each = each_here) -> Prepared:
        """Decode and preprocess a batch, safe on a background thread (core/inputs/prefetch.py), its images
        through `each` (the prefetcher's decoding threads, all at once). CPU work only, except with
        --gpu-decode, whose device work runs on a side stream (`Prepared.ready`)."""
        if self.device_decoder is None and self.copy_stream is not None:
            prepared = self._prepare(batch, each)
            started = time.perf_counter()
            self._copy_ahead(prepared)
            share_time(prepared.items, time.perf_counter() - started)
            return prepared
        if self.device_decoder is None:
            return self._prepare(batch, each)
        with self.device_decoder.side_stream():
            prepared = self._prepare(batch, each)
            prepared.ready = self.device_decoder.mark_done()
        return prepared

    def _copy_ahead(self, prepared: Prepared) -> Prepared:
        """CUDA with CPU decode: copy the batch's pinned tensors to the device on a side stream, on the
        prefetcher's thread, so the copy overlaps the forward of the batch before (`finish` makes the
        forward's stream wait for it, and tells the allocator). Not yet checked on a GPU."""
        device = self.model.device
        with torch.cuda.stream(self.copy_stream):
            prepared.groups = [
                (group, batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch)
                for group, batch in prepared.groups
            ]
            prepared.ready = torch.cuda.Event()
            prepared.ready.record(self.copy_stream)
        return prepared

    def _prepare(self, batch: list[Candidate], each: Each) -> Prepared:
        items = [Item(c) for c in batch]
        if self.device_decoder is not None:
            started = time.perf_counter()
            self._decode_on_device(items, each)
            share_time(items, time.perf_counter() - started)  # one call for the batch: an equal share
        each(self._decode_on_cpu, [item for item in items if item.tensor is None])  # (not on the device)
        started = time.perf_counter()
        # Images of equal tensor shape go through the model together; a model that takes a list of
        # images (detection) takes images of any size together.
        groups: dict[tuple, list[Item]] = {}
        for item in items:
            if item.tensor is not None:
                key = () if self.model.takes_list else tuple(item.tensor.shape)
                groups.setdefault(key, []).append(item)
        prepared = Prepared(items, [(group, self._stack(group)) for group in groups.values()])
        share_time(items, time.perf_counter() - started)
        return prepared

    def _decode_on_cpu(self, item: Item) -> None:
        """Decode and preprocess one image with Pillow and the adapter (on a decoding thread)."""
        started = time.perf_counter()  # on its decoding thread: its own time, not its wait for one
        try:
            self._decode_one(item)
        finally:
            item.work += time.perf_counter() - started

    def _decode_one(self, item: Item) -> None:
        adapter = self.model.adapter
        reduce_to = adapter.decode_size if self.fast_decode else None
        # (--fast-decode's size wish is a method of the adapter: it stays in this process)
        load = self.process_decoder.load if self.process_decoder and reduce_to is None else load_image
        try:
            item.decoded = load(item.candidate.path, adapter.color_mode, self.max_pixels, reduce_to)
            item.tensor = (self.fast_preprocess or adapter.preprocess)(item.decoded.image)
            # Past preprocessing the photo is only a preview's source: keep a preview-sized copy (made
            # here, on the decoding thread) or none, not a full photo per image in flight (48 photos of
            # 1600x1200 are 280 MB).
            item.decoded.image = thumbnail(item.decoded.image) if self.previews else None
        except ImageError as exc:
            item.error = str(exc)
        except Exception as exc:  # a preprocessing bug must not end the run
            item.error = f"could not be prepared for the model ({type(exc).__name__}: {exc})"

    def _decode_on_device(self, items: list[Item], each: Each) -> None:
        """Decode the batch's JPEGs on the device in one call and preprocess them there; the images
        it does not take keep `tensor is None` and go through the Pillow decode."""
        decoder = self.device_decoder
        read = each(lambda item: decoder.read(item.candidate.path), items)  # bytes, on the decoding threads
        encoded = [(item, data) for item, data in zip(items, read) if data is not None]
        pixels = decoder.decode([data for _, data in encoded])
        by_shape: dict[tuple, list[tuple[Item, torch.Tensor]]] = {}
        for (item, _), picture in zip(encoded, pixels):
            if picture is not None:
                by_shape.setdefault(tuple(picture.shape), []).append((item, picture))
        for group in by_shape.values():
            tensors = self._preprocess_on_device([picture for _, picture in group])
            for (item, picture), tensor in zip(group, tensors):
                if tensor is None:
                    continue  # a transform that only takes PIL images: the Pillow path runs it
                item.tensor = tensor
                preview = preview_of(picture) if self.previews else None  # (a copy to the CPU: only if shown)
                item.decoded = DecodedImage(preview, (picture.shape[-1], picture.shape[-2]))

    def _preprocess_on_device(self, pictures: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """The model's transform over pictures of one size, in one call where that gives the same
        (checked once a run: `batched_preprocess`; core/inputs/gpu_decode.py)."""
        preprocess = self.model.adapter.preprocess
        tensors, self.batched_preprocess = preprocess_pictures(preprocess, pictures, self.batched_preprocess)
        return tensors

    def _stack(self, group: list[Item]) -> torch.Tensor | None:
        """One batch tensor for the group (None if it cannot be built: `_forward` then retries per image)."""
        if self.model.takes_list:
            return [item.tensor for item in group]
        if len(group) == 1 and not self.pin_memory:  # a view, as a plain loop's unsqueeze: no copy
            return group[0].tensor.unsqueeze(0)
        try:
            first = group[0].tensor
            if first.device.type != "cpu":  # preprocessed on the device (--gpu-decode)
                batch = torch.stack([item.tensor for item in group])
                for i, item in enumerate(group):
                    item.tensor = batch[i]
                return batch
            batch = torch.empty((len(group), *first.shape), dtype=first.dtype, pin_memory=self.pin_memory)
            torch.stack([item.tensor for item in group], out=batch)
        except Exception:
            return None
        for i, item in enumerate(group):
            item.tensor = batch[i]  # a view: the batch is the only copy kept
        return batch

    def finish(self, prepared: Prepared) -> list[Item]:
        """Forward a prepared batch, postprocess to plain data, write outputs, drop the tensors."""
        started = time.perf_counter()
        model = self.model
        items = prepared.items
        groups, prepared.groups = prepared.groups, []
        wait_for(prepared.ready, [batch for _, batch in groups if isinstance(batch, torch.Tensor)])
        while groups:
            group, batch = groups.pop(0)
            self._forward(model, group, batch)
            del batch
        for item in items:
            item.tensor = None  # CPU input tensors are not needed past the forward
            if item.result is not None and self._writes_into_input(item):
                item.result, item.error = (
                    None,
                    (
                        "its output file would land inside the input folder (which is inside the output "
                        "folder), so it was not written; choose an output folder beside the input folder"
                    ),
                )
        self._write_outputs([item for item in items if item.result is not None])
        share_time(items, time.perf_counter() - started)
        return items

    def _write_outputs(self, items: list[Item]) -> None:
        """Each image's output files, side by side on the writer threads (core/outputs/output_writers.py);
        returns once every one is in place or failed, so its line comes after its file."""
        adapter, output_dir = self.model.adapter, self.output_dir
        no_files = all(item.result.image is None for item in items)  # e.g. classification: fields only
        outcomes = self.writers.each(
            lambda item: adapter.write(item.result, self._meta(item), output_dir), items, here=no_files
        )
        for item, outcome in zip(items, outcomes):  # in scan order, once no write is running any more
            if isinstance(outcome, OSError) and is_name_problem(outcome):
                item.result, item.error = None, name_problem_words(outcome)
            elif isinstance(outcome, OSError):  # the disk or the folder: every image would fail
                folder = OutputFolder.at(output_dir)
                folder.check_still_ours()  # deleted, moved or replaced: that sentence, not the write's
                raise BatchLensError(write_error(outcome, folder.path)) from None
            elif isinstance(outcome, Exception):
                raise outcome

    def _writes_into_input(self, item: Item) -> bool:
        """An output image mirrors the input tree under the output folder; when the input folder sits
        inside the output folder, `in/x.png` of the input would be written over the input's `x.png`."""
        if self.input_dir is None or item.result.image is None:
            return False
        target = output_path_for(OutputFolder.at(self.output_dir).path, item.candidate.rel).resolve()
        return target.is_relative_to(self.input_dir)

    def _infer(self, module, batch: torch.Tensor, device: torch.device, whole: bool = False):
        limit = self.image_timeout
        if self.precision == "auto":  # once, on the first batch (core/run/precision.py)
            task = self.model.adapter.task
            self.precision_check = decide_precision(module, batch, device, task, self.channels_last)
            self.precision = self.precision_check.chosen
        started = time.perf_counter()
        settings = (self.precision, self.channels_last, whole)
        try:
            outputs = call_with_timeout(infer, limit, module, batch, device, *settings)
        except Exception as exc:
            if self.uncompiled is None or is_out_of_memory(exc):
                raise
            # torch.compile could not build this model here (no C++ compiler, an unsupported op):
            # the run goes on with the model as loaded, and says so once.
            self.compile_failed = describe_error(exc)
            self.model.module, module, self.uncompiled = self.uncompiled, self.uncompiled, None
            outputs = call_with_timeout(infer, limit, module, batch, device, *settings)
        self.uncompiled = None  # a forward worked: compiling is behind us
        if self.first_forward_seconds is None:  # with --compile, this is where compiling happens
            self.first_forward_seconds = time.perf_counter() - started
        return outputs

    def _forward(self, model: LoadedModel, group: list[Item], batch: torch.Tensor | None = None) -> None:
        if self.one_at_a_time and len(group) > 1:  # learnt on an earlier batch: no failed try per batch
            del batch
            return self._forward_singly(model, group)
        try:
            outputs, whole = self._run_group(model, group, batch)
        except ForwardTimeout as exc:  # not tried again image by image: that could take as long again
            for item in group:
                item.error = str(exc)
            return
        except Exception as exc:
            # Keep only words: the traceback holds the failed forward's tensors until this block ends.
            outputs, whole = ForwardFailure(describe_error(exc), is_out_of_memory(exc)), False
        del batch
        if isinstance(outputs, ForwardFailure):  # out of memory: recovered outside the except block
            outputs = self._after_failure(model, group, outputs)
            if outputs is None:
                return
        elif whole:
            self._postprocess_batch(model, group, outputs)
            del outputs
            return
        self._postprocess_each(model, group, outputs)
        del outputs

    def _run_group(
        self, model: LoadedModel, group: list[Item], batch: torch.Tensor | None
    ) -> tuple[list | torch.Tensor | ForwardFailure, bool]:
        """The group's forward: its outputs and whether they are the batch's whole output (for a task
        that reads a batch at once), or the failure when they cannot be matched to the images."""
        if batch is None:
            batch = torch.stack([item.tensor for item in group])
        # A task that reads a whole batch at once gets the batch's output unsplit (one tensor).
        whole = model.adapter.postprocess_batch is not None and isinstance(batch, torch.Tensor)
        outputs = self._infer(model.module, batch, model.device, whole)
        del batch
        if whole and not (isinstance(outputs, torch.Tensor) and outputs.dim() > 0):
            outputs, whole = split_on_cpu(outputs, len(group)), False
        if len(outputs) != len(group):  # which row is whose cannot be known: none is used
            return ForwardFailure(f"it returned {len(outputs)} result(s) for {len(group)} image(s)"), False
        return outputs, whole

    def _after_failure(self, model: LoadedModel, group: list[Item], failure: ForwardFailure) -> list | None:
        """Out of memory: the recovery ladder's outputs, one per image (None where even it failed).
        Another failure: the group image by image (None: nothing left to postprocess)."""
        if failure.out_of_memory:
            outcomes = self.recovery.recover(
                model.module,
                [item.tensor for item in group],
                self._infer,
                [item.decoded.original_size for item in group],
                failure.words,
            )
            outputs = []
            for item, outcome in zip(group, outcomes):
                item.recovered, item.error = outcome.steps, outcome.error
                outputs.append(outcome.output)
            return outputs
        if len(group) > 1:  # find the image the model fails on; the others still get results
            self._forward_singly(model, group)
            if any(item.result is not None for item in group):  # the batch failed, not its images
                self.one_at_a_time = f"a batch of {len(group)} failed ({failure.words})"
            return None
        group[0].error = f"the model failed on this image ({failure.words})"
        return None

    def _postprocess_each(self, model: LoadedModel, group: list[Item], outputs: list) -> None:
        for item, output in zip(group, outputs):
            if output is None:
                continue  # out of memory even after recovery: item.error says so
            if not all_finite(output):
                item.error = NOT_FINITE
                continue
            try:
                result = model.adapter.postprocess(output, self._meta(item))
            except Exception as exc:
                item.error = f"its result could not be read ({type(exc).__name__}: {exc})"
                continue
            self._keep(item, result)

    def _postprocess_batch(self, model: LoadedModel, group: list[Item], output: torch.Tensor) -> None:
        """Every result of a batch from one call (the adapter's postprocess_batch); an image whose row
        holds NaN or infinity gets its error, its neighbours their results."""
        rows = output.reshape(len(group), -1)
        finite = torch.isfinite(rows).all(dim=1).tolist() if rows.is_floating_point() else [True] * len(group)
        try:
            results = model.adapter.postprocess_batch(output, [self._meta(item) for item in group])
        except Exception as exc:
            for item in group:
                item.error = f"its result could not be read ({type(exc).__name__}: {exc})"
            return
        for item, ok, result in zip(group, finite, results):
            if ok:
                self._keep(item, result)
            else:
                item.error = NOT_FINITE

    @staticmethod
    def _keep(item: Item, result: TaskResult) -> None:
        where = non_finite(result.fields)
        if where:  # strict JSON has no NaN: an error line, never a line readers reject
            item.error = f"its result holds NaN or infinity ({where})"
        else:
            item.result = result

    def _forward_singly(self, model: LoadedModel, group: list[Item]) -> None:
        for item in group:
            self._forward(model, [item], [item.tensor] if model.takes_list else item.tensor.unsqueeze(0))

    @staticmethod
    def _meta(item: Item) -> ImageMeta:
        shape = item.tensor.shape if item.tensor is not None else None
        input_size = (shape[-1], shape[-2]) if shape is not None else item.decoded.original_size
        return ImageMeta(item.candidate.rel, item.decoded.original_size, input_size)
