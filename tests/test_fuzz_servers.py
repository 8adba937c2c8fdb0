"""Property-based tests of both servers' HTTP layer: whatever the path, query string, headers and body, the answer
is never a 5xx, and every answer but a page or a static file is JSON, with ``{"error": …}`` for a refusal.

The studio runs in this process under FastAPI's TestClient, which raises any exception the app does not turn into
an answer; `cnnlab serve` runs for real on 127.0.0.1, on a free port, and is sent raw bytes. The examples are
modest so the file takes seconds; CNNLAB_FUZZ_EXAMPLES=2000 searches longer.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab import serve

pytestmark = pytest.mark.slow  # hundreds of requests to both servers: `make quick` leaves them out

FUZZ = settings(max_examples=int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
METHODS = ["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


def png(size: tuple[int, int] = (28, 28), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 200).save(buffer, "PNG")
    return buffer.getvalue()


VALID = [png(), png((64, 40), "RGBA"), png((1, 1), "1")]
CLAIMED = png((8, 8))[:16] + (30_000).to_bytes(4, "big") * 2 + png((8, 8))[24:]  # claims 30000×30000; bad CRC


@st.composite
def mutated(draw) -> bytes:
    """A valid image with a few bytes flipped, cut or put in."""
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:at + draw(st.integers(1, 40))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(raw)


BODIES = st.sampled_from([b"", CLAIMED, *VALID]) | mutated() | st.binary(max_size=300)
NAMES = st.sampled_from(["digit", "damaged", "nope", "..", ".hidden", "", "a" * 300, "%2e%2e", "%ff", "digit/..",
                         "%00", "con", "d%C3%AFgit"])
SEGMENT = NAMES | st.text(max_size=12).map(lambda text: quote(text, safe=""))
PATHS = st.sampled_from(["/", "/health", "/predict", "/openapi.json", "/api/runs", "/static/app.js", "/static/",
                         "/static/..%2f..%2fstudio.py", "/api/runs/digit/evaluation"]) | \
    st.builds(lambda name, end: f"/api/runs/{name}{end}", NAMES,
              st.sampled_from(["", "/look", "/value", "/attribution", "/predict", "/evaluation", "/x"])) | \
    st.builds(lambda name, end: f"/api/teach/{name}{end}", NAMES,  # the Teach view's projects
              st.sampled_from(["", "/classes", "/classes/a", "/classes/a/examples", "/classes/a/examples/0001.png",
                               "/train", "/stop", "/resume"])) | \
    st.lists(SEGMENT, max_size=4).map(lambda parts: "/" + "/".join(parts))
VALUES = st.sampled_from(["", "0", "1", "-1", "3", "10", "99999999999999999999", "1e3", "x", "true", "null", "conv2d",
                          "dense", "digit", "%ff", "٣"]) | st.integers(-2**70, 2**70).map(str) | st.text(max_size=8)
KEYS = st.sampled_from(["run", "top", "test", "pick", "layer", "channel", "row", "col", "token"]) | st.text(max_size=5)
QUERIES = st.lists(st.tuples(KEYS, VALUES), max_size=5).map(
    lambda pairs: "&".join(f"{quote(key, safe='')}={quote(value, safe='%')}" for key, value in pairs))
HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=40)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Accept", "Accept-Encoding", "Origin", "Sec-Fetch-Site", "Cookie", "Range",
                     "Authorization", "X-Forwarded-For", "Expect", "If-None-Match", "Referer"])
    | st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True),
    st.sampled_from(["image/png", "text/plain", "application/json", "gzip", "bytes=0-1", "100-continue", "null",
                     "http://127.0.0.1:8000", "http://evil.example", "cross-site", "same-origin"]) | HEADER_VALUE,
    max_size=4)


def check(status: int, headers: dict, body: bytes, method: str, path: str) -> None:
    assert status < 500, (status, body[:300])
    if method == "HEAD" or status in (204, 304):
        return
    if status < 400 and (path == "/" or path.startswith("/static/")):
        return  # the page and its files
    answer = json.loads(body)
    if status >= 400:
        assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]


# ---------------------------------------------------------------------------------------------------------
# The studio, in this process
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(trained_runs, tmp_path_factory):
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    runs = tmp_path_factory.mktemp("fuzz-studio")
    shutil.copytree(trained_runs["mlp"], runs / "digit")  # its test images are at hand: ?test= and ?pick= work
    (runs / "damaged").mkdir()
    (runs / "damaged" / "recipe.json").write_text("[]")
    with TestClient(create_app(runs, "cpu", max_body=4096), base_url="http://127.0.0.1:8000") as client:
        yield client  # an exception the app does not answer fails the test, traceback and all


@FUZZ
@given(method=st.sampled_from(METHODS), path=PATHS, query=QUERIES, headers=HEADERS, body=BODIES)
def test_the_studio_never_answers_5xx(studio, method, path, query, headers, body):
    url = f"{studio.base_url}{path}?{query}" if query else f"{studio.base_url}{path}"  # whole: "//x" is a path
    response = studio.request(method, url, headers={name: value.encode("latin-1") for name, value in headers.items()},
                              content=body if method not in ("GET", "HEAD") else None)
    check(response.status_code, dict(response.headers), response.content, method, response.request.url.path)


# ---------------------------------------------------------------------------------------------------------
# `cnnlab serve`, for real on a free port
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(trained_runs):
    server = serve.make_server(trained_runs["mlp"], port=0, device="cpu", max_body=4096)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


LENGTHS = st.sampled_from(["exact", "exact", "exact", "none", "abc", "-1", "²", "9" * 30, "4097", " 3"])


def request_bytes(method: str, target: str, headers: dict, body: bytes, length: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in ("expect", "host")]
    if length != "none":
        lines.append(f"Content-Length: {len(body) if length == 'exact' else length}")
    return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body


@FUZZ
@given(method=st.sampled_from(METHODS), path=PATHS, query=QUERIES, headers=HEADERS, body=BODIES, length=LENGTHS)
def test_cnnlab_serve_never_answers_5xx(served, method, path, query, headers, body, length):
    target = f"{path}?{query}" if query else path
    with socket.create_connection(("127.0.0.1", served), timeout=20) as connection:
        connection.sendall(request_bytes(method, target, headers, body, length))
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    check(int(status_line.split()[1]), dict(line.split(": ", 1) for line in lines), content, method, path)
