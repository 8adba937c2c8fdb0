"""Your own images: read any common file safely, prepare it as the training data was prepared, load a folder.

Every way a file can go wrong (missing, a folder, not an image, empty, truncated, a decompression bomb)
becomes one CnnlabError line naming the file, in ``read_image``. ``prepare`` turns a picture into the uint8
(C, H, W) input of a network by a named method, stored with each run so that prediction repeats what
training saw: MNIST's own recipe for digits, Fashion-MNIST's for objects, resize-and-crop for the rest.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import ImageSet
from .errors import CnnlabError, warn

MAX_PIXELS = 100_000_000  # width × height; a larger file is refused as a likely decompression bomb
DRAFT_SIZE = (512, 512)  # a JPEG larger than twice this is decoded at 1/2, 1/4 or 1/8 scale: photos load fast
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# ---------------------------------------------------------------------------------------------------------
# Reading: one place where files go wrong
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Picture:
    path: Path
    image: Image.Image  # the first frame, decoded and turned upright by its EXIF orientation
    format: str  # Pillow's name for the file format: PNG, JPEG, GIF, …
    frames: int  # more than 1 when animated; only the first is used


def _read_error(path: Path, error: Exception) -> CnnlabError:
    if isinstance(error, Image.DecompressionBombError):  # Pillow's own limit, twice its default MAX_IMAGE_PIXELS
        return CnnlabError(f"{path}: too many pixels to be a sane image (a decompression bomb?); shrink it first")
    if isinstance(error, UnidentifiedImageError):
        return CnnlabError(f"{path}: not an image Pillow can read; use PNG, JPEG, BMP, GIF, WebP or TIFF")
    if isinstance(error, PermissionError):
        return CnnlabError(f"{path}: permission denied")
    return CnnlabError(f"{path}: damaged or truncated image ({error}); save or export it again")


@contextlib.contextmanager
def _opened(path: Path, data: bytes | None = None) -> Iterator[Image.Image]:
    """The file opened lazily (header only), its pixel count checked before anything is decoded.

    ``data``: the file's bytes, already in memory (an upload); ``path`` then only names it in messages.
    Whatever goes wrong, here or in the caller's block, leaves as one CnnlabError line naming the file.
    """
    if data is None and path.is_dir():
        raise CnnlabError(f"{path}: is a folder; expected an image file")
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise CnnlabError(f"{path}: empty file (0 bytes); expected an image")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides, below
            image = Image.open(path if data is None else io.BytesIO(data))
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise CnnlabError(f"{path}: {image.width}×{image.height} = {image.width * image.height:,} pixels "
                                  f"is beyond the limit of {MAX_PIXELS:,} (a decompression bomb?); shrink it first")
            yield image
    except FileNotFoundError:
        raise CnnlabError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, struct.error, Image.DecompressionBombError) as error:
        raise _read_error(path, error) from None  # OSError covers UnidentifiedImageError and truncation


def read_image(path: str | os.PathLike, draft: bool = False, data: bytes | None = None) -> Picture:
    """The file's first frame, decoded and upright; any failure is a one-line CnnlabError naming the file.

    ``draft`` lets a large JPEG decode at a reduced scale (never below DRAFT_SIZE), for speed. ``data``: the
    file's bytes when they are already in memory, ``path`` then only naming them.
    """
    path = Path(path)
    with _opened(path, data) as image:
        file_format, frames = image.format or "?", getattr(image, "n_frames", 1)
        if draft and image.format == "JPEG":
            image.draft(None, DRAFT_SIZE)
        image.load()
        try:
            upright = ImageOps.exif_transpose(image)
        except (SyntaxError, ValueError, TypeError, KeyError, struct.error):
            upright = image.copy()  # a damaged EXIF block should not cost the pixels
    return Picture(path, upright, file_format, frames)


# ---------------------------------------------------------------------------------------------------------
# Pixels: alpha flattened, any bit depth and colour model → 8-bit grey or RGB
# ---------------------------------------------------------------------------------------------------------
def flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto a background that contrasts with what is opaque.

    Transparent pixels are background, so a dark drawing on nothing becomes dark on white and a light one
    light on black; an image with no transparency comes back unchanged.
    """
    if image.mode not in ("RGBA", "LA", "La", "RGBa", "PA") and "transparency" not in image.info:
        return image
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    if alpha.min() == 1.0:
        return image.convert("RGB")
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    weight = alpha[..., 0].sum()
    opaque_mean = (luminance * alpha[..., 0]).sum() / weight if weight else 0.0
    background = 255.0 if opaque_mean < 128 else 0.0
    flat = rgba[..., :3] * alpha + background * (1.0 - alpha)
    return Image.fromarray(flat.round().astype(np.uint8), "RGB")


def grey_array(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 luminance; 16-bit grey is scaled (65535 → 255), not clipped as Pillow's convert('L') does."""
    image = flatten_alpha(image)
    if image.mode.startswith("I"):  # 16-bit grey (I;16…), or 32-bit integer holding 16-bit values
        values = np.asarray(image, dtype=np.float64).clip(0, 65535) / 257.0
    elif image.mode == "F":  # floating point: [0, 1] if it stays within, else taken as 0–255
        values = np.asarray(image, dtype=np.float64)
        values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
    else:
        return np.asarray(image.convert("L"))  # CMYK, YCbCr, palette, 1-bit: Pillow's conversions are right
    return values.clip(0, 255).round().astype(np.uint8)


def rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8."""
    image = flatten_alpha(image)
    if image.mode.startswith("I") or image.mode == "F":
        return np.repeat(grey_array(image)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------------------
# Preparing: the picture as the training data was made
# ---------------------------------------------------------------------------------------------------------
PREPROCESS: dict[str, str] = {
    "digit": "MNIST: grey, light background inverted, ink cropped, fitted in 20×20, centred by mass in 28×28",
    "grey-fit": "Fashion-MNIST: grey, light background inverted, object cropped, fitted in the frame, centred",
    "crop": "grey or RGB as the model takes it, resized keeping its aspect and centre-cropped",
}
DATASET_PREPROCESS = {"mnist": "digit", "fashion-mnist": "grey-fit", "cifar10": "crop"}


def default_preprocess(dataset: str) -> str:
    """How images for a data set's models are prepared: its own recipe, else resize-and-crop."""
    return DATASET_PREPROCESS.get(dataset, "crop")


# The faintest share of the contrast dropped as paper and noise, per method: measured on MNIST and Fashion-MNIST
# test images photographed (dark on white, 3× larger, off-centre, JPEG): the best of the cuts tried from 0 to 0.3.
INK_CUT = {"digit": 0.2, "grey-fit": 0.1}


def _ink(grey: np.ndarray, cut: float) -> np.ndarray:
    """Light ink on a black background, as MNIST and Fashion-MNIST hold it: (H, W) float in [0, 255].

    The background level is the median of the border; a light one is inverted. The paper's tone and the
    faintest ``cut`` of the contrast (JPEG noise, shadows) become 0, the strongest ink 255.
    """
    grey = grey.astype(np.float32)
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    if background > 127:
        grey, background = 255.0 - grey, 255.0 - background
    peak = float(grey.max())
    if peak - background < 16:  # nothing stands out from the background: a blank picture
        return np.zeros_like(grey)
    low = background + cut * (peak - background)
    return ((grey - low) / (peak - low)).clip(0, 1) * 255.0


def _fit(ink: np.ndarray, box: tuple[int, int], canvas: tuple[int, int], by_mass: bool) -> np.ndarray:
    """Crop ``ink`` to what is not 0, scale it to fit ``box`` keeping its aspect, place it in ``canvas``.

    Placed so that its centre of mass (MNIST) or its middle (Fashion-MNIST) falls on the canvas's centre.
    """
    out = np.zeros(canvas, dtype=np.float32)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return out
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = min(box[0] / crop.shape[0], box[1] / crop.shape[1])
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    fitted = np.asarray(Image.fromarray(crop, "F").resize((width, height), Image.Resampling.BICUBIC)).clip(0, 255)
    if by_mass and fitted.sum() > 0:
        ys, xs = np.indices(fitted.shape)
        centre_y, centre_x = (ys * fitted).sum() / fitted.sum(), (xs * fitted).sum() / fitted.sum()
        top, left = round(canvas[0] / 2 - centre_y), round(canvas[1] / 2 - centre_x)  # MNIST: mass at (14, 14)
    else:
        top, left = (canvas[0] - height) // 2, (canvas[1] - width) // 2
    top, left = min(max(top, 0), canvas[0] - height), min(max(left, 0), canvas[1] - width)
    out[top:top + height, left:left + width] = fitted
    return out


def prepare(image: Image.Image, method: str, shape: Sequence[int]) -> torch.Tensor:
    """The network's uint8 (C, H, W) input for ``image``, made by ``method`` (a key of PREPROCESS)."""
    channels, height, width = shape
    if method in ("digit", "grey-fit"):
        if channels != 1:
            raise CnnlabError(f"preprocessing {method!r} makes grey images; the model takes {channels} channels")
        box = (round(height * 20 / 28), round(width * 20 / 28)) if method == "digit" else (height, width)
        array = _fit(_ink(grey_array(image), INK_CUT[method]), box, (height, width), by_mass=method == "digit")
        return torch.from_numpy(array.round().astype(np.uint8))[None]
    if method == "crop":
        pixels = Image.fromarray(grey_array(image) if channels == 1 else rgb_array(image))
        array = np.asarray(ImageOps.fit(pixels, (width, height), Image.Resampling.BICUBIC))
        return torch.from_numpy(array.copy()).reshape(height, width, channels).permute(2, 0, 1).contiguous()
    raise CnnlabError(f"unknown preprocessing {method!r}: choose one of {', '.join(PREPROCESS)}")


def prepare_file(path: str | os.PathLike, method: str, shape: Sequence[int], data: bytes | None = None) -> torch.Tensor:
    """``prepare`` applied to an image file (or to its bytes, ``data``); a bad file is a one-line CnnlabError."""
    return prepare(read_image(path, draft=True, data=data).image, method, shape)


# ---------------------------------------------------------------------------------------------------------
# Inspecting: the tutorial's lab 1
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageReport:
    path: Path
    format: str
    size: tuple[int, int]  # (width, height), as Pillow gives it
    mode: str
    frames: int
    array: np.ndarray  # np.asarray of the (upright, first-frame) image, as the tutorial makes it
    shown: np.ndarray  # (H, W) grey or (H, W, 3) colour uint8: how a person should see it

    def describe(self) -> str:
        array = self.array
        cnn_shape = array.shape if array.ndim == 3 else (*array.shape, 1)
        lines = [
            f"{self.path}",
            f"  {self.format}, {self.size[0]}×{self.size[1]} (width × height), PIL mode {self.mode}"
            + (f", {self.frames} frames (the first is used)" if self.frames > 1 else ""),
            f"  array {array.shape} {array.dtype}, min {array.min()}, max {array.max()}, mean {array.mean():.2f}"
            + (" (palette indices)" if self.mode in ("P", "PA") else ""),
            f"  dense input {(array.size,)}, CNN input {cnn_shape}",
        ]
        return "\n".join(lines)


def inspect_image(path: str | os.PathLike) -> ImageReport:
    picture = read_image(path)
    image = picture.image
    shown = grey_array(image) if image.mode in GREY_MODES else rgb_array(image)
    return ImageReport(picture.path, picture.format, image.size, image.mode, picture.frames, np.asarray(image), shown)


# ---------------------------------------------------------------------------------------------------------
# A folder of your own images: one sub-folder per class, optionally inside train/, val/ and test/
# ---------------------------------------------------------------------------------------------------------
PARTS = ("train", "val", "test")
DETECTED_SIDE_LIMIT = 64  # pixels; a detected image size is scaled down to this on its longer side


@dataclass
class ImageFolder:
    """A folder of images, loaded: ``train`` always, ``val`` and ``test`` when the folder has them."""

    root: Path
    train: ImageSet | None
    val: ImageSet | None
    test: ImageSet | None
    preprocess: str
    skipped: list[str]  # one line per unreadable image, naming it and why


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout(root: Path) -> dict[str, Path]:
    """Which part lives where: ``root/train`` etc. when there is a train/, else the root is the training part."""
    if not root.exists():
        raise CnnlabError(f"{root}: no such folder; --data takes a folder with one sub-folder per class")
    if not root.is_dir():
        raise CnnlabError(f"{root}: not a folder; --data takes a folder with one sub-folder per class")
    if (root / "train").is_dir():
        return {part: root / part for part in PARTS if (root / part).is_dir()}
    for part in ("val", "test"):
        if (root / part).is_dir():
            raise CnnlabError(f"{root / part}: found {part}/ but no train/ beside it; put the training images "
                              f"in {root / 'train'}/CLASS/")
    return {"train": root}


def _peek(path: Path) -> tuple[tuple[int, int], bool]:
    """((width, height) upright, grey?) from the header alone."""
    with _opened(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn it a quarter
            width, height = height, width
        grey = image.mode in GREY_MODES
        if image.mode == "P":
            palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
            grey = bool((palette == palette[:, :1]).all())
        return (width, height), grey


def _detect_shape(peeked: Sequence[tuple[tuple[int, int], bool]]) -> tuple[int, int, int]:
    """(C, H, W): the most common size (its longer side at most DETECTED_SIDE_LIMIT), grey if every image is."""
    (width, height), _ = collections.Counter(size for size, _ in peeked).most_common(1)[0]
    scale = min(1.0, DETECTED_SIDE_LIMIT / max(width, height))
    return (1 if all(grey for _, grey in peeked) else 3), max(2, round(height * scale)), max(2, round(width * scale))


def load_folder(root: str | os.PathLike, shape: Sequence[int | None] = (None, None, None), preprocess: str = "crop",
                strict: bool = False, classes: Sequence[str] | None = None, parts: Sequence[str] = PARTS,
                on_skip: Callable[[str], None] = warn) -> ImageFolder:
    """Load a folder of class sub-folders into uint8 (N, C, H, W) sets, each image prepared by ``preprocess``.

    ``shape`` (C, H, W) fixes what is not None; the rest is detected from the training images. ``classes``
    (from a saved run) fixes the class names and their order; else they are the sorted sub-folder names.
    An unreadable image is reported through ``on_skip`` and left out, or stops the load when ``strict``.
    """
    root = Path(root)
    layout = _layout(root)
    if preprocess not in PREPROCESS:
        raise CnnlabError(f"unknown preprocessing {preprocess!r}: choose one of {', '.join(PREPROCESS)}")
    if preprocess != "crop" and shape[0] not in (None, 1):
        raise CnnlabError(f"preprocessing {preprocess!r} makes grey images, not {shape[0]} channels")
    if classes is None:
        classes = tuple(p.name for p in _class_dirs(layout["train"]))
        if len(classes) < 2:
            raise CnnlabError(f"{layout['train']}: found {len(classes)} class sub-folder(s), need at least 2 "
                              "(one sub-folder of images per class)")
    index = {name: i for i, name in enumerate(classes)}

    files: dict[str, list[tuple[Path, int]]] = {}
    for part in (p for p in parts if p in layout):
        files[part] = []
        for class_dir in _class_dirs(layout[part]):
            if class_dir.name not in index:
                raise CnnlabError(f"{class_dir}: class {class_dir.name!r} is not among the training classes "
                                  f"({', '.join(classes)}); rename or remove it")
            found = _image_files(class_dir)
            if not found and part == "train":
                raise CnnlabError(f"{class_dir}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files[part] += [(path, index[class_dir.name]) for path in found]

    skipped: list[str] = []
    unreadable: set[Path] = set()

    def skip(path: Path, error: CnnlabError) -> None:
        if strict:
            raise CnnlabError(f"{error} (--strict stops at the first unreadable image)")
        unreadable.add(path)
        skipped.append(str(error))
        on_skip(f"skipped {error}")

    if None in shape:
        detected: tuple[int, int, int] = (1, 28, 28)  # digit and grey-fit make the 28×28 grey images they mimic
        if preprocess == "crop":
            peeked = []
            for path, _ in files.get("train") or [item for items in files.values() for item in items]:
                try:
                    peeked.append(_peek(path))
                except CnnlabError as error:
                    skip(path, error)
            if not peeked:
                raise CnnlabError(f"{root}: no readable images to learn the image size from")
            detected = _detect_shape(peeked)
        shape = tuple(given if given is not None else found for given, found in zip(shape, detected))

    sets: dict[str, ImageSet] = {}
    for part, items in files.items():
        images = torch.empty((len(items), *shape), dtype=torch.uint8)  # (N, C, H, W)
        labels: list[int] = []
        for path, label in items:
            if path in unreadable:
                continue
            try:
                images[len(labels)] = prepare_file(path, preprocess, shape)
            except CnnlabError as error:
                skip(path, error)
                continue
            labels.append(label)
        if not labels:
            raise CnnlabError(f"{layout[part]}: no readable images ({len(items)} found); a part that is there "
                              "must hold some")
        sets[part] = ImageSet(images[:len(labels)], torch.tensor(labels, dtype=torch.long), tuple(classes))
    return ImageFolder(root, sets.get("train"), sets.get("val"), sets.get("test"), preprocess, skipped)
