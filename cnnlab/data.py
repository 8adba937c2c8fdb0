"""Data sets declared as data, and one path for all of them: find the files → (download → verify) → parse.

MNIST and Fashion-MNIST come as four gzipped IDX files; CIFAR-10 as one tar.gz of pickled batches, read by
an unpickler that admits only the plain types those batches hold, so a data file can never run code.
Images stay uint8 (N, C, H, W) until they reach the model.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import numbers
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from .errors import CnnlabError, hint


# ---------------------------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    name: str  # file name as published
    md5: str  # of the published file, as its authors list it
    size: int  # bytes, as published


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the key used on the command line and in folder names
    title: str
    format: str  # 'idx' (gzipped IDX files) or 'cifar-pickle' (pickled batches inside a tar.gz)
    image_shape: tuple[int, int, int]  # (channels, height, width)
    classes: tuple[str, ...]
    train_files: tuple[DataFile, ...]  # idx: (images, labels); cifar-pickle: the training batches
    test_files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order
    archive: DataFile | None = None  # what is downloaded when the files come packed in one archive
    archive_folder: str = ""  # the folder inside the archive that holds the files
    homepage: str = ""


DIGITS = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            title="MNIST",
            format="idx",
            image_shape=(1, 28, 28),
            classes=DIGITS,
            train_files=(
                DataFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
                DataFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
            ),
            test_files=(
                DataFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
                DataFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
            ),
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="fashion-mnist",
            title="Fashion-MNIST",
            format="idx",
            image_shape=(1, 28, 28),
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            train_files=(
                DataFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
                DataFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515),
            ),
            test_files=(
                DataFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102),
                DataFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148),
            ),
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        ),
        DatasetSpec(
            name="cifar10",
            title="CIFAR-10",
            format="cifar-pickle",
            image_shape=(3, 32, 32),
            classes=("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"),
            train_files=(
                DataFile("data_batch_1", "c99cafc152244af753f735de768cd75f", 31035704),
                DataFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec", 31035320),
                DataFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751", 31035999),
                DataFile("data_batch_4", "634d18415352ddfa80567beed471001a", 31035696),
                DataFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb", 31035623),
            ),
            test_files=(DataFile("test_batch", "40351d587109b95175f43aff81a1287e", 31035526),),
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
            archive=DataFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),
            archive_folder="cifar-10-batches-py",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise CnnlabError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}") from None


# ---------------------------------------------------------------------------------------------------------
# In-memory form
# ---------------------------------------------------------------------------------------------------------
ArrayLike = np.ndarray | torch.Tensor  # images or labels, as a Keras user or a PyTorch user holds them


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) with int64 labels (N,), and the names of the classes.

    Checked when made: a wrong dtype, rank, label count or label out of range is a one-line CnnlabError.
    Keras-style NumPy arrays come in through ``ImageSet.from_arrays``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.classes = class_names(self.classes)
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise CnnlabError(f"ImageSet images must be a uint8 tensor (N, C, H, W), not {_describe(self.images)}; "
                              "build one from NumPy arrays with ImageSet.from_arrays(images, labels, classes)")
        if (not isinstance(self.labels, torch.Tensor) or self.labels.ndim != 1
                or self.labels.dtype.is_floating_point or self.labels.dtype in (torch.bool, torch.uint8)):
            raise CnnlabError(f"ImageSet labels must be an int64 tensor (N,) of class numbers, not "
                              f"{_describe(self.labels)}; ImageSet.from_arrays also takes one-hot labels")
        self.labels = self.labels.long()
        if len(self.labels) != len(self.images):
            raise CnnlabError(f"ImageSet has {len(self.labels)} labels for {len(self.images)} images; "
                              "pass one label per image")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            bad = int(self.labels.max()) if int(self.labels.min()) >= 0 else int(self.labels.min())
            raise CnnlabError(f"ImageSet label {bad} is out of range for {len(self.classes)} classes "
                              f"(0–{len(self.classes) - 1}); pass every class name, in label order")

    @classmethod
    def from_arrays(cls, images: ArrayLike, labels: ArrayLike,
                    classes: Sequence[str] | int | None = None) -> ImageSet:
        """An ImageSet from the arrays a Keras user has, as ``keras.datasets`` gives them (``as_image_set``'s rule
        without a model to read the layout from).

        ``images``: (N, H, W) grey, or channels-last (N, H, W, C) with C = 1 or 3 — Keras's layout; an array
        whose last axis is not 1 or 3 is refused rather than guessed at (channels-first data is already
        cnnlab's layout: ``ImageSet(torch.from_numpy(images), …)``). Pixels by the input rule (``check_pixels``):
        uint8 0–255 as is, other integers in 0–255 cast, floats in [0, 1] (the course's ``/ 255``) scaled back to
        uint8. ``labels``: class numbers, (N,) or (N, 1) as CIFAR-10 gives them, or one-hot (N, K). ``classes``:
        the names in label order, or their count; by default "0", "1", … up to the largest label (or the one-hot
        width).
        """
        return as_image_set(np.asarray(images), labels, classes=classes)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageSet:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[indices], self.labels[indices], self.classes)


def _describe(value: object) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} {str(value.dtype).removeprefix('torch.')} of shape {tuple(value.shape)}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------
# The input rule: the pixels every door takes — fit, evaluate, predict, the studio, the servers, export
# ---------------------------------------------------------------------------------------------------------
PIXELS = "pass uint8 pixels 0–255 or floats in [0, 1]"
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)  # torch neither compares nor reduces these


def check_pixels(images: torch.Tensor) -> int:
    """The input rule, its one home: uint8 pixels 0–255, other integers within 0–255, or floats in [0, 1] (the
    course's ``/ 255``, done once). Returns what the network's input divides them by — 255 for integers, 1 for
    floats — so that it is float32 in [0, 1]; anything else (bool, values out of range, NaN) is a one-line
    CnnlabError naming the dtype and the values. NumPy arrays come here as tensors (``as_images``).

    uint8 is not looked at (no pass over the values, no wait for the device); other integers and floats are read
    in one pass where they lie, so a CUDA tensor is not copied to the host to be checked.
    """
    if images.dtype == torch.uint8:
        return 255
    dtype = str(images.dtype).removeprefix("torch.")
    integers = not (images.is_floating_point() or images.is_complex() or images.dtype == torch.bool)
    if not (integers or images.is_floating_point()):
        mask = " (a True/False mask: pass it as uint8 0 and 255)" if images.dtype == torch.bool else ""
        raise CnnlabError(f"images are {dtype}; {PIXELS}{mask}")
    top = 255 if integers else 1  # the largest pixel, and what the network's input divides them by
    if not images.numel():
        return top
    values = images.to(torch.int64) if images.dtype in _WIDE_UNSIGNED else images
    low, high = torch.stack(torch.aminmax(values)).tolist()  # one pass, one wait; NaN anywhere gives NaN for both
    if 0 <= low and high <= top:  # NaN fails
        return top
    raise CnnlabError(f"images are {dtype} with {_refused(values)}")


def _refused(values: torch.Tensor) -> str:
    """What a refused batch holds, what to pass, and the slip it most likely comes from, in the user's terms:
    floats 0–255 (the course's ``/ 255`` forgotten) or pixels already normalised (below 0, as torchvision's
    Normalize leaves them). NaN is named beside the range of the rest, not as a range "from nan to nan"."""
    integers = not values.is_floating_point()
    nan = not integers and bool(values.isnan().any())
    values = values[~values.isnan()] if nan else values
    if not values.numel():
        return f"NaN only; {PIXELS}"
    low, high = torch.stack(torch.aminmax(values)).tolist()
    found = f"values from {low} to {high}" if integers else f"values from {low:.4g} to {high:.4g}"
    found += " and NaN" if nan else ""
    if not integers and 0 <= low and 1 < high <= 255:
        return f"{found}; {PIXELS} (divide 0–255 pixels by 255 once, not twice, or pass them as uint8)"
    if not integers and low < 0 and high <= 1:
        return f"{found}; {PIXELS} (values below 0 look normalised: pass the pixels before normalising)"
    return f"{found}; {PIXELS}"


# ---------------------------------------------------------------------------------------------------------
# What a Keras user passes: arrays, (images, labels) tuples, channels-last or flat images, one-hot labels
# ---------------------------------------------------------------------------------------------------------
Data = ImageSet | tuple[ArrayLike, ArrayLike] | ArrayLike  # what fit, evaluate and split take as data


def class_names(classes: Sequence[str] | int) -> tuple[str, ...]:
    """Class names in label order; a count K names them "0" … "K-1", as Keras numbers its classes."""
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        if classes < 1:
            raise CnnlabError(f"classes={classes}: pass the number of classes (1 or more) or their names")
        return tuple(str(k) for k in range(int(classes)))
    return tuple(classes)  # type: ignore[arg-type]  # an Integral that is not an int: mypy cannot narrow it


def as_images(images: Data, in_shape: Sequence[int] | None = None, what: str = "the data") -> torch.Tensor:
    """``images`` as a batch (N, C, H, W), values untouched (the input rule, ``check_pixels``, reads them); of an
    ImageSet or an (images, labels) tuple, its images.

    cnnlab's layout passes as it is; Keras's is converted where the model's ``in_shape`` (C, H, W) makes it
    unambiguous: channels-last (N, H, W, C), grey (N, H, W), and for one channel flat rows (N, H·W). Without
    ``in_shape`` an array must be (N, H, W) or channels-last with C = 1 or 3 (``ImageSet.from_arrays``'s rule).
    Other arrays are a one-line CnnlabError naming the shape to pass; other tensors are left to the checks that
    follow (``check_images``, ``check_input``), which name both shapes. No images at all is a CnnlabError naming
    ``what``.
    """
    if isinstance(images, ImageSet):
        return _not_empty(images.images, what)
    if isinstance(images, tuple):  # Keras's (x, y): predicting needs only x
        images = images[0]
    if isinstance(images, torch.Tensor) and (in_shape is None or images.shape[1:] == tuple(in_shape)):
        return _not_empty(images, what)
    tensor = images if isinstance(images, torch.Tensor) else _shared_tensor(_numeric(images, "images"))
    _not_empty(tensor, what)
    shape, given = tuple(tensor.shape[1:]), tuple(tensor.shape)
    if in_shape is not None:
        channels, height, width = in_shape
        if channels == 1 and given == (1, height, width) and not isinstance(images, torch.Tensor):
            return tensor[:, None]  # Keras's x_test[:1]: one grey image (N, H, W), whichever way it is read
        if (shape == (channels, height, width) or given == (channels, height, width)
                or (tensor.ndim == 4 and shape != (height, width, channels))):
            return tensor  # cnnlab's layout; or one image, or other images, that check_images or check_input name
        if shape == (height, width, channels):  # Keras's channels-last
            return tensor.permute(0, 3, 1, 2)
        if channels == 1 and shape == (height, width):
            return tensor[:, None]
        if channels == 1 and shape == (height * width,):  # the course's reshape(-1, 784), for lab 2's network
            return tensor.reshape(-1, 1, height, width)
        flat = " (a flat row does not say its channel order)" if shape == (channels * height * width,) else ""
        raise CnnlabError(f"images of shape {given} do not fit the model's {channels}×{height}×{width} input{flat}: "
                          f"pass (N, {height}, {width}, {channels}) as Keras does, or "
                          f"(N, {channels}, {height}, {width})")
    if tensor.ndim == 3:
        tensor = tensor[..., None]  # (N, H, W) → (N, H, W, 1)
    if tensor.ndim != 4 or tensor.shape[-1] not in (1, 3):
        side = math.isqrt(tensor.shape[1]) if tensor.ndim == 2 else 0
        hint = (" looks channels-first: pass images.transpose(0, 2, 3, 1), or ImageSet(torch.from_numpy(images), "
                "labels, classes) as it is" if tensor.ndim == 4 and tensor.shape[1] in (1, 3) else
                f" are flat rows, which only a model from create_model can lay out: pass images.reshape(-1, {side}, "
                f"{side})" if side and side * side == tensor.shape[1] else "")
        raise CnnlabError(f"images of shape {given}{hint}; pass (N, H, W) or channels-last (N, H, W, C) with "
                          "C = 1 or 3")
    return tensor.permute(0, 3, 1, 2)


def _shared_tensor(array: np.ndarray) -> torch.Tensor:
    """``array``'s memory as a tensor, read-only arrays (np.frombuffer, a memmap opened 'r') too: cnnlab only reads
    the pixels (``to_input`` and indexing copy), so PyTorch's warning about writing to them would be noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


def _not_empty(images: torch.Tensor, what: str) -> torch.Tensor:
    """``images``, unless there are none: an empty batch would otherwise fail far from here, or train on nothing."""
    if images.ndim == 0 or not len(images):
        raise CnnlabError(f"{what} has no images (shape {tuple(images.shape)}): pass at least one image")
    return images


def as_image_set(data: Data, labels: ArrayLike | None = None, *, in_shape: Sequence[int] | None = None,
                 classes: Sequence[str] | int | None = None, what: str = "data") -> ImageSet:
    """The one door for labelled data in Keras's terms, for ``fit``, ``evaluate`` and ``ImageSet.from_arrays``.

    ``data``: an ImageSet as it is; images with ``labels``; or an ``(images, labels)`` tuple, Keras's
    ``validation_data``. Images as ``as_images`` lays them out (``in_shape``: the model's), their pixels by the
    input rule (``check_pixels``): uint8 0–255 as they are, other integers in 0–255 cast, floats in [0, 1] — the
    course's ``/ 255`` — rounded back to uint8. Labels: class numbers (N,) or (N, 1), or one-hot rows (N, K).
    ``classes``: names or a count; by default the one-hot width or the largest label + 1. ``what`` names the data
    in the one-line errors.
    """
    if isinstance(data, ImageSet):
        if labels is not None:
            raise CnnlabError(f"{what} is an ImageSet, which holds its labels: pass it without labels")
        _not_empty(data.images, what)
        return data
    if isinstance(data, tuple) and labels is None:
        if len(data) != 2:
            raise CnnlabError(f"{what} is a tuple of {len(data)} items: pass (images, labels)")
        data, labels = data
    if labels is None:
        raise CnnlabError(f"{what} has images but no labels: pass images and labels, or (images, labels)")
    images = as_images(data, in_shape, what)
    if check_pixels(images) == 1:  # floats in [0, 1]: rounded back to the pixels they were divided from
        exact = torch.promote_types(images.dtype, torch.float32)  # float16 · 255 would round to an eighth
        images = torch.round(images.to(exact) * 255)
    images = images.to(torch.uint8)  # uint8 as it is; other integers in 0–255 cast
    label_numbers, width = _class_numbers(labels)
    return ImageSet(images.contiguous(), label_numbers, class_names(width if classes is None else classes))


def _numeric(value: object, what: str) -> np.ndarray:
    """``value`` (an array, or nested lists as Keras takes them) as a NumPy array of numbers, or a one-line error."""
    try:
        array = np.asarray(value)
    except ValueError:  # lists of unequal lengths: NumPy's 'inhomogeneous shape'
        raise CnnlabError(f"{what} are lists of different lengths: pass one array whose rows all have one shape"
                          ) from None
    if array.dtype.kind not in "biuf":
        raise CnnlabError(f"{what} of dtype {array.dtype} and shape {array.shape}: pass an array of numbers")
    return array


def _class_numbers(labels: ArrayLike) -> tuple[torch.Tensor, int]:
    """int64 class numbers (N,) and the classes they imply: one-hot rows (N, K), numbers (N,) or (N, 1)."""
    array = labels.numpy(force=True) if isinstance(labels, torch.Tensor) else _numeric(labels, "labels")
    if array.ndim == 2 and array.shape[1] > 1:  # one-hot, as keras.utils.to_categorical makes them
        if not (np.isin(array, (0, 1)).all() and (array.sum(axis=1) == 1).all()):
            raise CnnlabError(f"labels of shape {array.shape} are not one-hot (each row one 1, the rest 0); "
                              "pass class numbers (N,) or one-hot rows")
        return torch.from_numpy(array.argmax(axis=1).astype(np.int64)), array.shape[1]
    array = array.reshape(-1) if array.ndim == 2 else array  # (N, 1) → (N,)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise CnnlabError(f"labels of shape {array.shape} and dtype {array.dtype}; pass integer class "
                          "numbers (N,) or one-hot rows (N, K)")
    if len(array) and array.min() < 0:  # else named as out of range for the classes the largest label implies
        raise CnnlabError(f"labels include {int(array.min())}; pass class numbers from 0, one per class")
    return torch.from_numpy(array.astype(np.int64)), int(array.max()) + 1 if len(array) else 0


def to_categorical(labels: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """One-hot rows (N, num_classes) of float32, as ``keras.utils.to_categorical`` makes them (step 5 of the labs);
    cnnlab's own functions take class numbers as they are, so this is only for code ported from Keras."""
    numbers_, implied = _class_numbers(labels)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)):
        raise CnnlabError(f"num_classes={num_classes!r}: pass the number of classes, a whole number")
    classes = implied if num_classes is None else int(num_classes)
    if len(numbers_) and (numbers_.min() < 0 or numbers_.max() >= classes):
        raise CnnlabError(f"labels run from {int(numbers_.min())} to {int(numbers_.max())}; "
                          f"num_classes={classes} must exceed the largest")
    return np.eye(classes, dtype=np.float32)[numbers_.numpy()]

def data_fingerprint(*sets: ImageSet) -> str:
    """A hash of the images and labels: a run resumes only on the data it started with (cnnlab.checkpoint), and
    evaluate says when its test images are not those the run was tested on (cnnlab.evaluation)."""
    digest = hashlib.blake2b(digest_size=16)
    for dataset in sets:
        for tensor in (dataset.images, dataset.labels):
            digest.update(tensor.contiguous().numpy().data)
    return digest.hexdigest()


@overload
def split(data: ImageSet, val_fraction: float = 0.2, seed: int = 9) -> tuple[ImageSet, ImageSet]:
    ...


@overload
def split(data: tuple[ArrayLike, ArrayLike] | ArrayLike, val_fraction: float = 0.2,
          seed: int = 9) -> tuple[Any, Any]:
    ...


@overload
def split(data: ArrayLike, val_fraction: ArrayLike, seed: int = 9, *, test_size: float | None = None,
          random_state: int | None = None) -> tuple[Any, Any, Any, Any]:
    ...


def split(data: Data, val_fraction: Any = 0.2, seed: int = 9, *, test_size: float | None = None,
          random_state: int | None = None) -> tuple[Any, ...]:
    """(train, validation) exactly as scikit-learn's ``train_test_split(test_size=val_fraction, random_state=seed)``.

    That is ``RandomState(seed).permutation(n)``: the first ceil(fraction·n) indices are validation, the rest
    training, both in permutation order. The same kind comes out as went in — ImageSets, ``(images, labels)``
    tuples of arrays, or arrays — so the course can split first, then reshape and divide by 255. The course's
    own line works as it is: ``x_train, x_val, y_train, y_val = split(x, y, test_size=0.2, random_state=9)``
    (scikit-learn's order; ``test_size`` and ``random_state`` default to the course's 0.2 and 9).
    """
    if isinstance(val_fraction, (np.ndarray, torch.Tensor, list)):  # split(x, y, …): scikit-learn's call
        pair: Any = (data, val_fraction)
        fraction, seed = 0.2 if test_size is None else test_size, seed if random_state is None else random_state
        _check_split(fraction, seed, "test_size", "random_state")  # named as the caller wrote them
        (x_train, y_train), (x_val, y_val) = split(pair, fraction, seed)
        return x_train, x_val, y_train, y_val
    if test_size is not None or random_state is not None:
        raise CnnlabError("test_size and random_state go with scikit-learn's call, split(x, y, test_size=0.2, "
                          "random_state=9); with one data argument pass split(data, val_fraction=0.2, seed=9)")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise CnnlabError(f"split's second argument is the validation fraction, not {_describe(val_fraction)}: "
                          "pass images and labels as one tuple, split((images, labels), val_fraction=0.2, seed=9)")
    _check_split(val_fraction, seed, "val_fraction", "seed")
    val_fraction = float(val_fraction)
    parts = data if isinstance(data, tuple) else (data,)
    n = len(parts[0])
    if any(len(part) != n for part in parts):
        raise CnnlabError(f"split was given {' and '.join(str(len(part)) for part in parts)} items: pass one label "
                          "per image")
    n_val = math.ceil(val_fraction * n)
    if n_val >= n:
        raise CnnlabError(f"validation fraction {val_fraction} leaves no training images out of {n}")
    permutation = np.random.RandomState(seed).permutation(n)
    train, val = permutation[n_val:], permutation[:n_val]
    if isinstance(data, ImageSet):
        return data.subset(train), data.subset(val)
    take = [(part[torch.from_numpy(train)], part[torch.from_numpy(val)]) if isinstance(part, torch.Tensor)
            else (np.asarray(part)[train], np.asarray(part)[val]) for part in parts]
    if not isinstance(data, tuple):
        return take[0]
    return tuple(t for t, _ in take), tuple(v for _, v in take)


def _check_split(fraction: Any, seed: Any, fraction_name: str, seed_name: str) -> None:
    """A one-line CnnlabError, naming the argument as the caller wrote it, unless ``fraction`` lies strictly
    between 0 and 1 and ``seed`` is one NumPy's RandomState takes."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < float(fraction) < 1.0:
        raise CnnlabError(f"{fraction_name}={fraction!r}: the validation fraction must lie strictly between 0 and 1 "
                          "(the course's is 0.2)")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**32:
        raise CnnlabError(f"{seed_name}={seed!r}: pass a whole number from 0 to 2**32 - 1 (the course's is 9)")


# ---------------------------------------------------------------------------------------------------------
# Where the files are
# ---------------------------------------------------------------------------------------------------------
def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnlab"


def search_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders looked in, in order: --data-dir, $CNNLAB_DATA, the user cache, system folders."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / spec.name]
    if os.environ.get("CNNLAB_DATA"):
        dirs += [Path(os.environ["CNNLAB_DATA"]) / spec.name]
    dirs += [cache_root() / spec.name, Path("/usr/share/datasets") / spec.name]
    if spec.archive_folder:  # also the archive's own folder, as it unpacks, under each of those
        dirs = [d2 for d in dirs for d2 in (d, d / spec.archive_folder)]
    return dirs


def _find_file(directory: Path, file: DataFile) -> Path | None:
    for name in (file.name, file.name.removesuffix(".gz")):  # gzipped as published, or unpacked
        if (directory / name).is_file():
            return directory / name
    return None


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None,
           download: bool = True) -> tuple[Path, dict[str, Path]]:
    """The folder holding every file of the data set, and each file's path; downloads into the cache if none does."""
    files = spec.train_files + spec.test_files
    for directory in search_dirs(spec, data_dir):
        found = {f.name: _find_file(directory, f) for f in files}
        paths = {name: path for name, path in found.items() if path is not None}
        if len(paths) == len(found):
            if directory.is_relative_to(cache_root()):  # we wrote these: they must be what we verified
                for f in files:
                    if paths[f.name].name == f.name:
                        verify_md5(paths[f.name], f.md5, fix="delete it and run again to download it afresh")
            return directory, paths
    target = cache_root() / spec.name
    if not download:
        raise CnnlabError(_missing_message(spec, target, "downloads are off"))
    fetch(spec, target)
    return locate(spec, target, download=False)


def _missing_message(spec: DatasetSpec, target: Path, reason: str) -> str:
    names = [spec.archive.name] if spec.archive else [f.name for f in spec.train_files + spec.test_files]
    return (f"{spec.title} not found and not downloaded ({reason}): put {', '.join(names)} in {target} "
            f"(or {hint(cli='pass --data-dir FOLDER', python='pass data_dir=FOLDER')}); they come from "
            f"{spec.mirrors[0]}")


# ---------------------------------------------------------------------------------------------------------
# Download → verify
# ---------------------------------------------------------------------------------------------------------
def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, md5: str, fix: str) -> None:
    got = md5_of(path)
    if got != md5:
        raise CnnlabError(f"{path}: checksum mismatch (md5 {got}, expected {md5}); {fix}")


def fetch(spec: DatasetSpec, target: Path, timeout: float = 30.0) -> None:
    """Download every missing file of ``spec`` into ``target``, each verified before it takes its final name."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = [spec.archive] if spec.archive else list(spec.train_files + spec.test_files)
    for file in wanted:
        if (target / file.name).is_file():
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                download(mirror + file.name, target / file.name, file.md5, timeout=timeout)
                break
            except (OSError, http.client.HTTPException, CnnlabError) as error:
                errors.append(f"{mirror}: {_reason(error)}")
        else:
            raise CnnlabError(_missing_message(spec, target, "; ".join(errors)))
    if spec.archive:
        _unpack(spec, target / spec.archive.name, target)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return str(error.reason)
    return str(error) or type(error).__name__


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> None:
    """Fetch ``url`` to ``dest`` with a progress bar; a cut-off or corrupt transfer leaves ``dest`` untouched."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            digest, received = hashlib.md5(usedforsecurity=False), 0
            with Progress(TextColumn(dest.name), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          transient=True) as progress:
                task = progress.add_task("download", total=total)
                while block := response.read(1 << 16):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    progress.update(task, advance=len(block))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise CnnlabError(f"{url}: transfer cut off after {received} of {total} bytes; run again to retry")
        if digest.hexdigest() != md5:
            raise CnnlabError(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); "
                              "the mirror served another file, try again later")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _unpack(spec: DatasetSpec, archive: Path, target: Path) -> None:
    """Extract the data files (and nothing else) from a verified archive into ``target``."""
    wanted = {f"{spec.archive_folder}/{f.name}": f for f in spec.train_files + spec.test_files}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            file = wanted.get(member.name)
            if file is None or not member.isfile():
                continue
            source = tar.extractfile(member)
            assert source is not None
            fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{file.name}.", suffix=".part")
            with os.fdopen(fd, "wb") as out:
                out.write(source.read())
            os.replace(tmp_name, target / file.name)


# ---------------------------------------------------------------------------------------------------------
# Parse
# ---------------------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, ValueError, zlib.error) as error:  # zlib.error: a damaged deflate stream
        raise CnnlabError(f"{path}: cannot be read ({_reason(error)}); delete it and download it again") from None


def parse_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    """An IDX array of unsigned bytes (the only kind MNIST-style files use)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CnnlabError(f"{source}: not an IDX file (bad magic number); delete it and download it again")
    if raw[2] != 0x08:
        raise CnnlabError(f"{source}: IDX type 0x{raw[2]:02x} is not unsigned bytes; expected an MNIST-style file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CnnlabError(f"{source}: IDX header cut short; delete it and download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if expected == 0:
        raise CnnlabError(f"{source}: IDX header says {'×'.join(map(str, dims))}: no data; download it again")
    if len(raw) - header != expected:
        raise CnnlabError(f"{source}: holds {len(raw) - header} bytes of data but its header says "
                          f"{'×'.join(map(str, dims))} = {expected}; the file is damaged, download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


class _Dtype:
    """What unpickling ``numpy.dtype`` gives: a plain number type made from its name. Its pickled state is
    checked, never handed to NumPy, whose ``dtype.__setstate__`` trusts it (a crafted one corrupts memory)."""

    NAMES = {f"{kind}{size}" for kind in "uif" for size in (1, 2, 4, 8)} | {"b1"}

    def __init__(self, name: object, *flags: object):
        if name not in self.NAMES:
            raise pickle.UnpicklingError(f"dtype {name!r} is not allowed in a data file")
        self.dtype = np.dtype(str(name))

    def __setstate__(self, state: object) -> None:
        # NumPy writes a plain dtype's state as (3, byte order, None, None, None, -1, -1, 0)
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise pickle.UnpicklingError("a dtype's state is not that of a plain number type")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class _Array:
    """What unpickling ``numpy.ndarray`` gives: ``array`` is read from its raw bytes by ``np.frombuffer``,
    never by NumPy's ``ndarray.__setstate__``."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array's state is malformed")
        _version, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)
                and isinstance(dtype, _Dtype) and isinstance(fortran, bool) and isinstance(raw, (bytes, str))):
            raise pickle.UnpicklingError("an array's state is malformed")
        raw = raw.encode("latin1") if isinstance(raw, str) else raw  # Python 2's str, as CIFAR-10 was pickled
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls: object, shape: object, placeholder: object) -> _Array:
    if cls is not _Array:
        raise pickle.UnpicklingError("only plain NumPy arrays are allowed in a data file")
    return _Array()


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("only latin-1 text may become bytes in a data file")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what CIFAR batches hold: dicts, lists, strings, numbers and plain numeric arrays."""

    GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _Array,
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _encode,  # how Python 3 writes bytes under pickle protocol 2
    }

    def find_class(self, module: str, name: str):
        try:
            return self.GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file") from None


def parse_cifar_batch(raw: bytes, source: str = "CIFAR batch") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) from one pickled CIFAR-10 batch."""
    import io

    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # a malformed pickle raises many kinds; each is the same fault to the user
        raise CnnlabError(f"{source}: not a CIFAR-10 batch ({type(error).__name__}: {error}); "
                          "delete it and download it again") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise CnnlabError(f"{source}: not a CIFAR-10 batch (no 'data' and 'labels'); delete it and download it again")
    images, labels = (v.array if isinstance(v, _Array) else v for v in (batch["data"], batch["labels"]))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise CnnlabError(f"{source}: 'data' is not N×3072 uint8; delete it and download it again")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist() if labels.ndim == 1 else None
    if not isinstance(labels, list) or not all(type(v) is int and -2**63 <= v < 2**63 for v in labels):  # int64
        raise CnnlabError(f"{source}: 'labels' is not a list of class numbers; delete it and download it again")
    if len(labels) != len(images):
        raise CnnlabError(f"{source}: {len(labels)} labels for {len(images)} images; delete it and download it again")
    return images.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _parse_part(spec: DatasetSpec, paths: list[Path]) -> ImageSet:
    if spec.format == "idx":
        images_path, labels_path = paths
        images = parse_idx(_read_bytes(images_path), str(images_path))
        labels = parse_idx(_read_bytes(labels_path), str(labels_path)).astype(np.int64)
        if images.ndim != 3 or images.shape[1:] != spec.image_shape[1:]:
            raise CnnlabError(f"{images_path}: images of shape {images.shape[1:]}, expected "
                              f"{spec.image_shape[1:]} for {spec.title}; is this the right data set?")
        if labels.ndim != 1 or len(labels) != len(images):
            raise CnnlabError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}; "
                              "the pair does not match, download both again")
        images = images[:, None]  # (N, 1, H, W)
    else:
        parts = [parse_cifar_batch(_read_bytes(p), str(p)) for p in paths]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    bad = (labels < 0) | (labels >= len(spec.classes))
    if bad.any():
        raise CnnlabError(f"{paths[-1]}: label {int(labels[bad][0])} out of range 0–{len(spec.classes) - 1}; "
                          "the file is damaged, download it again")
    return ImageSet(torch.from_numpy(np.array(images)), torch.from_numpy(labels), spec.classes)  # copy: owned, writable


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a declared data set, found locally or downloaded into the cache."""
    spec = get_spec(name)
    _, paths = locate(spec, data_dir, download)
    train = _parse_part(spec, [paths[f.name] for f in spec.train_files])
    test = _parse_part(spec, [paths[f.name] for f in spec.test_files])
    return train, test


def load_data(name: str, data_dir: str | os.PathLike | None = None, download: bool = True
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """keras.datasets' ``load_data()``: ``(x_train, y_train), (x_test, y_test)`` as NumPy arrays — uint8 images
    as Keras lays them out, (N, 28, 28) grey or (N, 32, 32, 3) colour, and class numbers (N,)."""
    def keras_arrays(part: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        images = part.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        return images[..., 0] if images.shape[-1] == 1 else images, part.labels.numpy()

    train, test = load_dataset(name, data_dir, download)
    return keras_arrays(train), keras_arrays(test)


def load_test_images(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """Only the test part of a declared data set (evaluating a run need not parse 60,000 training images)."""
    spec = get_spec(name)
    _, paths = locate(spec, data_dir, download)
    return _parse_part(spec, [paths[f.name] for f in spec.test_files])
