"""`--precision auto`: reduced precision (autocast) only where this model's outputs stay within a
documented tolerance of float32, checked once per run on its first batch (as --fast-decode checks its
resize on the first images).

The first batch runs twice, in float32 and in the candidate precision, and the outputs are compared:

  classification  every image's top-1 class must agree, and no class probability (softmax of the
                  logits) may move by more than CLASSIFICATION_MAX_PROB_DIFF
  any other task  the largest difference of any output value, relative to the largest magnitude of
                  that output, must stay within OTHER_MAX_REL_DIFF (a detection model whose number of
                  boxes changes fails the check)

Within tolerance the run goes on in the candidate precision; otherwise in float32. The decision and
the measured difference go into summary.json ("precision_check"). Only CUDA tries a candidate
(`AUTO_CANDIDATE`): on the CPU reduced precision is rarely faster, so auto means float32 there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from batchlens.core.run.inference import infer

#: The precision `auto` tries on each device type (fp16 keeps 10 mantissa bits to bf16's 7: closer
#: to float32, and as fast on tensor cores). Devices not named here run float32.
AUTO_CANDIDATE: dict[str, str] = {"cuda": "fp16"}
#: Tolerances against float32 (docs/gpu.md, "Precision: auto").
CLASSIFICATION_MAX_PROB_DIFF = 0.01  # one percentage point of probability
OTHER_MAX_REL_DIFF = 0.01  # 1 % of the output's largest magnitude


@dataclass(frozen=True)
class PrecisionDecision:
    chosen: str  # "fp32", "fp16" or "bf16": what the run uses from its first batch on
    candidate: str | None  # the reduced precision tried (None: none tried on this device)
    checked_max_diff: float | None  # the measured difference (probability or relative), None: unchecked
    top1_agreement: tuple[int, int] | None  # classification: images whose top-1 agreed, of how many
    reason: str

    def to_json(self) -> dict:
        out = asdict(self)
        out["top1_agreement"] = list(self.top1_agreement) if self.top1_agreement else None
        return out


def decide_precision(
    module: nn.Module,
    batch: torch.Tensor | list[torch.Tensor],
    device: torch.device,
    task: str,
    channels_last: bool = False,
    candidate: str | None = None,
) -> PrecisionDecision:
    """Run `batch` in float32 and in `candidate` (default: AUTO_CANDIDATE for the device) and keep the
    candidate only if the outputs agree within this task's tolerance."""
    candidate = candidate or AUTO_CANDIDATE.get(device.type)
    if candidate is None:
        return PrecisionDecision("fp32", None, None, None, f"reduced precision is not tried on {device.type}")
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        return PrecisionDecision("fp32", candidate, None, None, f"autocast is not available on {device.type}")
    if candidate == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return PrecisionDecision("fp32", candidate, None, None, "this GPU does not support bf16")
    full = infer(module, batch, device, "fp32", channels_last, whole=True)
    try:
        reduced = infer(module, batch, device, candidate, channels_last, whole=True)
    except Exception as exc:  # an op without a reduced-precision kernel: float32 it is
        return PrecisionDecision("fp32", candidate, None, None, f"the model failed in {candidate} ({exc})")
    return compare_outputs(full, reduced, task, candidate)


def compare_outputs(full, reduced, task: str, candidate: str) -> PrecisionDecision:
    """The decision for outputs `full` (float32) and `reduced` (the candidate's), both on the CPU."""
    full_leaves, full_spec = tree_flatten(full)
    reduced_leaves, reduced_spec = tree_flatten(reduced)
    tensors = [
        (a.float(), b.float())
        for a, b in zip(full_leaves, reduced_leaves)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point()
    ]
    if full_spec != reduced_spec or any(a.shape != b.shape for a, b in tensors):
        return PrecisionDecision(
            "fp32", candidate, None, None, f"the outputs in {candidate} have another shape"
        )
    if not tensors:
        return PrecisionDecision("fp32", candidate, None, None, "the model gives no float outputs to compare")
    if any(not torch.isfinite(b).all() for _, b in tensors):
        return PrecisionDecision(
            "fp32", candidate, float("inf"), None, f"the outputs overflow in {candidate}"
        )
    if task == "classification" and len(tensors) == 1 and tensors[0][0].dim() == 2:
        logits_full, logits_reduced = tensors[0]
        diff = float((logits_full.softmax(1) - logits_reduced.softmax(1)).abs().max())
        same = int((logits_full.argmax(1) == logits_reduced.argmax(1)).sum())
        agreement = (same, logits_full.shape[0])
        ok = same == logits_full.shape[0] and diff <= CLASSIFICATION_MAX_PROB_DIFF
        limit = f"top-1 on {same} of {agreement[1]} images, max probability difference {diff:.2g} "
        limit += f"(tolerance: all top-1, {CLASSIFICATION_MAX_PROB_DIFF:g})"
        return PrecisionDecision(candidate if ok else "fp32", candidate, round(diff, 6), agreement, limit)
    diff = max(float((a - b).abs().max()) / max(float(a.abs().max()), 1e-6) for a, b in tensors)
    ok = diff <= OTHER_MAX_REL_DIFF
    reason = f"max relative difference {diff:.2g} (tolerance: {OTHER_MAX_REL_DIFF:g})"
    return PrecisionDecision(candidate if ok else "fp32", candidate, round(diff, 6), None, reason)


def precision_entries(cfg, pipeline) -> dict:
    """summary.json's "precision" (what the run used) and "precision_check" (how it was decided) for
    a run of `cfg` (a RunConfig) with `pipeline` (a BatchPipeline)."""
    if cfg.precision != "auto":
        check = PrecisionDecision(cfg.precision, None, None, None, "set by --precision")
    elif pipeline.precision_check is None:
        check = PrecisionDecision("fp32", None, None, None, "no batch ran, so nothing was checked")
    else:
        check = pipeline.precision_check
    return {"precision": check.chosen, "precision_check": {"asked": cfg.precision, **check.to_json()}}
