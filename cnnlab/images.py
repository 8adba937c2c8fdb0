"""Your own images: read any common file safely, prepare it as the training data was prepared, load a folder.

Every way a file can go wrong (missing, a folder, not an image, empty, truncated, a decompression bomb, a file
crafted to take long) becomes one CnnlabError line naming the file, in ``read_image``, which bounds the time and
memory one image may take before decoding it. ``prepare`` turns a picture into the uint8
(C, H, W) input of a network by a named method, stored with each run so that prediction repeats what
training saw: MNIST's own recipe for digits, Fashion-MNIST's for objects, resize-and-crop for the rest.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import stat
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import ImageSet
from .errors import CnnlabError, hint, warn

# What reading one image may cost, whatever the file claims: for a network, well under a second and 300 MB.
MAX_PIXELS = 100_000_000  # width × height a file may claim; a larger one is refused as a likely decompression bomb
DECODE_PIXELS = 25_000_000  # decoded to prepare an image for a network (a JPEG decoded at 1/2–1/8 scale counts
#                             so), and all an upload may claim: 100 MB at most; a 6000×4000 photo fits
DRAFT_SIZE = (512, 512)  # a larger image is prepared from a copy shrunk by a whole factor, its sides at least this…
WORK_PIXELS = 1_000_000  # …and its pixels at most this (a long thin image): JPEG decodes so, the rest is reduced
MAX_READS = 100_000  # reads of one file while Pillow parses and decodes it: about 3 a block (40,000 for 100 MB of
#                      PNG), where a file of millions of empty blocks (PNG chunks, JPEG segments, …) took seconds a MB
MAX_SCANS = 100  # passes of a progressive JPEG: each goes over the whole image, even an empty one (10 are usual)
LARGE_PIXELS = 4_000_000  # decodes larger than this take turns, one at a time in a process: a server's memory
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")  # the readers of Pillow cnnlab runs (JPEG: MPO too)
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # TIFF's and PNM's readers trust the file too much
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_LARGE_DECODE = threading.Lock()  # held while an image over LARGE_PIXELS is decoded and shrunk


# ---------------------------------------------------------------------------------------------------------
# Reading: one place where files go wrong
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Picture:
    path: Path
    image: Image.Image  # the first frame, decoded and turned upright by its EXIF orientation
    format: str  # Pillow's name for the file format: PNG, JPEG, GIF, …
    frames: int  # more than 1 when animated (counted unless read for a network); only the first is used


def _read_error(path: Path, error: Exception, upload: bool) -> CnnlabError:
    if isinstance(error, Image.DecompressionBombError):  # Pillow's own limit, twice its default MAX_IMAGE_PIXELS
        return CnnlabError(f"{path}: too many pixels to be a sane image (a decompression bomb?); shrink it first")
    if isinstance(error, UnidentifiedImageError):
        kinds = "PNG, JPEG, BMP, GIF or WebP" if upload else "PNG, JPEG, BMP, GIF, WebP or TIFF"
        return CnnlabError(f"{path}: not an image {'the server reads' if upload else 'Pillow can read'}; use {kinds}")
    if isinstance(error, PermissionError):
        return CnnlabError(f"{path}: permission denied; check its permissions, or work on a copy you can read")
    if isinstance(error, OSError) and error.errno is not None and error.filename is not None:
        # the path could not be opened (a link loop, a file taken for a folder): nothing is wrong with any pixels
        return CnnlabError(f"{path}: cannot be opened ({error.strerror}); check the path")
    return CnnlabError(f"{path}: damaged or truncated image ({error}); save or export it again")


class _Reader:
    """A file as Pillow reads it: at most MAX_READS reads (``reads`` None: any number) and, once ``scans`` is
    set, at most MAX_SCANS JPEG scans.

    A JPEG's entropy-coded data never holds the bytes FF DA (a 0xFF there is followed by 0x00 or a restart
    marker), so counting them in what the decoder reads counts its scans exactly.
    """

    def __init__(self, raw: io.BufferedIOBase, path: Path):
        self.raw, self.path = raw, path
        self.reads: int | None = 0
        self.scans: int | None = None
        self._last = b""

    def read(self, size: int = -1) -> bytes:
        if self.reads is not None:
            self.reads += 1
            if self.reads > MAX_READS:
                raise CnnlabError(f"{self.path}: made of more than {MAX_READS:,} tiny blocks, which would take "
                                  "long to read (a crafted file?); save or export it again")
        data = self.raw.read(size)
        if self.scans is not None:
            self.scans += data.count(b"\xff\xda") + (self._last == b"\xff" and data[:1] == b"\xda")
            self._last = data[-1:]
            if self.scans > MAX_SCANS:
                raise CnnlabError(f"{self.path}: a JPEG of more than {MAX_SCANS} scans, each a pass over the "
                                  "whole image (a crafted file?); save or export it again")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


@contextlib.contextmanager
def _opened(path: Path, data: bytes | None = None) -> Iterator[tuple[Image.Image, _Reader]]:
    """The file opened lazily (header only), its pixel count checked before anything is decoded.

    ``data``: an upload's bytes, ``path`` then only naming them in messages; an upload may claim no more than
    DECODE_PIXELS and be of UPLOAD_FORMATS. Whatever goes wrong, here or in the caller's block, leaves as one
    CnnlabError line naming the file.
    """
    upload = data is not None
    limit = DECODE_PIXELS if upload else MAX_PIXELS
    try:
        if not upload:
            status = path.stat()
            if stat.S_ISDIR(status.st_mode):
                raise CnnlabError(f"{path}: is a folder; expected an image file")
            if not stat.S_ISREG(status.st_mode):  # a FIFO would wait for a writer, a device never end
                raise CnnlabError(f"{path}: not a regular file (a pipe or a device?); expected an image file")
        if (len(data) if data is not None else status.st_size) == 0:
            raise CnnlabError(f"{path}: empty file (0 bytes); expected an image")
        Image.init()  # every reader registered, so that those this Pillow lacks (WebP, say) can be left out
        readers = [name for name in (UPLOAD_FORMATS if upload else FORMATS) if name in Image.OPEN]
        with io.BytesIO(data) if data is not None else open(path, "rb") as raw, _named_warnings(path):
            reader = _Reader(raw, path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits here decide
                image = Image.open(reader, formats=readers)  # type: ignore[arg-type]
            if image.width * image.height > limit:
                raise CnnlabError(f"{path}: {image.width}×{image.height} = {image.width * image.height:,} pixels "
                                  f"is beyond the limit of {limit:,}{' for an upload' if upload else ''} "
                                  "(a decompression bomb?); shrink it first")
            if image.format in ("JPEG", "MPO"):
                reader.scans = 0  # from here on the decoder reads scans
            yield image, reader
    except FileNotFoundError:
        raise CnnlabError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, struct.error, Image.DecompressionBombError) as error:
        raise _read_error(path, error, upload) from None  # OSError covers UnidentifiedImageError and truncation


@contextlib.contextmanager
def _named_warnings(path: Path) -> Iterator[None]:
    """Pillow's warnings about a file (corrupt EXIF data, a truncated TIFF tag) as cnnlab's one line naming it:
    Pillow's name neither the file nor what comes of it, which in a folder of thousands leaves it unfound. On
    the main thread only: catch_warnings is the process's, and a server's threads decoding at once would name
    each other's files, so there Pillow's own lines stand."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        yield
    pillow = [w for w in caught if Path(w.filename).parent.name == "PIL"]
    for w in caught:
        if w not in pillow:  # not about the file: as it would have been shown
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in pillow):
        warn(f"{path}: Pillow read it with a warning, '{message.rstrip('.')}'; it is used as read")


def read_image(path: str | os.PathLike, draft: bool = False, data: bytes | None = None) -> Picture:
    """The file's first frame, decoded and upright; any failure is a one-line CnnlabError naming the file.

    ``draft``: for a network, which needs far fewer pixels: a large image is decoded at a reduced scale where
    its format allows (JPEG) and shrunk by a whole factor (sides at least DRAFT_SIZE, at most WORK_PIXELS), and
    one that would decode to over DECODE_PIXELS is refused; its frames are not counted. ``data``: an upload's
    bytes, ``path`` then only naming them.
    """
    path = Path(path)
    with _opened(path, data) as (image, reader):
        file_format = image.format or "?"
        if draft:
            small, orientation = _decoded_small(image, path)
            return Picture(path, _upright(small, orientation), file_format, 1)
        image.load()
        reader.reads = reader.scans = None  # counting an animation's frames reads every one of them
        frames = getattr(image, "n_frames", 1)
        image.load()  # the first frame again, where counting went back to it
        return Picture(path, _upright(image, _orientation(image)), file_format, frames)


def return_freed_memory() -> None:
    """Have glibc give each large buffer back to the system when it is freed, for a server that decodes images.

    Otherwise glibc raises its threshold for mapping memory to the largest block freed so far, and keeps what
    each thread frees for that thread's next use: after 24 worst-case uploads from 8 clients the studio held
    1.6 GB instead of 0.77 GB. Other C libraries (macOS, musl) are left as they are.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, fixed at 1 MiB
    except (OSError, AttributeError):
        pass


def _shrink_factor(width: int, height: int) -> int:
    """The whole factor that keeps both sides at least DRAFT_SIZE, raised until at most WORK_PIXELS remain."""
    factor = max(1, min(width // DRAFT_SIZE[0], height // DRAFT_SIZE[1]))
    while -(-width // factor) * -(-height // factor) > WORK_PIXELS:  # the sides Image.reduce makes, rounded up
        factor += 1
    return factor


def _decoded_small(image: Image.Image, path: Path) -> tuple[Image.Image, int]:
    """``image`` (opened, not decoded) decoded at the smallest scale its format allows, then shrunk; and its EXIF
    orientation."""
    full = image.size
    factor = _shrink_factor(*full)
    if image.format in ("JPEG", "MPO") and factor > 1:
        image.draft(None, (-(-full[0] // factor), -(-full[1] // factor)))  # 1/2, 1/4 or 1/8 of the size, if it fits
    # A progressive JPEG holds every coefficient of the full image however small it is decoded.
    width, height = full if image.info.get("progressive") else image.size
    if width * height > DECODE_PIXELS:
        raise CnnlabError(f"{path}: {full[0]}×{full[1]} would decode to {width * height:,} pixels, more than the "
                          f"{DECODE_PIXELS:,} cnnlab decodes for a network; shrink it first")
    with _LARGE_DECODE if width * height > LARGE_PIXELS else contextlib.nullcontext():
        image.load()
        orientation, factor = _orientation(image), _shrink_factor(*image.size)
        if factor == 1:
            return image, orientation
        small = _reduced(image, factor)
        image.close()  # the decoded pixels go now, not when the caller lets go of the file
        return small, orientation


REDUCIBLE = {"1": "L", "P": "RGB", "PA": "RGBA", "HSV": "RGB", "I;16": "I", "I;16L": "I", "I;16B": "I",
             "I;16N": "I"}  # modes Image.reduce cannot average (palette indices, bits), and what they become
PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}  # averaged with their alpha, so hidden colours do not bleed in


def _reduced(image: Image.Image, factor: int, rows: int = 256) -> Image.Image:
    """``image`` shrunk by ``factor`` (box average), a strip of rows at a time: the copies stay small."""
    mode = REDUCIBLE.get(image.mode, image.mode)
    if image.mode == "P" and "transparency" in image.info:
        mode = "RGBA"
    width, height = image.size
    small = Image.new(PREMULTIPLIED.get(mode, mode), (-(-width // factor), -(-height // factor)))
    step = factor * max(1, rows // factor)
    for top in range(0, height, step):
        strip = image.crop((0, top, width, min(height, top + step))).convert(mode)
        small.paste(strip.convert(PREMULTIPLIED.get(mode, mode)).reduce(factor), (0, top // factor))
    return small.convert(mode)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8; 1 is upright); a damaged EXIF block counts as upright."""
    try:
        orientation = Image.Image.getexif(image).get(0x0112, 1)  # PNG's own getexif would decode the pixels
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error, OSError):
        return 1
    return orientation if orientation in _TURNS else 1


_TURNS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose turns them


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    turn = _TURNS[orientation]
    return image if turn is None else image.transpose(turn)


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
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in found:  # the name is the class's label in every file and figure: it must be text
        try:
            class_dir.name.encode("utf-8")
        except UnicodeEncodeError:
            raise CnnlabError(f"{class_dir}: the folder's name is not UTF-8 text, and it names the class; "
                              "rename it") from None
    return found


def _layout(root: Path) -> dict[str, Path]:
    """Which part lives where: ``root/train`` etc. when there is a train/, else the root is the training part."""
    takes = hint(cli="--data takes", python="pass")
    if not root.exists():
        raise CnnlabError(f"{root}: no such folder; {takes} a folder with one sub-folder per class")
    if not root.is_dir():
        raise CnnlabError(f"{root}: not a folder; {takes} a folder with one sub-folder per class")
    if (root / "train").is_dir():
        return {part: root / part for part in PARTS if (root / part).is_dir()}
    for part in ("val", "test"):
        if (root / part).is_dir():
            raise CnnlabError(f"{root / part}: found {part}/ but no train/ beside it; put the training images "
                              f"in {root / 'train'}/CLASS/")
    return {"train": root}


def _peek(path: Path) -> tuple[tuple[int, int], bool]:
    """((width, height) upright, grey?) from the header alone."""
    with _opened(path) as (image, _):
        width, height = image.size
        if _orientation(image) in (5, 6, 7, 8):  # EXIF orientations that turn it a quarter
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
    if layout["train"] != root:  # beside train/, any other folder is read by nothing: say so, not train without it
        for other in (p for p in _class_dirs(root) if p.name not in PARTS):
            on_skip(f"{other}: not used: beside train/, only train/, val/ and test/ are read; move its images "
                    "into one of them")
    if preprocess not in PREPROCESS:
        raise CnnlabError(f"unknown preprocessing {preprocess!r}: choose one of {', '.join(PREPROCESS)}")
    if preprocess != "crop" and shape[0] not in (None, 1):
        raise CnnlabError(f"preprocessing {preprocess!r} makes grey images, not {shape[0]} channels")
    if classes is None:
        classes = tuple(p.name for p in _class_dirs(layout["train"]))
        if len(classes) < 2:
            raise CnnlabError(f"{layout['train']}: found {len(classes)} class sub-folder(s), need at least 2 "
                              "(one sub-folder of images per class)")
    files = _class_files(layout, parts, tuple(classes))
    skip = _Skipped(strict, on_skip)
    size = _image_shape(root, shape, preprocess, files, skip)
    sets = {part: _read_part(layout[part], items, size, preprocess, tuple(classes), skip)
            for part, items in files.items()}
    return ImageFolder(root, sets.get("train"), sets.get("val"), sets.get("test"), preprocess, skip.messages)


@dataclass
class _Skipped:
    """The unreadable images met while loading a folder: each reported and left out, or the load stopped (strict)."""
    strict: bool
    on_skip: Callable[[str], None]
    paths: set[Path] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)

    def __call__(self, path: Path, error: CnnlabError) -> None:
        if self.strict:
            raise CnnlabError(f"{error} (--strict stops at the first unreadable image)")
        self.paths.add(path)
        self.messages.append(str(error))
        self.on_skip(f"skipped {error}")


def _class_files(layout: dict[str, Path], parts: Sequence[str], classes: tuple[str, ...]
                 ) -> dict[str, list[tuple[Path, int]]]:
    """Each part's image files with their class index; a class sub-folder not among ``classes`` is an error."""
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
    return files


def _image_shape(root: Path, shape: Sequence[int | None], preprocess: str,
                 files: dict[str, list[tuple[Path, int]]], skip: _Skipped) -> tuple[int, ...]:
    """(C, H, W): what ``shape`` fixes, the rest the most common among the training images (their headers only)."""
    if None not in shape:
        return tuple(int(n) for n in shape if n is not None)
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
    return tuple(given if given is not None else found for given, found in zip(shape, detected))


def _read_part(folder: Path, items: list[tuple[Path, int]], size: tuple[int, ...], preprocess: str,
               classes: tuple[str, ...], skip: _Skipped) -> ImageSet:
    """One part's images, each prepared to ``size``; the unreadable left out (or the load stopped)."""
    images = torch.empty((len(items), *size), dtype=torch.uint8)  # (N, C, H, W)
    labels: list[int] = []
    for path, label in items:
        if path in skip.paths:
            continue
        try:
            images[len(labels)] = prepare_file(path, preprocess, size)
        except CnnlabError as error:
            skip(path, error)
            continue
        labels.append(label)
    if not labels:
        raise CnnlabError(f"{folder}: no readable images ({len(items)} found); a part that is there must hold some")
    return ImageSet(images[:len(labels)], torch.tensor(labels, dtype=torch.long), classes)
