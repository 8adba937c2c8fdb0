"""The studio's server without a browser: real requests to a real uvicorn on a free port. Its predictions equal
`cnnlab predict --json`, its activations and explanations equal cnnlab.inside's, bad input is one JSON line."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from cnnlab.images import prepare_file
from cnnlab.inside import activations
from cnnlab.predict import predict_proba
from cnnlab.runs import load_run
from conftest import REPO, running_studio
from test_predict import write_digits

MAX_BODY = 64 * 1024  # bytes: small, so that a test can pass it


@pytest.fixture(scope="module")
def runs(trained_runs, tmp_path_factory) -> Path:
    """The two trained runs, a damaged folder, a run with a broken model.json, a symlink out of the folder and a
    hidden run."""
    root = tmp_path_factory.mktemp("studio")
    folder = root / "runs"
    folder.mkdir()
    shutil.copytree(trained_runs["cnn"], folder / "cnn")
    shutil.copytree(trained_runs["mlp"], folder / "mlp")
    (folder / "damaged").mkdir()
    (folder / "damaged" / "recipe.json").write_text("{not json")
    shutil.copytree(trained_runs["cnn"], folder / "broken-model")
    (folder / "broken-model" / "model.json").write_text("{}")
    shutil.copytree(trained_runs["cnn"], root / "outside")
    (folder / "escape").symlink_to(root / "outside")
    shutil.copytree(trained_runs["mlp"], folder / ".hidden")
    return folder


@pytest.fixture(scope="module")
def studio(runs):
    with running_studio(runs, default_run="cnn", max_body=MAX_BODY) as url:
        yield url


def request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method)) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def decode(layer: dict) -> torch.Tensor:
    grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["png"]))), dtype=np.float32)
    return torch.from_numpy(layer["low"] + grey / 255 * (layer["high"] - layer["low"])).reshape(layer["shape"])


def test_health_and_the_openapi_document(studio):
    status, health = request(f"{studio}/health")
    assert status == 200 and sorted(health["runs"]) == ["cnn", "mlp"]  # only what opens
    status, document = request(f"{studio}/openapi.json")
    assert status == 200 and {"/health", "/predict", "/api/runs/{name}/look", "/api/runs/{name}/value",
                              "/api/runs"} <= set(document["paths"])


@pytest.mark.parametrize("top", [1, 3, 10])
def test_predict_equals_cnnlab_predict_json(studio, runs, tmp_path, capsys, top):
    paths = write_digits(tmp_path, 3)
    assert cli.main(["predict", str(runs / "mlp"), *map(str, paths), "--json", "--device", "cpu",
                     "--top", str(top)]) == 0
    expected = [json.loads(line)["top"] for line in capsys.readouterr().out.splitlines()]
    for path, answer in zip(paths, expected):
        assert request(f"{studio}/predict?run=mlp&top={top}", path.read_bytes()) == (200, {"predictions": answer})
        assert request(f"{studio}/api/runs/mlp/predict?top={top}", path.read_bytes()) == (200, {"predictions": answer})
    assert request(f"{studio}/predict", paths[0].read_bytes())[0] == 200  # the run it opened on


def test_look_gives_the_prediction_the_input_and_every_layer(studio, runs, tmp_path):
    (path,) = write_digits(tmp_path, 1)
    status, look = request(f"{studio}/api/runs/cnn/look", path.read_bytes())
    assert status == 200
    run = load_run(runs / "cnn")
    image = prepare_file(path, run.info.preprocess, run.info.in_shape)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(look["input"]))))
    assert np.array_equal(shown, image[0].numpy())  # the input exactly as the network received it
    probabilities = predict_proba(run, image[None])[0]
    assert [p["class"] for p in look["predictions"]] == probabilities.argsort(descending=True).tolist()
    assert look["predictions"][0]["probability"] == pytest.approx(float(probabilities.max()), abs=1e-6)
    expected = activations(run, image)
    assert [(layer["name"], layer["shape"]) for layer in look["layers"]] == \
        [(a.name, list(a.values.shape)) for a in expected]
    for layer, activation in zip(look["layers"], expected):
        step = (layer["high"] - layer["low"]) / 255
        assert (decode(layer) - activation.values).abs().max() <= step / 2 + 1e-5


def test_the_value_explanation_agrees_with_the_library(studio, runs, tmp_path):
    (path,) = write_digits(tmp_path, 1)
    run = load_run(runs / "cnn")
    conv = {a.name: a.values for a in activations(run, prepare_file(path, "digit", (1, 28, 28)))}["conv2d"]
    for channel, row, col in [(0, 0, 0), (7, 13, 20), (31, 27, 27)]:
        status, v = request(f"{studio}/api/runs/cnn/value?layer=conv2d&channel={channel}&row={row}&col={col}",
                            path.read_bytes())
        assert status == 200
        assert v["sum"] + v["bias"] == pytest.approx(float(conv[channel, row, col]), abs=1e-4)
        assert v["steps"][0]["value"] == pytest.approx(max(0.0, v["value"]), abs=1e-6)
        assert v["pool"]["position"] == [row // 2, col // 2]


def test_test_images_by_index_and_at_random(studio, runs, trained_runs):
    from cnnlab.data import load_test_images

    test = load_test_images("mnist", trained_runs["data"])
    status, look = request(f"{studio}/api/runs/cnn/look?test=5", b"")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(look["input"]))))
    assert status == 200 and np.array_equal(shown, test.images[5, 0].numpy())
    assert (look["source"], look["label"]) == ("test image #5", test.classes[int(test.labels[5])])
    status, picked = request(f"{studio}/api/runs/cnn/look?pick=true", b"")
    assert status == 200 and 0 <= picked["index"] < len(test)
    assert request(f"{studio}/api/runs/cnn/look?test={len(test)}", b"") == (
        400, {"error": f"test={len(test)}: the test set holds images 0 to {len(test) - 1}"})


def test_attribution_maps(studio, tmp_path):
    (path,) = write_digits(tmp_path, 1)
    status, maps = request(f"{studio}/api/runs/cnn/attribution", path.read_bytes())
    assert status == 200 and maps["label"] in "0123456789"
    for key in ("saliency", "occlusion"):
        grey = np.asarray(Image.open(io.BytesIO(base64.b64decode(maps[key]["png"]))))
        assert grey.shape == (28, 28) and grey.std() > 0


def test_runs_history_and_the_damaged_folder(studio, runs):
    status, listing = request(f"{studio}/api/runs")
    assert status == 200
    assert {r["name"] for r in listing["runs"]} == {"cnn", "mlp"}  # not the link out, nor the hidden run
    assert listing["damaged"] == [
        {"name": "broken-model", "error": f"{runs / 'broken-model' / 'model.json'}: not a 'cnnlab-run/1' file; "
                                          "was it written by another version of cnnlab?"},
        {"name": "damaged", "error": f"{runs / 'damaged' / 'recipe.json'}: not valid JSON "
                                     "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
                                     "the run folder is damaged"}]
    cnn = next(r for r in listing["runs"] if r["name"] == "cnn")
    assert cnn["epochs"] == len(cnn["history"]) == 2 and cnn["finished"] and cnn["preprocess"] == "digit"
    status, error = request(f"{studio}/api/runs/broken-model/look", b"x")
    assert (status, error) == (400, {"error": f"{runs / 'broken-model' / 'model.json'}: not a 'cnnlab-run/1' file; "
                                               "was it written by another version of cnnlab?"})


def test_evaluation_once_evaluate_has_run(studio, runs, trained_runs, capsys):
    assert request(f"{studio}/api/runs/mlp/evaluation")[0] == 404
    assert cli.main(["evaluate", str(runs / "mlp"), "--data-dir", str(trained_runs["data"]), "--device", "cpu"]) == 0
    capsys.readouterr()
    status, evaluation = request(f"{studio}/api/runs/mlp/evaluation")
    assert status == 200 and len(evaluation["confusion"]) == 10
    assert sum(map(sum, evaluation["confusion"])) == sum(c["support"] for c in evaluation["per_class"].values())


@pytest.mark.parametrize("path", ["/api/runs/..", "/api/runs/%2E%2E", "/api/runs/..%2F..%2Fetc", "/api/runs/escape",
                                  "/api/runs/%2Fetc", "/api/runs/.hidden", "/api/runs/nope/history",
                                  "/api/runs/..%252F..", "/static/..%2F..%2F__init__.py", "/static/../studio.py",
                                  "/nope"])
def test_paths_never_leave_the_runs_folder(studio, path):
    connection = http.client.HTTPConnection(studio.removeprefix("http://"))
    connection.request("GET", path)  # sent as written: urllib would tidy the dots away
    response = connection.getresponse()
    body = json.loads(response.read() or b"{}")
    connection.close()
    assert response.status == 404 and "error" in body


def test_bad_uploads_are_one_json_line(studio):
    assert request(f"{studio}/api/runs/cnn/look", b"not an image at all") == (400, {
        "error": "request body: not an image Pillow can read; use PNG, JPEG, BMP, GIF, WebP or TIFF"})
    assert request(f"{studio}/predict?run=cnn&top=0", b"x") == (
        400, {"error": "top=0: expected a number of classes, at least 1"})
    assert request(f"{studio}/api/runs/cnn/value?layer=dense&channel=0&row=0&col=0", b"x")[0] == 400
    status, error = request(f"{studio}/api/runs/cnn/value?layer=conv2d&channel=x&row=0&col=0", b"x")
    assert status == 400 and error["error"].startswith("channel: ")
    assert request(f"{studio}/api/runs/cnn/look", b"\0" * (MAX_BODY + 1)) == (413, {
        "error": f"the body is {MAX_BODY + 1:,} bytes, over the limit of {MAX_BODY:,}; send a smaller image"})


def test_a_chunked_upload_over_the_limit_is_413(studio):
    connection = http.client.HTTPConnection(studio.removeprefix("http://"))
    connection.request("POST", "/api/runs/cnn/look", body=iter([b"\0" * MAX_BODY, b"\0" * 10]),
                       encode_chunked=True)  # no Content-Length: the server counts as it reads
    response = connection.getresponse()
    assert response.status == 413 and "over the limit" in json.loads(response.read())["error"]
    connection.close()


@pytest.mark.parametrize("host, note", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_cli_studio_says_where_it_listens_and_stops_on_ctrl_c(runs, host, note):
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "studio", str(runs / "cnn"), "--port", "0",
                                "--host", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Studio for {runs} on http://127.0.0.1:") and line.endswith("Ctrl-C stops\n")
        url = line.split(" on ")[1].split()[0].rstrip("/")
        assert request(f"{url}/health")[0] == 200
        assert request(f"{url}/predict", write_digits(runs.parent / "digits", 1)[0].read_bytes())[0] == 200
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and err.splitlines()[-1] == "cnnlab: interrupted"  # as `cnnlab serve`
    assert ("note: listening on 0.0.0.0, so other machines can reach" in err) == note
