"""Property-based tests: arbitrary bytes and values given to the parsers and loaders give a result or the
documented error (CnnlabError; UsageError for recipe values), never another exception.

Each input is either wholly random or a valid file with a few bytes flipped, cut or inserted, so the
search reaches past the first check. `pytest --hypothesis-show-statistics` reports the cases run.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import pickle
import shutil
import struct
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnlab import data
from cnnlab.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.errors import CnnlabError, UsageError
from cnnlab.files import write_json
from cnnlab.loop import start_state
from cnnlab.models import create_model
from cnnlab.recipes import Recipe, get_recipe, parse_value, recipe_from_dict, with_overrides
from cnnlab.runs import ModelInfo, load_run, save_weights
from helpers import cifar_batch_bytes, idx_bytes

# Modest, so the whole suite stays quick; CNNLAB_FUZZ_EXAMPLES=5000 searches longer.
FUZZ = settings(max_examples=int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", 300)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                               max_size=4),
                    max_leaves=12)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with one to four bytes flipped, runs cut out, or random bytes put in."""
    raw = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if kind == "flip" and raw:
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del raw[at:]
    return bytes(raw)


# ---------------------------------------------------------------------------------------------------------
# IDX files, raw and gzipped
# ---------------------------------------------------------------------------------------------------------
VALID_IDX = idx_bytes(np.arange(3 * 4 * 5).reshape(3, 4, 5))


@st.composite
def idx_headers(draw) -> bytes:
    """A well-formed header (any type byte, any dimensions) over a payload that may or may not fit it."""
    dims = draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), max_size=5))
    head = struct.pack(">BBBB", 0, 0, draw(st.sampled_from([0x08, 0x08, 0x09, 0x0D])), len(dims))
    return head + struct.pack(f">{len(dims)}I", *dims) + draw(st.binary(max_size=300))


@FUZZ
@given(st.binary(max_size=400) | idx_headers() | mutated(VALID_IDX))
def test_parse_idx(raw):
    try:
        array = data.parse_idx(raw, "fuzz.idx")
    except CnnlabError as error:
        assert "fuzz.idx" in str(error)
        return event("refused")
    event("parsed")
    assert array.dtype == np.uint8 and array.size == len(raw) - 4 - 4 * raw[3]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.binary(max_size=400) | mutated(gzip.compress(VALID_IDX)))
def test_idx_file_reader(scratch, raw):
    path = scratch / "train-images-idx3-ubyte.gz"
    path.write_bytes(raw)
    try:
        array = data.parse_idx(data._read_bytes(path), str(path))
    except CnnlabError as error:
        assert str(path) in str(error)
        return event("refused")
    event("parsed")
    content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # what the file holds
    dims = struct.unpack(f">{content[3]}I", content[4:4 + 4 * content[3]])
    assert content[2] == 0x08 and array.dtype == np.uint8 and array.shape == dims  # the header's type and shape
    assert array.tobytes() == content[4 + 4 * len(dims):]  # and every byte after it, in order
    if content == VALID_IDX:
        assert np.array_equal(array, np.arange(3 * 4 * 5).reshape(3, 4, 5))


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 batches, through the restricted unpickler
# ---------------------------------------------------------------------------------------------------------
VALID_BATCH = cifar_batch_bytes(np.zeros((2, 3, 32, 32), np.uint8), np.array([3, 9]))

ARRAYS = hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.bool_]),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)) | \
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 3), st.just(3072)))
LABELS = st.lists(st.integers(-2**70, 2**70) | st.floats() | st.none() | st.text(max_size=3), max_size=4) | ARRAYS


@st.composite
def nearly_valid(draw) -> dict:
    """N×3072 uint8 images with about N integer labels, of any size."""
    n = draw(st.integers(0, 3))
    images = np.frombuffer(draw(st.binary(min_size=n * 3072, max_size=n * 3072)), np.uint8).reshape(n, 3072)
    labels = draw(st.lists(st.integers(-2**64, 2**64) | st.integers(0, 9), min_size=max(n - 1, 0), max_size=n + 1))
    return {"data": images, "labels": draw(st.just(labels) | st.just(np.array(labels[:1] * n)))}


@st.composite
def batches(draw) -> bytes:
    """A pickled dict shaped like a CIFAR batch, with arbitrary data and labels, under any pickle protocol."""
    batch = draw(nearly_valid() | st.fixed_dictionaries({"data": ARRAYS | JSON, "labels": LABELS | JSON}))
    batch.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=2)))
    return pickle.dumps(draw(st.just(batch) | JSON), protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=400) | batches() | mutated(VALID_BATCH))
def test_parse_cifar_batch(raw):
    try:
        images, labels = data.parse_cifar_batch(raw, "data_batch_1")
    except CnnlabError as error:
        assert "data_batch_1" in str(error)
        return event("refused")
    event("parsed")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)


# ---------------------------------------------------------------------------------------------------------
# Recipe overrides, as the command line gives them (text) and as the API may (any value)
# ---------------------------------------------------------------------------------------------------------
FIELDS = [f.name for f in dataclasses.fields(Recipe)]
HINTS = typing.get_type_hints(Recipe)


def typed_value(field: str):
    """A value of the field's own type, of any size: what gets past the type check to the range checks."""
    kinds = typing.get_args(HINTS[field]) or (HINTS[field],)
    return st.one_of(*[{int: st.integers(), float: st.floats(), bool: st.booleans(), str: st.text(max_size=12),
                        type(None): st.none()}[kind] for kind in kinds])


TYPED = st.sampled_from(FIELDS).flatmap(lambda field: st.tuples(st.just(field), typed_value(field)))
NUMBERS = st.sampled_from(["0", "-1", "1e999", "nan", "-inf", "1_000", " 7 ", "0x10", "2e-5", "4294967296",
                           "None", "true", "cuda:0", "cuda:٣", "../../etc", ".hidden", "a/b", "\ud800"])


@FUZZ
@given(st.sampled_from(FIELDS) | st.text(max_size=12), st.text(max_size=30) | NUMBERS)
def test_parse_value(field, text):
    try:
        value = parse_value(field, text)
    except UsageError:
        return event("refused")
    event("parsed")
    kinds = typing.get_args(HINTS[field]) or (HINTS[field],)
    assert type(value) in kinds  # exactly the field's type: no str for a number, no int for a bool
    spelled = text.strip().lower()
    if value is None:
        assert spelled in ("none", "null", "default")
    elif type(value) is bool:
        assert spelled in (("1", "true", "yes", "on") if value else ("0", "false", "no", "off"))
    elif type(value) is int:
        assert value == int(text)
    elif type(value) is float:
        assert value == float(text) or math.isnan(value) and math.isnan(float(text))
    else:
        assert value == text


def usable(recipe: Recipe) -> None:
    """What training does with a recipe's values must not fail for a recipe that was accepted."""
    assert recipe_from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    recipe.resolved()
    np.random.RandomState(recipe.split_seed)
    torch.Generator().manual_seed(recipe.seed)
    torch.device("cpu" if recipe.device == "auto" else recipe.device)
    assert Path(recipe.name).name == recipe.name and not recipe.name.startswith(".")  # a folder inside runs/
    os.fsencode(recipe.name)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), st.text(max_size=30) | NUMBERS | JSON,
                       max_size=4) |
       st.lists(TYPED, max_size=4).map(dict) | st.lists(TYPED, max_size=4).map(lambda kv: {k: str(v) for k, v in kv}))
def test_with_overrides(overrides):
    try:
        recipe = with_overrides(get_recipe("fashion-cnn"), overrides)
    except UsageError:
        return event("refused")
    event("accepted")
    usable(recipe)


@FUZZ
@given((st.dictionaries(st.sampled_from(FIELDS), JSON | NUMBERS, max_size=6) | st.lists(TYPED, max_size=6).map(dict))
       .map(lambda d: {**get_recipe("mnist-cnn").to_dict(), **d}) | JSON)
def test_recipe_from_dict(saved):
    try:
        recipe = recipe_from_dict(saved)
    except UsageError:
        return event("refused")
    event("accepted")
    usable(recipe)


# ---------------------------------------------------------------------------------------------------------
# The run loader: model.json, recipe.json and weights.safetensors, each tampered with in turn
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    """A small, valid run folder: an MLP on 4×4 grey images of 3 classes."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    run_dir.mkdir()
    write_json(run_dir / "recipe.json", get_recipe("mnist-mlp").resolved().to_dict())
    write_json(run_dir / "model.json", dataclasses.asdict(ModelInfo("mlp", (1, 4, 4), ("a", "b", "c"), "mnist")))
    save_weights(run_dir / "weights.safetensors", create_model("mlp", (1, 4, 4), 3))
    return run_dir


@st.composite
def safetensors_headers(draw) -> bytes:
    """A safetensors file whose header names arbitrary keys, dtypes, shapes and offsets."""
    keys = st.sampled_from(["dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias"]) | st.text(max_size=8)
    entry = st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X9"]),
        "shape": st.lists(st.integers(-1, 600), max_size=3),
        "data_offsets": st.lists(st.integers(-1, 5000), min_size=2, max_size=2)})
    header = json.dumps(draw(st.dictionaries(keys, entry | JSON, max_size=4))).encode()
    return struct.pack("<Q", len(header)) + header + draw(st.binary(max_size=600))


def safetensors_files(valid: bytes):
    """Random bytes, random headers, or ``valid`` with its header or anything in it mutated."""
    end = 8 + struct.unpack("<Q", valid[:8])[0]
    return st.binary(max_size=300) | safetensors_headers() | mutated(valid) | \
        mutated(valid[:end]).map(lambda header: header + valid[end:])


MODEL_FIELDS = {"model": st.sampled_from(["mlp", "cnn", "cnn-deep", "gpt"]), "dataset": st.text(max_size=8),
                "in_shape": st.lists(st.integers(-1, 70000) | st.integers(1, 40), max_size=4),
                "classes": st.lists(st.text(max_size=4), max_size=5), "format": st.just("cnnlab-run/0")}


def json_files(valid: bytes, typed: dict):
    """Random bytes, any JSON, or ``valid`` with bytes mutated or fields given any JSON value or a typed one."""
    fields = list(json.loads(valid))
    changes = st.dictionaries(st.sampled_from(fields), JSON, max_size=3) | \
        st.lists(st.sampled_from(list(typed)).flatmap(lambda k: st.tuples(st.just(k), typed[k])), max_size=3).map(dict)
    return st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()) | mutated(valid) | \
        changes.map(lambda d: json.dumps({**json.loads(valid), **d}).encode())


@pytest.mark.parametrize("name", ["model.json", "recipe.json", "weights.safetensors"])
@FUZZ
@given(data_=st.data())
def test_run_loader(name, run_template, data_):
    folder = run_template.parent / f"tampered-{name}"
    if not folder.exists():
        shutil.copytree(run_template, folder)
    valid = (run_template / name).read_bytes()
    files = {"weights.safetensors": lambda: safetensors_files(valid),
             "model.json": lambda: json_files(valid, MODEL_FIELDS),
             "recipe.json": lambda: json_files(valid, {field: typed_value(field) for field in FIELDS})}
    (folder / name).write_bytes(data_.draw(files[name]()))
    try:
        run = load_run(folder)
    except CnnlabError as error:
        assert type(error) is CnnlabError and str(folder) in str(error)  # a damaged file, not a usage error
        return event("refused")
    event("loaded")
    run.model(torch.zeros(1, *run.info.in_shape))


# ---------------------------------------------------------------------------------------------------------
# The checkpoint loader
# ---------------------------------------------------------------------------------------------------------
TINY = data.ImageSet(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.arange(4) % 3, ("a", "b", "c"))


@pytest.fixture(scope="module")
def checkpoint_template(tmp_path_factory) -> tuple[Path, bytes]:
    torch.manual_seed(0)
    state = start_state(create_model("mlp", (1, 4, 4), 3), get_recipe("fashion-cnn").resolved(), TINY)
    state.model(torch.rand(2, 1, 4, 4)).sum().backward()
    state.optimizer.step()  # Adam's moments exist
    path = tmp_path_factory.mktemp("checkpoint") / "checkpoint.safetensors"
    save_checkpoint(path, state, torch.device("cpu"), "data")
    return path, path.read_bytes()


@FUZZ
@given(st.data())
def test_checkpoint_loader(checkpoint_template, data_):
    path, valid = checkpoint_template
    path.write_bytes(data_.draw(safetensors_files(valid)))
    state = start_state(create_model("mlp", (1, 4, 4), 3), get_recipe("fashion-cnn").resolved(), TINY)
    try:
        load_checkpoint(path, state, torch.device("cpu"), "data")
    except CnnlabError as error:
        assert str(path) in str(error)
        return event("refused")
    event("loaded")
    state.model(torch.rand(2, 1, 4, 4)).sum().backward()
    state.optimizer.step()


# ---------------------------------------------------------------------------------------------------------
# The image loader: a real file of each format, mutated, then read and prepared as predict would
# ---------------------------------------------------------------------------------------------------------
def _image_file(fmt: str, mode: str) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(len(fmt) + len(mode))
    pixels = rng.integers(0, 255, (20, 14, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


IMAGE_FILES = [_image_file(fmt, mode) for fmt, mode in
               [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "RGB"), ("JPEG", "L"), ("GIF", "P"),
                ("BMP", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB")]]


@FUZZ
@given(raw=st.sampled_from(IMAGE_FILES).flatmap(mutated) | st.binary(max_size=300),
       method=st.sampled_from(["digit", "grey-fit", "crop"]))
def test_fuzz_image_loader(raw, method, tmp_path_factory):
    from cnnlab.images import prepare_file

    path = tmp_path_factory.mktemp("img") / "image"
    path.write_bytes(raw)
    shape = (3, 16, 16) if method == "crop" else (1, 28, 28)
    try:
        image = prepare_file(path, method, shape)
    except CnnlabError as error:
        event("refused")
        assert "\n" not in str(error) and str(path) in str(error)
        return
    event("read")
    assert image.dtype == torch.uint8 and tuple(image.shape) == shape
