"""ONNX export: every tutorial network and a BatchNorm one, run by onnxruntime, give cnnlab's own probabilities."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cnnlab import cli, get_recipe
from cnnlab.augment import Normalization
from cnnlab.errors import CnnlabError
from cnnlab.inference import Inference
from cnnlab.models import create_model
from cnnlab.prediction import predict_proba
from cnnlab.recipes import with_overrides
from cnnlab.runs import ModelInfo, load_run, save_run_files, save_weights

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from cnnlab import export  # noqa: E402  (after the skips: it is only tested with onnx at hand)

SHAPE = (3, 16, 16)  # small, colour, and a multiple of bn-cnn's three poolings
CLASSES = ("cat", "dog", "fish", "bird")


def write_run(folder: Path, model: str, tta: str = "none") -> Path:
    """A finished run folder of an untrained ``model``, with normalisation and, for BatchNorm, running
    statistics far from their defaults, so that a graph missing either gives other numbers."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    network = create_model(model, SHAPE, len(CLASSES))
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    info = ModelInfo(model, SHAPE, CLASSES, "folder", Normalization((0.2, 0.4, 0.6), (0.3, 0.2, 0.1)))
    save_run_files(folder, with_overrides(get_recipe("mnist-cnn"), {"tta": tta}), info, torch.device("cpu"))
    save_weights(folder / "weights.safetensors", network)
    return folder


def run_onnx(path: Path, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities, logits = session.run(["probabilities", "logits"], {"images": images.numpy()})
    return torch.from_numpy(probabilities), torch.from_numpy(logits)


@pytest.mark.parametrize("model", ["mlp", "cnn", "cnn-dropout", "cnn-deep", "bn-cnn"])
def test_export_gives_cnnlab_probabilities_for_every_tutorial_model_and_batchnorm(tmp_path, model):
    run_dir = write_run(tmp_path / model, model)
    result = export.export_onnx(run_dir)
    assert result.path == run_dir / "model.onnx" and result.size == result.path.stat().st_size
    assert result.checked == export.VERIFY_IMAGES and result.max_difference <= 1e-4

    images = torch.randint(0, 256, (5, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    run = load_run(run_dir)
    probabilities, logits = run_onnx(result.path, images)  # five images: not the traced batch of one
    expected = predict_proba(run, images)
    assert (probabilities - expected).abs().max() <= 1e-4
    assert torch.allclose(torch.softmax(logits, dim=1), probabilities, atol=1e-6)
    assert expected.max() - expected.min() > 0.05  # untrained, but not so flat that any graph would pass


def test_metadata_and_signature_say_how_to_feed_the_model(tmp_path):
    run_dir = write_run(tmp_path / "run", "cnn")
    proto = onnx.load(str(export.export_onnx(run_dir, tmp_path / "fixed.onnx", batch=3).path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["cnnlab.classes"]) == list(CLASSES)
    assert props["cnnlab.preprocess"] == "crop" and json.loads(props["cnnlab.in_shape"]) == list(SHAPE)
    assert json.loads(props["cnnlab.normalization"]) == {"mean": [0.2, 0.4, 0.6], "std": [0.3, 0.2, 0.1]}
    (images,) = proto.graph.input
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in images.type.tensor_type.shape.dim] == [3, *SHAPE]
    assert [output.name for output in proto.graph.output] == ["probabilities", "logits"]


def test_test_time_augmentation_is_in_the_graph(tmp_path):
    run_dir = write_run(tmp_path / "run", "bn-cnn", tta="flip-translate")
    result = export.export_onnx(run_dir)
    images = torch.randint(0, 256, (4, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    run = load_run(run_dir)
    with_tta = predict_proba(run, images)  # the run's own test-time augmentation
    without = predict_proba(Inference(run.model, run.info.normalization), images)
    probabilities, _ = run_onnx(result.path, images)
    assert (probabilities - with_tta).abs().max() <= 1e-4 < (probabilities - without).abs().max()


def test_cli_export_prints_the_file_and_the_check(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", "mlp")
    assert cli.main(["export", str(run_dir), "--output", str(tmp_path / "out.onnx"), "--batch", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"Wrote {tmp_path / 'out.onnx'} (") and lines[0].endswith(" MB)")
    assert lines[1].startswith("onnxruntime on 2 random images: largest difference from cnnlab's probabilities ")
    assert lines[1].endswith("(at most 0.0001)") and err == ""


@pytest.mark.parametrize("batch", ["0", "-3", "many"])
def test_a_bad_batch_is_a_usage_error(tmp_path, capsys, batch):
    assert cli.main(["export", str(tmp_path), "--batch", batch]) == 2
    assert capsys.readouterr().err == (f"cnnlab: error: --batch {batch!r}: expected 'dynamic' or a number of "
                                       "images, at least 1\n")


def test_without_onnx_export_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    assert cli.main(["export", str(write_run(tmp_path / "run", "mlp"))]) == 1
    assert capsys.readouterr().err == ("cnnlab: error: export needs the onnx package: "
                                       "pip install 'cnnlab[export]'\n")


def test_a_failed_check_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    run_dir = write_run(tmp_path / "run", "cnn")
    good = export.export_onnx(run_dir).path.read_bytes()
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # every difference is now too large
    with pytest.raises(CnnlabError, match="differs from cnnlab's predictions by .*nothing was written"):
        export.export_onnx(run_dir)
    assert (run_dir / "model.onnx").read_bytes() == good
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".model.onnx")]  # no temporary file left


def test_export_replaces_only_a_file_cnnlab_exported(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", "mlp")
    weights = (run_dir / "weights.safetensors").read_bytes()
    assert cli.main(["export", str(run_dir), "--output", str(run_dir / "weights.safetensors")]) == 1
    assert capsys.readouterr().err == (f"cnnlab: error: {run_dir / 'weights.safetensors'}: exists and cnnlab did "
                                       "not write it; choose another file, or pass --force to replace it\n")
    assert (run_dir / "weights.safetensors").read_bytes() == weights  # the run is whole
    assert cli.main(["export", str(run_dir)]) == cli.main(["export", str(run_dir)]) == 0  # its own: replaced
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"\x08\x07 an ONNX file of the learner's own")
    assert cli.main(["export", str(run_dir), "--output", str(mine)]) == 1 and mine.read_bytes().endswith(b"own")
    assert cli.main(["export", str(run_dir), "--output", str(mine), "--force"]) == 0
    assert mine.read_bytes() == (run_dir / "model.onnx").read_bytes()


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == (f"cnnlab: error: {tmp_path / 'nope'}: no such run folder; "
                                       "`cnnlab train` prints the folder it writes\n")
