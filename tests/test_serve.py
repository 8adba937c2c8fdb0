"""The HTTP server: real requests on a free port; its answers equal `cnnlab predict --json`, its errors are JSON."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from cnnlab import cli, serve
from cnnlab.errors import CnnlabError
from conftest import REPO
from test_predict import write_digits

MAX_BODY = 4096  # bytes: small, so that a test can pass it


@pytest.fixture
def server(digit_run):
    server = serve.make_server(digit_run, port=0, device="cpu", max_body=MAX_BODY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers), for errors too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method,
                                                           headers={"Content-Type": "image/png"})) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_health_names_the_run_and_its_classes(server, digit_run):
    assert request(f"{server}/health")[:2] == (200, {"status": "ok", "run": str(digit_run),
                                                     "classes": list("0123456789")})


@pytest.mark.parametrize("top", [None, 1, 10])
def test_a_served_prediction_equals_cnnlab_predict_json(server, digit_run, tmp_path, capsys, top):
    paths = write_digits(tmp_path / "mine", 3)
    assert cli.main(["predict", str(digit_run), *map(str, paths), "--json", "--device", "cpu",
                     "--top", str(top or 3)]) == 0
    expected = [json.loads(line)["top"] for line in capsys.readouterr().out.splitlines()]
    for path, top_k in zip(paths, expected):
        status, body, headers = request(f"{server}/predict" + (f"?top={top}" if top else ""), path.read_bytes())
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert body == {"predictions": top_k} and len(top_k) == (top or 3)


def test_concurrent_requests_get_the_same_answers(server, tmp_path):
    paths = write_digits(tmp_path / "mine", 4) * 4
    one_by_one = [request(f"{server}/predict", path.read_bytes()) for path in paths[:4]]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda path: request(f"{server}/predict", path.read_bytes()), paths))
    assert [answer[:2] for answer in together] == [answer[:2] for answer in one_by_one] * 4


@pytest.mark.parametrize("body, message", [
    (b"not an image at all", "request body: not an image Pillow can read; use PNG, JPEG, BMP, GIF, WebP or TIFF"),
    (b"", "request body: empty file (0 bytes); expected an image"),
])
def test_a_bad_image_is_400_with_one_line(server, body, message):
    assert request(f"{server}/predict", body)[:2] == (400, {"error": message})


@pytest.mark.parametrize("top", ["0", "x", "-1"])
def test_a_bad_top_is_400(server, tmp_path, top):
    (path,) = write_digits(tmp_path, 1)
    assert request(f"{server}/predict?top={top}", path.read_bytes())[:2] == (
        400, {"error": f"top={top!r}: expected a number of classes, at least 1"})


def test_unknown_paths_and_wrong_methods(server):
    assert request(f"{server}/nope")[:2] == (404, {"error": "/nope: no such endpoint; use GET /health or "
                                                            "POST /predict"})
    status, body, headers = request(f"{server}/predict")
    assert (status, body, headers["Allow"]) == (405, {"error": "/predict takes POST, not GET"}, "POST")
    status, body, headers = request(f"{server}/health", b"{}", method="DELETE")
    assert (status, body, headers["Allow"]) == (405, {"error": "/health takes GET, not DELETE"}, "GET")


def test_a_body_over_the_limit_is_413_and_one_without_length_411(server):
    assert request(f"{server}/predict", b"\0" * (MAX_BODY + 1))[:2] == (413, {
        "error": f"the body is {MAX_BODY + 1:,} bytes, over the limit of {MAX_BODY:,}; send a smaller image"})
    connection = http.client.HTTPConnection(server.removeprefix("http://"))
    connection.putrequest("POST", "/predict")  # no Content-Length, no body
    connection.endheaders()
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (
        411, {"error": "send the image as the body, with a Content-Length"})
    connection.close()


def test_a_port_in_use_is_one_line(server, digit_run):
    port = int(server.rsplit(":", 1)[1])
    with pytest.raises(CnnlabError, match=f"cannot listen on 127.0.0.1:{port} .*; choose another --port"):
        serve.make_server(digit_run, port=port)


def test_cli_serve_answers_then_stops_on_ctrl_c(digit_run):
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "serve", str(digit_run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               # a shell's background job ignores SIGINT, and its children would inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Serving {digit_run} on http://127.0.0.1:") and line.endswith("Ctrl-C stops\n")
        url = line.split(" on ")[1].split()[0]
        assert request(f"{url}/health")[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and err.splitlines()[-1] == "cnnlab: interrupted"


def test_the_server_takes_a_torch_device(digit_run):
    """make_server(device=torch.device('cpu')) raised AttributeError although its signature allows it."""
    import torch

    server = serve.make_server(digit_run, port=0, device=torch.device("cpu"))
    server.server_close()
    server = serve.make_server(digit_run, port=0)  # None: 'auto'
    server.server_close()
