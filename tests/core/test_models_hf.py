"""Hugging Face model folders, end to end through `batchlens run`, checked against transformers' own
pipelines and post-processing on the same image files. The models are tiny, random and seeded, saved
with save_pretrained (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.core.hostile import assert_one_sentence
from tests.core.modelkit import read_jsonl, run_cli

transformers = pytest.importorskip("transformers")


def _spread(module: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Random heads with some spread, so labels, scores and boxes differ from image to image (at
    transformers' initialisation every output is nearly the same)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    images = root / "in"
    images.mkdir()
    rng = np.random.default_rng(5)
    for name, (w, h) in (("a.png", (70, 50)), ("b.jpg", (90, 120)), ("c.png", (64, 64))):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 128)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / name, quality=95)
    torch.manual_seed(0)
    t = transformers
    vit = t.ViTForImageClassification(
        t.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            num_labels=3,
            id2label={0: "cat", 1: "dog", 2: "fox"},
            label2id={"cat": 0, "dog": 1, "fox": 2},
        )
    )
    _spread(vit.classifier, 1)
    vit.save_pretrained(root / "vit")
    t.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    backbone = t.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )
    detr = t.DetrForObjectDetection(
        t.DetrConfig(
            use_timm_backbone=False,
            backbone_config=backbone,
            use_pretrained_backbone=False,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=16,
            decoder_ffn_dim=16,
            num_queries=8,
            num_labels=3,
            id2label={0: "car", 1: "bus", 2: "van"},
            label2id={"car": 0, "bus": 1, "van": 2},
        )
    )
    _spread(detr.class_labels_classifier, 2)
    _spread(detr.bbox_predictor, 3)
    detr.save_pretrained(root / "detr")
    t.DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 80}).save_pretrained(root / "detr")
    resnet = t.RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    rtdetr = t.RTDetrForObjectDetection(
        t.RTDetrConfig(
            backbone_config=resnet,
            use_pretrained_backbone=False,
            encoder_hidden_dim=16,
            encoder_in_channels=[16, 16, 16],
            feat_strides=[8, 16, 32],
            d_model=16,
            encoder_ffn_dim=16,
            decoder_ffn_dim=16,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            decoder_layers=1,
            encoder_layers=1,
            num_queries=10,
            decoder_in_channels=[16, 16, 16],
            num_feature_levels=3,
            num_denoising=0,
            num_labels=3,
            id2label={0: "car", 1: "bus", 2: "van"},
            label2id={"car": 0, "bus": 1, "van": 2},
        )
    )
    _spread(rtdetr.model.decoder.class_embed, 6)
    _spread(rtdetr.model.decoder.bbox_embed, 7)
    rtdetr.save_pretrained(root / "rtdetr")
    t.RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "rtdetr")
    seg = t.SegformerForSemanticSegmentation(
        t.SegformerConfig(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[8, 16],
            num_attention_heads=[1, 1],
            decoder_hidden_size=16,
            num_labels=3,
            patch_sizes=[7, 3],
            strides=[4, 2],
            mlp_ratios=[2, 2],
            id2label={0: "sky", 1: "road", 2: "tree"},
            label2id={"sky": 0, "road": 1, "tree": 2},
        )
    )
    _spread(seg.decode_head, 4, scale=1.0)
    torch.nn.init.zeros_(seg.decode_head.classifier.bias)
    seg.save_pretrained(root / "seg")
    t.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "seg")
    convnext = t.ConvNextConfig(
        hidden_sizes=[8, 16, 16, 16],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    upernet = t.UperNetForSemanticSegmentation(
        t.UperNetConfig(
            backbone_config=convnext,
            hidden_size=16,
            use_auxiliary_head=False,
            num_labels=3,
            id2label={0: "sky", 1: "road", 2: "tree"},
            label2id={"sky": 0, "road": 1, "tree": 2},
        )
    )
    _spread(upernet.decode_head, 5, scale=1.0)
    torch.nn.init.zeros_(upernet.decode_head.classifier.bias)
    upernet.save_pretrained(root / "upernet")
    t.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(root / "upernet")
    return root


def _run(folder: Path | str, out: Path, *flags, inputs: Path | None = None) -> list[dict]:
    inputs = inputs or Path(folder).parent / "in"
    assert run_cli("--model", folder, "--input", inputs, "--output", out, *flags) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["status"] for r in records] == ["ok"] * 3, records
    return records


def _image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@pytest.mark.parametrize("kind", ["single", "multi"])  # softmax; sigmoid for multi-label models
def test_classification_matches_the_pipeline(hf, tmp_path, kind):
    folder = hf / "vit"
    if kind == "multi":
        folder = tmp_path / "vit-multi"
        folder.mkdir()
        for name in ("model.safetensors", "preprocessor_config.json"):
            (folder / name).write_bytes((hf / "vit" / name).read_bytes())
        config = json.loads((hf / "vit" / "config.json").read_text())
        config["problem_type"] = "multi_label_classification"
        (folder / "config.json").write_text(json.dumps(config))
    records = _run(folder, tmp_path / "out", "--batch-size", "3", inputs=hf / "in")
    pipe = transformers.pipeline("image-classification", model=str(folder), device="cpu")
    worst = 0.0
    for record in records:
        theirs = pipe(_image(hf / "in" / record["image"]), top_k=3)
        assert [t["label"] for t in theirs] == [o["label"] for o in record["top"]]
        worst = max(worst, *(abs(t["score"] - o["score"]) for t, o in zip(theirs, record["top"])))
    assert worst < 1e-4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    words = summary["preprocessing"]["description"]
    assert "exactly 32x32" in words and "mean 0.5, 0.5, 0.5" in words and "ViTImageProcessor" in words
    if kind == "multi":
        assert sum(o["score"] for o in records[0]["top"]) > 1.01, "sigmoid scores do not sum to one"
    print(f"HF ViT classification ({kind}-label): max |score diff| vs pipeline {worst:.2e}")


@pytest.mark.parametrize("name", ["detr", "rtdetr"])  # DETR (softmax), RT-DETR (sigmoid, top-k)
def test_detection_matches_the_processor_post_processing(hf, tmp_path, name):
    records = _run(hf / name, tmp_path / "out", "--min-score", "0.2")
    model = transformers.AutoModelForObjectDetection.from_pretrained(hf / name).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(hf / name)
    pipe = transformers.pipeline("object-detection", model=str(hf / name), device="cpu")
    worst_box = worst_score = 0.0
    total = 0
    for record in records:
        image = _image(hf / "in" / record["image"])
        with torch.no_grad():
            out = model(**processor(images=image, return_tensors="pt"))
        theirs = processor.post_process_object_detection(out, threshold=0.2, target_sizes=[image.size[::-1]])[
            0
        ]
        order = theirs["scores"].argsort(descending=True, stable=True)
        # BatchLens keeps boxes inside the image (random heads put some corners outside)
        theirs["boxes"][:, 0::2] = theirs["boxes"][:, 0::2].clamp(0, image.width)
        theirs["boxes"][:, 1::2] = theirs["boxes"][:, 1::2].clamp(0, image.height)
        ours = record["detections"]
        assert len(ours) == len(order) > 0
        total += len(ours)
        for det, i in zip(ours, order.tolist()):
            assert det["label"] == model.config.id2label[int(theirs["labels"][i])]
            worst_score = max(worst_score, abs(det["score"] - float(theirs["scores"][i])))
            worst_box = max(worst_box, *(abs(a - float(b)) for a, b in zip(det["box"], theirs["boxes"][i])))
        # the pipeline (which rounds boxes to whole pixels) finds the same labels
        piped = pipe(image, threshold=0.2)
        assert sorted(p["label"] for p in piped) == sorted(d["label"] for d in ours)
    assert worst_score <= 5e-5 + 1e-6  # the JSONL keeps 4 decimals
    assert worst_box <= 5e-3 + 1e-4  # ... and boxes to 0.01 px
    coco = json.loads((tmp_path / "out" / "detections.coco.json").read_text())
    assert len(coco["annotations"]) == total
    assert {c["name"] for c in coco["categories"]} >= {d["label"] for r in records for d in r["detections"]}
    print(f"HF {name} detection: {total} boxes, max |box diff| {worst_box:.4f} px, score {worst_score:.1e}")


@pytest.mark.parametrize("name", ["seg", "upernet"])  # SegFormer, UperNet (ConvNeXt backbone)
def test_segmentation_matches_the_pipeline(hf, tmp_path, name):
    records = _run(hf / name, tmp_path / "out")
    pipe = transformers.pipeline("image-segmentation", model=str(hf / name), device="cpu")
    labels = {0: "sky", 1: "road", 2: "tree"}
    for record in records:
        image = _image(hf / "in" / record["image"])
        mask = np.asarray(Image.open(tmp_path / "out" / record["mask"]))
        assert mask.shape == (image.height, image.width)
        theirs = pipe(image, subtask="semantic")
        assert {t["label"] for t in theirs} == {labels[int(v)] for v in np.unique(mask)}
        for t in theirs:
            index = next(i for i, name in labels.items() if name == t["label"])
            assert np.array_equal(np.asarray(t["mask"]) > 0, mask == index)
    assert any(len(r["classes"]) > 1 for r in records)  # the masks are not trivially one class


def test_remote_code_unknown_types_and_broken_folders_are_refused(hf, tmp_path, capsys):
    config = json.loads((hf / "vit" / "config.json").read_text())
    weights = (hf / "vit" / "model.safetensors").read_bytes()
    processor = (hf / "vit" / "preprocessor_config.json").read_bytes()

    def folder(name: str, config: dict, weights: bytes | None = weights, processor=processor):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        for file, data in (("model.safetensors", weights), ("preprocessor_config.json", processor)):
            if data is not None:
                (path / file).write_bytes(data)
        return path

    cases = [
        (folder("remote", {**config, "auto_map": {"AutoModel": "x.Y"}}), "never runs downloaded code"),
        (folder("unknown", {**config, "model_type": "made_up_net"}), "'made_up_net' is unknown"),
        (folder("text", {**config, "architectures": ["BertForMaskedLM"]}), "is not a model BatchLens runs"),
        (folder("pickled", config, weights=None), "only from safetensors"),
        (folder("bare", config, processor=None), "no preprocessor_config.json"),
        (folder("damaged", config, weights=weights[: len(weights) // 2]), "could not load this model"),
    ]
    for path, words in cases:
        assert run_cli("--model", path, "--input", hf / "in", "--output", tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_hf_cache_listing_and_offline_sentence(hf, tmp_path, monkeypatch, capsys):
    """A fake cache laid out as the hub lays it out: listed with its task without loading, loadable by
    hf:ORG/NAME, and one sentence for a model that is not there while offline."""
    from batchlens.cli import main as cli_main
    from batchlens.core.models import list_models

    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny-vit" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((hf / "vit" / name).read_bytes())
    (hub / "models--acme--tiny-vit" / "refs").mkdir()
    (hub / "models--acme--tiny-vit" / "refs" / "main").write_text("0123abc")
    text = hub / "models--acme--bert" / "snapshots" / "1"
    text.mkdir(parents=True)
    (text / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = [m for m in list_models() if m.source == "huggingface"]
    assert [(m.id, m.task) for m in cached] == [("hf:acme/tiny-vit", "classification")]
    assert cli_main(["models", "tiny"]) == 0
    assert "hf:acme/tiny-vit" in capsys.readouterr().out
    records = _run(snapshot, tmp_path / "by-path", inputs=hf / "in")
    by_name = tmp_path / "by-name"
    assert run_cli("--model", "hf:acme/tiny-vit", "--input", hf / "in", "--output", by_name) == 0
    assert [r["top"] for r in read_jsonl(by_name / "predictions.jsonl")] == [r["top"] for r in records]
    capsys.readouterr()
    assert run_cli("--model", "hf:acme/missing", "--input", hf / "in", "--output", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "hf download acme/missing --local-dir missing" in err
    assert len(err.strip().splitlines()) == 1


def test_a_hub_name_downloads_once_through_huggingface_hubs_own_code(hf, tmp_path, fake_hub, capsys):
    """hf:ORG/NAME against a hub on this machine: huggingface_hub's snapshot_download really fetches
    the files (only the patterns BatchLens needs), the run equals the same folder run by path, and a
    second run takes the cached copy without asking the hub for a file."""
    folder = tmp_path / "repo"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (folder / name).write_bytes((hf / "vit" / name).read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"old weights: never fetched")
    fake_hub.add_folder("acme/tiny-vit", folder)
    by_path = _run(hf / "vit", tmp_path / "by-path", inputs=hf / "in")

    records = _run("hf:acme/tiny-vit", tmp_path / "by-name", inputs=hf / "in")
    assert [r["top"] for r in records] == [r["top"] for r in by_path]
    fetched = sorted(
        r.rsplit("/", 1)[1] for r in fake_hub.requests if r.startswith("GET /acme/tiny-vit/resolve/")
    )
    assert fetched == ["config.json", "model.safetensors", "preprocessor_config.json"]
    summary = json.loads((tmp_path / "by-name" / "summary.json").read_text())
    assert summary["model"] == "hf:acme/tiny-vit"

    fake_hub.requests.clear()
    again = _run("hf:acme/tiny-vit", tmp_path / "again", inputs=hf / "in")
    assert [r["top"] for r in again] == [r["top"] for r in by_path]
    assert fake_hub.requests == [], "the cached copy is used as it is"


def test_a_download_stopped_after_its_config_is_finished_not_run_half(
    hf, tmp_path, fake_hub, monkeypatch, capsys
):
    """config.json comes first: a download cancelled or cut off after it leaves a snapshot without
    weights. That is no model yet: offline it says so, online the next run fetches what is missing."""
    fake_hub.add_folder("acme/tiny-vit", hf / "vit")
    snapshot = (
        tmp_path
        / "hf-cache"
        / "models--acme--tiny-vit"
        / "snapshots"
        / "0123456789abcdef0123456789abcdef01234567"
    )
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((hf / "vit" / "config.json").read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(snapshot.name)
    from batchlens.core.models import needs_download

    assert needs_download("hf:acme/tiny-vit")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_cli("--model", "hf:acme/tiny-vit", "--input", hf / "in", "--output", tmp_path / "off") == 2
    assert "only part of it is in the Hugging Face cache" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    records = _run("hf:acme/tiny-vit", tmp_path / "on", inputs=hf / "in")
    assert [r["top"] for r in records] == [
        r["top"] for r in _run(hf / "vit", tmp_path / "by-path", inputs=hf / "in")
    ]
    assert any(r.endswith("/model.safetensors") for r in fake_hub.requests) and not needs_download(
        "hf:acme/tiny-vit"
    )


def test_a_hub_download_that_fails_says_what_to_do(hf, tmp_path, fake_hub, monkeypatch, capsys):
    """A wrong name is not a network problem, a gated model needs its conditions accepted, and only a
    failed connection asks whether this computer is offline: each one sentence, through the real code."""
    from huggingface_hub import constants

    def error_of(model: str) -> str:
        capsys.readouterr()
        assert (
            run_cli("--model", model, "--input", hf / "in", "--output", tmp_path / model.replace("/", "-"))
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    err = error_of("hf:acme/no-such-model")
    assert "the Hugging Face hub has no model named acme/no-such-model" in err and "offline" not in err
    assert_one_sentence(err.removeprefix("batchlens: "), "hf:acme/no-such-model")

    fake_hub.add_folder("acme/gated", hf / "vit")
    fake_hub.gated.add("acme/gated")
    err = error_of("hf:acme/gated")
    assert (
        "accept their conditions" in err
        and f"{constants.ENDPOINT}/acme/gated" in err
        and "offline" not in err
    )
    assert_one_sentence(err.removeprefix("batchlens: "), "hf:acme/gated")

    from tests.core.test_models_catalogue import closed_port_url

    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url("").rstrip("/"))
    err = error_of("hf:acme/tiny-vit")
    assert "no connection: [Errno 111] Connection refused" in err and "Is this computer offline?" in err
    assert "hf download acme/tiny-vit --local-dir tiny-vit" in err
    assert not (tmp_path / "hf-cache" / "models--acme--tiny-vit" / "snapshots").exists()


def test_super_resolution_matches_model_and_processor(hf, tmp_path):
    """Swin2SR (transformers 5 has no image-to-image pipeline any more: its processor, its model, and the
    old pipeline's round(x * 255)); the padding the processor adds is cropped off."""
    t = transformers
    torch.manual_seed(1)
    config = t.Swin2SRConfig(
        image_size=16,
        patch_size=1,
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 1],
        window_size=4,
        upscale=2,
        upsampler="pixelshuffle",
        mlp_ratio=2.0,
    )
    model = t.Swin2SRForImageSuperResolution(config).eval()
    model.save_pretrained(tmp_path / "sr")
    t.Swin2SRImageProcessor(pad_size=8).save_pretrained(tmp_path / "sr")
    small = tmp_path / "small"  # (attention over every pixel: small images keep the test fast)
    small.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        _image(hf / "in" / name).reduce(4).save(small / name)
    records = _run(tmp_path / "sr", tmp_path / "out", inputs=small)
    processor = t.AutoImageProcessor.from_pretrained(tmp_path / "sr")
    for record in records:
        image = _image(small / record["image"])
        with torch.no_grad():
            out = model(**processor(images=image, return_tensors="pt")).reconstruction[0]
        out = out[:, : image.height * 2, : image.width * 2].clamp(0, 1)
        want = (out * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        ours = np.asarray(Image.open(tmp_path / "out" / record["output"]))
        assert ours.shape == (image.height * 2, image.width * 2, 3) and record["scale"] == 2
        assert np.array_equal(ours, want)


def test_download_progress_reaches_the_callback_and_can_cancel():
    """The bar huggingface_hub's snapshot_download builds from our tqdm class (with its own helper)
    reports bytes to the window's progress callback, not the duplicate transfer count, and stops."""
    import logging

    from huggingface_hub.utils.tqdm import _create_progress_bar

    from batchlens.core.models.errors import DownloadCancelled
    from batchlens.core.models.hf_cache import _reporting_bar

    seen = []
    cls = _reporting_bar(lambda done, total: seen.append((done, total)) or len(seen) < 3)
    make = dict(cls=cls, log_level=logging.WARNING, initial=0, unit="B", unit_scale=True)
    transfer = _create_progress_bar(name="t", desc="Downloading bytes", total=100, **make)
    written = _create_progress_bar(name="r", desc="Reconstructing", total=100, **make)
    transfer.update(40)
    written.update(30)
    written.update(30)
    assert seen == [(30, 100), (60, 100)]
    with pytest.raises(DownloadCancelled):
        written.update(40)


def test_cache_folder_follows_huggingface_hubs_order(tmp_path, monkeypatch):
    from batchlens.core.models.hf_cache import hub_cache_dir

    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hub_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache_dir() == tmp_path / "hub"
