"""`cnnlab explain`: filters, feature maps through padding and pooling, and the pixels behind a prediction."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli, create_model, load_dataset, load_run
from cnnlab.explain import feature_stages, occlusion, saliency


def block_mask(label: int) -> torch.Tensor:
    """Where conftest's learnable_images puts the bright block of ``label`` in a 28×28 image."""
    row, col = divmod(label, 4)
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[row * 7:(row + 1) * 7, col * 7:(col + 1) * 7] = True
    return mask


def test_feature_maps_keep_their_size_through_same_padding_and_halve_through_pooling():
    torch.manual_seed(0)
    model = create_model("cnn-deep", (3, 32, 32), 10)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    stages = feature_stages(model, image)
    assert [(s.name, tuple(s.maps.shape)) for s in stages] == [
        ("input", (3, 32, 32)), ("conv2d + relu", (32, 32, 32)), ("conv2d_1 + relu_1", (64, 32, 32)),
        ("max_pooling2d", (64, 16, 16))]
    first = torch.relu(model.conv2d(image[None].float() / 255))[0]
    assert torch.allclose(stages[1].maps, first, atol=1e-6)  # the maps are the layer's real output
    assert torch.equal(stages[3].maps, torch.nn.functional.max_pool2d(stages[2].maps[None], 2)[0])


def test_occlusion_and_saliency_point_at_the_pixels_that_decide(trained_runs):
    run = load_run(trained_runs["cnn"])
    _, test = load_dataset("mnist", trained_runs["data"])
    for index in range(5):
        image, label = test.images[index], int(test.labels[index])
        inside = block_mask(label)  # the fake digits' class is told by this block alone
        occluded = occlusion(run.model, image, label)
        assert occluded.shape == (28, 28)
        assert occluded[inside].mean() > 10 * occluded[~inside].abs().mean()
        gradient = saliency(run.model, image, label)
        assert gradient[inside].mean() > 2 * gradient[~inside].mean()


def test_explain_a_cnn_run_on_a_test_image(trained_runs, tmp_path, capsys):
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path / "run")
    assert cli.main(["explain", str(run_dir), "--index", "2", "--data-dir", str(trained_runs["data"]),
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test image #2: predicted ")
    assert "input 1×28×28 → conv2d + relu 32×28×28 → max_pooling2d 32×14×14" in out
    for name in ("filters.png", "feature_maps.png", "saliency.png"):
        with Image.open(run_dir / "explain" / name) as figure:
            assert figure.width > 300 and np.asarray(figure.convert("L")).std() > 10  # drawn, not blank


def test_explain_says_an_mlp_has_no_convolution_and_draws_its_dense_weights(trained_runs, tmp_path, capsys):
    run_dir = shutil.copytree(trained_runs["mlp"], tmp_path / "run")
    picture = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(picture)
    assert cli.main(["explain", str(run_dir), str(picture), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "has no convolution" in out and "dense_weights.png" in out and "prepared as 'digit'" in out
    assert out.splitlines()[1] == "input 1×28×28"
    assert {p.name for p in (run_dir / "explain").iterdir()} == {"dense_weights.png", "saliency.png"}


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "no such file"),
    (lambda path: path.write_text("not a picture"), "not an image Pillow can read"),
])
def test_explain_bad_image_is_one_clear_line(make, message, trained_runs, tmp_path, capsys):
    make(tmp_path / "image.png")
    assert cli.main(["explain", str(trained_runs["cnn"]), str(tmp_path / "image.png")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_explain_index_out_of_range(trained_runs, capsys):
    code = cli.main(["explain", str(trained_runs["cnn"]), "--index", "60", "--data-dir", str(trained_runs["data"])])
    assert code == 1 and "test set holds images 0 to 59" in capsys.readouterr().err
