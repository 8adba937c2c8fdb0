"""Export: a run's network as one ONNX file that takes the pixels cnnlab's preprocessing makes.

The graph holds everything between those pixels and the answer, as ``cnnlab predict`` computes it (the run's
``cnnlab.inference.Inference``): the tutorial's ``/ 255``, the run's normalisation and its test-time augmentation,
in float32 (a run's mixed precision is left to the runtime). Its input ``images`` is uint8
(N, C, H, W), 0–255, made from an image file by the preprocessing method named in the metadata
(``cnnlab.images.prepare``); its outputs are ``probabilities`` (the softmax) and ``logits``, float32
(N, classes). The class names and the preprocessing travel in the file's metadata_props.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import CnnlabError, UsageError
from .files import EXPORTED, atomic_write, check_replaceable
from .inference import Inference, to_input

if TYPE_CHECKING:
    from .runs import Run

OPSET = 17
VERIFY_IMAGES = 8  # random images run through both onnxruntime and cnnlab after an export
TOLERANCE = 1e-4  # largest difference in probability allowed between them


class Pipeline(nn.Module):
    """uint8 pixels (N, C, H, W) → (probabilities, logits), as ``inference.proba`` computes them."""

    def __init__(self, inference: Inference):
        super().__init__()
        self.model = inference.model  # a submodule: its weights become the graph's
        self.inference = inference

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.inference.logits(to_input(images, self.inference.normalization))
        return torch.softmax(logits, dim=1), logits


def exported(run: Run) -> Inference:
    """What the graph computes: the run's inference in float32, on the CPU."""
    return replace(Inference.of(run), autocast="off")


@dataclass
class Export:
    path: Path
    size: int  # bytes
    checked: int  # images compared with cnnlab's own predictions; 0 without onnxruntime
    max_difference: float | None  # the largest difference in probability found; None when not checked


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CnnlabError("export needs the onnx package: pip install 'cnnlab[export]'") from None
    return onnx


def parse_batch(text: str) -> int | None:
    """``--batch``: 'dynamic' (None: any batch size) or a fixed number of images."""
    if text == "dynamic":
        return None
    try:
        batch = int(text)
    except ValueError:
        batch = 0
    if batch < 1:
        raise UsageError(f"--batch {text!r}: expected 'dynamic' or a number of images, at least 1")
    return batch


def export_onnx(run_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                batch: int | None = None, force: bool = False) -> Export:
    """Write a run's network as ONNX to ``output`` (default RUN_DIR/model.onnx), checked, then written atomically.

    ``batch``: a fixed batch size, or None for any. With onnxruntime installed, the graph's probabilities for
    a few random images are compared with cnnlab's before the file is written; a mismatch writes nothing. An
    existing file that cnnlab did not export (the run's weights, say) is replaced only when ``force`` says so.
    """
    from .runs import load_run

    onnx = _onnx()
    run = load_run(run_dir)
    info = run.info
    path = Path(output) if output is not None else run.run_dir / "model.onnx"
    check_replaceable(path, force)  # before any work
    pipeline = Pipeline(exported(run)).eval()
    example = torch.zeros(batch or 1, *info.in_shape, dtype=torch.uint8)
    buffer = io.BytesIO()
    # The TorchScript-based exporter: it needs no onnxscript and gives the same graph on torch 2.11 and 2.14.
    # Its warnings (deprecated; constants in the trace of test-time augmentation) are silenced: verify() below
    # compares the graph's numbers with cnnlab's, at another batch size than the traced one.
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        # The ignore: torch types ``f`` as a path, though the TorchScript exporter writes to a file object too.
        torch.onnx.export(pipeline, (example,), buffer,  # type: ignore[arg-type]
                          dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["probabilities", "logits"],
                          dynamic_axes=None if batch else {name: {0: "batch"} for name in
                                                           ("images", "probabilities", "logits")})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = (f"{EXPORTED}{run.run_dir.name}: images uint8 (N, C, H, W) 0-255, prepared by "
                        f"'{info.preprocess}' -> probabilities (softmax) and logits, float32 (N, classes)")
    for key, value in metadata(run).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    checked, difference = verify(data, run)
    try:
        atomic_write(path, data)
    except OSError as error:
        raise CnnlabError(f"cannot write {path} ({error.strerror or error}); choose another --output") from None
    return Export(path, len(data), checked, difference)


def metadata(run: Run) -> dict[str, str]:
    """What a user of the ONNX file needs to feed it and read its answer, as strings (JSON where structured)."""
    from . import __version__
    from .images import PREPROCESS

    info = run.info
    normalization = info.normalization
    return {
        "cnnlab.classes": json.dumps(list(info.classes)),
        "cnnlab.input": "images: uint8 (N, C, H, W), pixels 0-255; /255 and normalisation are in the graph",
        "cnnlab.outputs": "probabilities: softmax (N, classes); logits: (N, classes)",
        "cnnlab.in_shape": json.dumps(list(info.in_shape)),
        "cnnlab.preprocess": info.preprocess,
        "cnnlab.preprocess_description": PREPROCESS[info.preprocess],
        "cnnlab.normalization": json.dumps(None if normalization is None else
                                           {"mean": list(normalization.mean), "std": list(normalization.std)}),
        "cnnlab.tta": run.recipe.tta,
        "cnnlab.model": info.model,
        "cnnlab.dataset": info.dataset,
        "cnnlab.run": run.run_dir.name,
        "cnnlab.version": __version__,
    }


def verify(data: bytes, run: Run) -> tuple[int, float | None]:
    """(images compared, largest difference in probability) between onnxruntime and the run's inference in
    float32, as the graph computes it.

    (0, None) without onnxruntime. A difference above TOLERANCE is an error: the export is wrong.
    """
    try:
        import onnxruntime
    except ImportError:
        return 0, None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    batch = session.get_inputs()[0].shape[0]
    count = batch if isinstance(batch, int) else VERIFY_IMAGES
    images = torch.randint(0, 256, (count, *run.info.in_shape), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    expected = exported(run).proba(images)
    probabilities = torch.from_numpy(session.run(["probabilities"], {"images": images.numpy()})[0])
    difference = float((probabilities - expected).abs().max())
    if not difference <= TOLERANCE:  # NaN fails too
        raise CnnlabError(f"the exported graph differs from cnnlab's predictions by {difference:.2e} "
                          f"(more than {TOLERANCE:g}); nothing was written. Please report this with the run folder")
    return count, difference
