"""Classification reads a batch's scores at once: the same results as image by image."""

from __future__ import annotations

import pytest
import torch

from batchlens.core.models.hf import HFMultiLabelAdapter
from batchlens.core.tasks import make_adapter
from batchlens.core.tasks.base import ImageMeta

META = ImageMeta("a.jpg", (64, 48), (32, 32))


def test_a_batch_of_scores_gives_what_each_image_gives_alone():
    torch.manual_seed(0)
    logits = torch.randn(6, 1000) * 4
    for adapter in (make_adapter("classification", transform=None), HFMultiLabelAdapter(transform=None)):
        batch = adapter.postprocess_batch(logits, [META] * 6)
        alone = [adapter.postprocess(row, META) for row in logits]
        assert [r.fields for r in batch] == [r.fields for r in alone]
        assert len(batch[0].fields["top"]) == 5


def test_labels_that_do_not_match_the_scores_are_refused():
    adapter = make_adapter("classification", transform=None, labels=["a", "b"])
    with pytest.raises(ValueError, match="3 scores but there are 2 labels"):
        adapter.postprocess_batch(torch.zeros(2, 3), [META] * 2)
