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
from cnnlab.prediction import predict_proba
from cnnlab.runs import load_run
from helpers import REPO, move_data, running_studio
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
        "error": "request body: not an image the server reads; use PNG, JPEG, BMP, GIF or WebP"})
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


@pytest.mark.slow
@pytest.mark.parametrize("host, note", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_cli_studio_says_where_it_listens_and_stops_on_ctrl_c(runs, host, note):
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "studio", str(runs / "cnn"), "--port", "0",
                                "--host", host], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Studio for {runs} on http://127.0.0.1:") and line.endswith("Ctrl-C stops\n")
        address = line.split(" on ")[1].split()[0]
        url, _, token = address.rstrip("/").partition("/?token=")
        assert bool(token) == note  # bound beyond the loopback, the printed address carries the token
        with_token = f"?token={token}" if token else ""
        assert request(f"{url}/health{with_token}")[0] == 200
        digit = write_digits(runs.parent / "digits", 1)[0].read_bytes()
        assert request(f"{url}/predict{with_token}", digit)[0] == 200
        if note:
            assert request(f"{url}/health")[0] == request(f"{url}/predict", digit)[0] == 403
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and err.splitlines()[-1] == "cnnlab: interrupted"  # as `cnnlab serve`
    assert ("note: listening on 0.0.0.0, so other machines can reach the studio" in err) == note


# ---------------------------------------------------------------------------------------------------------
# Hard to break (issue #22): no 500s, bounded work, one JSON line for every error, only its own page may ask
# ---------------------------------------------------------------------------------------------------------
LOCAL = "http://127.0.0.1:8000"  # what a browser on this machine sends as the Host


@pytest.fixture(scope="module")
def client(runs):
    """The app in this process (FastAPI's TestClient), with no default run."""
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    with TestClient(create_app(runs, "cpu"), base_url=LOCAL) as client:
        yield client


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/predict?run=", 400),  # an empty run name with no default run: was a 500
    ("POST", "/predict?run=" + "a" * 256, 404),  # a name longer than the file system takes: was a 500
    ("POST", "/api/runs/" + "a" * 300 + "/look", 404),
    ("GET", "/api/runs/" + "b" * 1000, 404),
    ("GET", "/api/runs/%ff%fe", 404),  # not UTF-8
    ("POST", "/api/runs/cnn/look?test=", 400),
    ("OPTIONS", "/api/runs", 405),
    ("DELETE", "/health", 405),
    ("PUT", "/static/app.js", 405),
])
def test_crafted_requests_are_one_json_line_not_a_500(client, method, path, status, tmp_path):
    (digit,) = write_digits(tmp_path, 1)
    response = client.request(method, path, content=digit.read_bytes() if method == "POST" else None)
    assert response.status_code == status and set(response.json()) == {"error"}


def test_a_fault_no_check_foresaw_is_json_too(runs, monkeypatch):
    from fastapi.testclient import TestClient

    from cnnlab import runs as run_folders
    from cnnlab.studio import create_app

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(run_folders, "scan_runs", broken)
    with TestClient(create_app(runs, "cpu"), base_url=LOCAL, raise_server_exceptions=False) as client:
        response = client.get("/api/runs")
    assert response.status_code == 500
    assert response.json() == {"error": "the studio failed: RuntimeError: a bug (its terminal shows the traceback)"}


@pytest.mark.parametrize("gone", ["gone", "data; pass it on"])
def test_moved_data_is_explained_in_the_studios_terms(digit_run, tmp_path, gone):
    """The studio gives its own advice for the CLI's --data-dir, from the error's parts (DataMissing.missing): a
    folder named with "; pass " in it was cut there while the studio split the message's text."""
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    folder = tmp_path / "runs"
    shutil.copytree(digit_run, folder / "moved")
    move_data(folder / "moved", tmp_path / gone)
    with TestClient(create_app(folder, "cpu"), base_url=LOCAL) as client:
        response = client.post("/api/runs/moved/look?pick=true")
    assert (response.status_code, response.json()) == (400, {"error": (
        f"{folder / 'moved'} was trained on data in {tmp_path / gone}, which is gone: put the data back there to "
        "pick its test images in the studio, or draw or drop an image of your own")})


def test_the_openapi_document_shows_the_image_body_and_only_errors_that_are_sent(client):
    """It documented no body for the uploads and a 422 the studio never sends (its bad parameters are 400)."""
    document = client.get("/openapi.json").json()
    assert "422" not in json.dumps(document) and "HTTPValidationError" not in json.dumps(document)
    for path in ("/predict", "/api/runs/{name}/predict", "/api/runs/{name}/look", "/api/runs/{name}/value",
                 "/api/runs/{name}/attribution"):
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["content"]["image/*"]["schema"] == {"type": "string", "format": "binary"}
        assert operation["requestBody"]["required"] == (path in ("/predict", "/api/runs/{name}/predict"))
        assert operation["responses"]["4XX"]["content"]["application/json"]["schema"] == \
            {"$ref": "#/components/schemas/Refusal"}


def test_health_answers_as_cnnlab_serve_does(runs):
    """`cnnlab serve` names its run and classes; the studio named neither, though the README says alike."""
    from fastapi.testclient import TestClient

    from cnnlab import serve
    from cnnlab.studio import create_app

    server = serve.make_server(runs / "cnn", port=0, device="cpu")
    served = json.loads(server.health)
    server.server_close()
    with TestClient(create_app(runs, "cpu", default_run="cnn"), base_url=LOCAL) as client:
        studio = client.get("/health").json()
        assert client.head("/health").status_code == 200
    assert {key: studio[key] for key in served} == served
    assert sorted(studio["runs"]) == ["cnn", "mlp"]  # the link out and the damaged run are not listed (#22 item 3)


@pytest.mark.parametrize("headers, status", [
    ({}, 200),
    ({"Host": "localhost:8000"}, 200),
    ({"Host": "[::1]:8000"}, 200),
    ({"Host": "evil.example:8000"}, 403),  # DNS rebinding: a page of evil.example whose name now means 127.0.0.1
    ({"Host": "127.0.0.1.evil.example"}, 403),
])
def test_on_the_loopback_it_answers_only_requests_for_this_machine(client, headers, status):
    response = client.get("/api/runs", headers=headers)
    assert response.status_code == status and ("error" in response.json()) == (status == 403)


@pytest.mark.parametrize("headers, status", [
    ({"Origin": LOCAL}, 200),  # its own page
    ({}, 200),  # curl, a script
    ({"Sec-Fetch-Site": "same-origin"}, 200),
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403),  # a form or fetch of another site
    ({"Origin": "http://127.0.0.1:3000"}, 403),  # another server on this machine is another origin
    ({"Origin": "null"}, 403),  # a sandboxed frame, a file:// page
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),
])
def test_only_its_own_page_may_post(client, tmp_path, headers, status):
    (digit,) = write_digits(tmp_path, 1)
    response = client.post("/predict?run=cnn", content=digit.read_bytes(), headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "may not send requests to the studio" in response.json()["error"]


def test_bound_elsewhere_it_wants_the_token_it_printed(runs, tmp_path):
    """As Jupyter: the printed address carries ?token=…, which leaves a cookie for the page's own requests."""
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    app = create_app(runs, "cpu", host="0.0.0.0")
    token = app.state.token
    assert len(token) >= 32
    (digit,) = write_digits(tmp_path, 1)
    with TestClient(app, base_url="http://192.168.1.20:8000") as client:  # any name: another machine's view
        refused = client.get("/")
        assert refused.status_code == 403 and "token" in refused.json()["error"]
        assert client.get("/api/runs?token=wrong").status_code == 403
        assert client.get("/api/runs", headers={"Authorization": f"token {token}"}).status_code == 200
        assert client.get("/api/runs", headers={"Authorization": "token ünïcode".encode()}).status_code == 403
        first = client.get(f"/?token={token}")
        assert first.status_code == 200 and "httponly" in first.headers["set-cookie"].lower()
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        assert client.post("/predict?run=cnn", content=digit.read_bytes()).status_code == 200  # by the cookie
        client.cookies.clear()
        assert client.post("/predict?run=cnn", content=digit.read_bytes()).status_code == 403


def test_a_small_request_is_answered_while_a_large_upload_decodes(runs, tmp_path, held_decode):
    """Decoding ran on the model's one thread: a large upload held up every other request behind it."""
    from concurrent.futures import ThreadPoolExecutor

    (small,) = write_digits(tmp_path, 1)
    with running_studio(runs) as url, ThreadPoolExecutor(1) as pool:
        uploading = pool.submit(request, f"{url}/api/runs/cnn/look", held_decode.body)
        assert held_decode.decoding.wait(timeout=10)
        try:
            with urllib.request.urlopen(f"{url}/predict?run=mlp", small.read_bytes(), timeout=5) as response:
                assert response.status == 200
            with urllib.request.urlopen(f"{url}/api/runs/cnn/look?test=1", b"", timeout=5) as response:
                assert response.status == 200
        finally:
            held_decode.done.set()
        assert uploading.result(timeout=10) == (400, {"error": "request body: decoded at last"})


def test_a_client_that_hangs_up_mid_upload_leaves_no_traceback(runs, capfd):
    """Its ClientDisconnect went up through every middleware into a page of traceback in the terminal."""
    import socket
    import struct
    import time

    with running_studio(runs) as url:
        for _ in range(3):
            connection = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            connection.sendall(b"POST /predict?run=cnn HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n"
                               + b"\0" * 1000)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up: reset
            connection.close()
        time.sleep(0.5)
        assert request(f"{url}/health")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
