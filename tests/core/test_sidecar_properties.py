"""The sidecar NAME.json is a file a user hands us: property tests of its reader (hypothesis).

Whatever the file holds (any bytes, any JSON, any value under a known key) reading it either gives a
Sidecar or raises BatchLensError with one sentence naming the file, never another exception; and a
sidecar that states a preprocessing reads back as that very preprocessing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from batchlens.core.errors import BatchLensError  # noqa: E402
from batchlens.core.models.preprocessing import INTERPOLATIONS, Preprocessing  # noqa: E402
from batchlens.core.models.sidecar import KNOWN_KEYS, Sidecar, parse_sidecar, read_sidecar  # noqa: E402

SOURCE = "model.json"
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON as json.loads gives it: huge integers stay int, NaN/Infinity literals and 1e400 become floats.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=0, max_value=1, exclude_min=True)  # the fractions crop_pct and mean/std take
    | st.sampled_from([0, 1, 2, 3, 224, 5e-324, 1e-300, 1e300])
    | st.text(max_size=12)
    | st.sampled_from(["RGB", "l", " bgr ", "0-255", "0-1", "bicubic", "Image-to-Image", "classification"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
# Mostly the keys a sidecar may have, so the values reach the checks of each key.
sidecars = st.dictionaries(st.sampled_from(sorted(KNOWN_KEYS)), json_values, max_size=8) | st.dictionaries(
    st.text(max_size=10), json_values, max_size=4
)


def assert_refusal(message: str, name: str | Path) -> None:
    """One line that names the file and ends a sentence. (Not assert_one_sentence's full-stop rule: the
    message may quote a key the user wrote, and a key may itself hold ". A".)"""
    assert message.startswith(f"{name}: ") and message.endswith("."), message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message


def read_or_refuse(call, *args):
    """A Sidecar, or None when the one documented error was raised with one sentence naming SOURCE."""
    try:
        return call(*args)
    except BatchLensError as exc:
        assert_refusal(str(exc), SOURCE)
        return None


@pytest.mark.parametrize(
    "data",
    [
        {"task": "x", "rescale": 10**400},  # JSON keeps it an int that no float can hold
        {"task": "x", "mean": [10**400, 0, 0], "std": [1, 1, 1]},
        {"task": "x", "crop": [2, 2], "crop_pct": 5e-324},  # a resize to infinity
        {"task": "x", "bad\nkey": 1},  # a key's new line must not split the message
    ],
    ids=["huge int", "huge int in a list", "tiny crop_pct", "new line in a key"],
)
def test_what_hypothesis_found_is_refused_in_one_sentence(data):
    with pytest.raises(BatchLensError) as refused:
        parse_sidecar(data, SOURCE)
    assert_refusal(str(refused.value), SOURCE)


@FAST
@given(data=sidecars)
def test_any_json_object_is_read_or_refused_in_one_sentence(data):
    sidecar = read_or_refuse(parse_sidecar, data, SOURCE)
    if sidecar is not None:
        assert isinstance(sidecar, Sidecar) and isinstance(sidecar.task, str)
        preprocessing = sidecar.preprocess()
        assert preprocessing.std is None or all(math.isfinite(x) and x > 0 for x in preprocessing.std)


@FAST
@given(data=json_values)
def test_any_json_value_is_read_or_refused_in_one_sentence(data):
    read_or_refuse(parse_sidecar, data, SOURCE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sidecars")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=200) | sidecars.map(lambda d: json.dumps(d).encode()))
def test_any_bytes_in_the_file_are_read_or_refused_in_one_sentence(folder: Path, content: bytes):
    path = folder / SOURCE
    path.write_bytes(content)
    try:
        read_sidecar(path)
    except BatchLensError as exc:
        assert_refusal(str(exc), path)


positive_sizes = st.integers(min_value=1, max_value=1024)
means = st.lists(st.floats(min_value=0, max_value=1), min_size=3, max_size=3)
stds = st.lists(st.floats(min_value=1e-3, max_value=1), min_size=3, max_size=3)


@st.composite
def preprocessings(draw) -> Preprocessing:
    """Any preprocessing a sidecar can state."""
    kind = draw(st.sampled_from(["none", "short", "exact", "cover"]))
    resize = {
        "none": None,
        "short": (draw(positive_sizes),),
        "exact": (draw(positive_sizes), draw(positive_sizes)),
        "cover": (draw(positive_sizes), draw(positive_sizes)),
    }[kind]
    max_size = draw(st.none() | st.integers(min_value=1, max_value=2048)) if kind == "short" else None
    crop = draw(st.none() | st.tuples(positive_sizes, positive_sizes))
    normalised = draw(st.booleans())
    return Preprocessing(
        resize=resize,
        max_size=max_size,
        keep_ratio=kind == "cover",
        crop=crop,
        interpolation=draw(st.sampled_from(sorted(INTERPOLATIONS))),
        antialias=draw(st.booleans()),
        rescale=draw(st.sampled_from([1 / 255, 1.0, 2 / 255])),
        mean=tuple(draw(means)) if normalised else None,
        std=tuple(draw(stds)) if normalised else None,
        channel_order=draw(st.sampled_from(["RGB", "BGR"])),
        color_mode="RGB",
        source=SOURCE,
    )


@FAST
@given(preprocessing=preprocessings(), task=st.sampled_from(["classification", "segmentation", "detection"]))
def test_a_stated_preprocessing_reads_back_as_itself(preprocessing: Preprocessing, task: str):
    """to_sidecar() (what the window's sidecar dialog writes) read back through the file's JSON gives
    the same preprocessing; rescale is not written when mean/std replace it."""
    text = json.dumps({"task": task, **preprocessing.to_sidecar()})
    sidecar = parse_sidecar(json.loads(text), SOURCE)
    expected = replace(preprocessing, rescale=1 / 255) if preprocessing.mean is not None else preprocessing
    assert sidecar.preprocess() == expected
    assert sidecar.task == task and sidecar.states_preprocessing


@FAST
@given(
    labels=st.none() | st.lists(st.text(max_size=10), max_size=5),
    input_size=st.none() | st.tuples(positive_sizes, positive_sizes),
    arch=st.none() | st.text(min_size=1, max_size=10),
    description=st.text(max_size=20),
    task=st.sampled_from(["Image-to-Image", "image to image", " Classification "]),
)
def test_the_plain_keys_of_a_sidecar_read_back(labels, input_size, arch, description, task):
    data = {"task": task, "description": description}
    for key, value in (("labels", labels), ("input_size", input_size), ("arch", arch)):
        if value is not None:
            data[key] = list(value) if isinstance(value, tuple) else value
    sidecar = parse_sidecar(json.loads(json.dumps(data)), SOURCE)
    assert sidecar.task in ("image_to_image", "classification")
    assert sidecar.labels == labels and sidecar.arch == arch and sidecar.description == description
    assert sidecar.input_size == input_size
    if input_size:
        assert sidecar.preprocess().resize == input_size
