"""Serving: a run behind a small HTTP server from the standard library, for trying a model from other programs.

``GET /health`` says which run and classes it serves; ``POST /predict`` takes an image file's bytes as the body
and answers the ``?top=K`` classes (default 3) exactly as ``cnnlab predict RUN IMAGE --json`` lists them, the
image prepared by the run's own method. Every answer is JSON; errors are ``{"error": "one line"}`` with status 400
(not an image, bad ``top``, a malformed request), 404, 405 (any other method, with ``Allow``), 411 (no
Content-Length) or 413 (a body over MAX_BODY). HEAD answers as GET without the body. An image is decoded on its
request's thread and only the forward pass waits for the model; a connection quiet for IDLE_TIMEOUT is closed.
Not hardened for the open internet: it binds to 127.0.0.1 unless told otherwise, and has no authentication or
rate limit.
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import torch

from .device import Device
from .errors import CnnlabError

if TYPE_CHECKING:
    from .runs import Run

MAX_BODY = 10 * 1024 * 1024  # bytes; a larger upload is refused (413) before it is read
DEFAULT_TOP = 3  # classes per answer, as `cnnlab predict` shows
IDLE_TIMEOUT = 30.0  # seconds a connection may send nothing before it is closed (idle, half-open or slow clients)
ROUTES = {"/health": "GET", "/predict": "POST"}
UPLOAD = "request body"  # how an uploaded image is named in error messages


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, IPv6 in brackets or not) is this machine's loopback: only it can connect."""
    host = host.strip("[]").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------
# What both servers do with an upload (the studio's /predict answers as this one does)
# ---------------------------------------------------------------------------------------------------------
def prepare_upload(run: Run, body: bytes) -> torch.Tensor:
    """The uploaded image as the run's network takes it, prepared as `cnnlab predict` prepares a file.

    Decoding is most of a request's work: callers do it on the request's own thread, never while holding the
    model, so that one large image does not hold up everyone else's answers.
    """
    from .images import prepare_file

    return prepare_file(UPLOAD, run.info.preprocess, run.info.in_shape, data=body)


def predictions(run: Run, image: torch.Tensor, device: Device, top: int) -> dict:
    """``/predict``'s answer for a prepared image: the ``top`` classes as ``cnnlab predict --json`` lists them."""
    from .prediction import FilePrediction, predict_proba

    probabilities = predict_proba(run, image[None], device)[0]
    return {"predictions": FilePrediction(UPLOAD, image, probabilities).to_json(run.info.classes, top)["top"]}


# ---------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------
def make_server(run_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                device: Device = None, max_body: int = MAX_BODY) -> Server:
    """Load the run once and bind a server to ``host``:``port`` (0: any free port); ``serve_forever`` runs it.

    ``device``: a name or a torch.device; None is 'auto'."""
    from .device import choose_device
    from .images import return_freed_memory
    from .runs import load_run

    return_freed_memory()
    run = load_run(run_dir)
    device = choose_device(device)
    run.model.to(device)  # the run is the server's own
    try:
        return Server((host, port), run, device, max_body)
    except (OSError, OverflowError) as error:
        raise CnnlabError(f"cannot listen on {host}:{port} ({getattr(error, 'strerror', None) or error}); "
                          "choose another --port or --host") from None


class Server(ThreadingHTTPServer):
    """One thread per connection; the run, its device and the lock that lets one forward pass run at a time."""

    daemon_threads = True  # Ctrl-C does not wait for a slow client

    def __init__(self, address: tuple[str, int], run: Run, device: torch.device, max_body: int):
        self.run, self.device, self.max_body = run, device, max_body
        self.lock = threading.Lock()  # the model is shared by the request threads
        self.health = json.dumps({"status": "ok", "run": str(run.run_dir), "classes": list(run.info.classes)})
        super().__init__(address, Handler)

    def handle_error(self, request, client_address) -> None:
        """A client that went away or fell silent is no fault of the server's: no traceback for it."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "cnnlab"
    timeout = IDLE_TIMEOUT  # on the socket: a read that waits longer ends the connection

    def _handle(self) -> None:
        path, _, query = self.path.partition("#")[0].partition("?")
        try:
            if path not in ROUTES:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"{path[:100]}: no such endpoint; use GET /health or "
                                                      "POST /predict")
            allowed = ROUTES[path]
            if self.command != allowed and not (self.command == "HEAD" and allowed == "GET"):
                raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {allowed}, not {self.command}")
            self._send(HTTPStatus.OK, self.server.health if path == "/health" else self._predict(query))
        except HTTPError as error:
            self._send(error.status, json.dumps({"error": str(error)}), ROUTES.get(path))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _handle

    def _predict(self, query: str) -> str:
        top, server = _top(query), self.server
        try:
            image = prepare_upload(server.run, self._body())  # on this thread, while others use the model
            with server.lock, torch.inference_mode():
                return json.dumps(predictions(server.run, image, server.device, top))
        except CnnlabError as error:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from None

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # whatever body follows is not read
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "send the image as the body, with a Content-Length")
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"Content-Length {length[:40]!r}: expected a number of bytes")
        limit = self.server.max_body
        if len(length) > 15 or int(length) > limit:
            self.close_connection = True
            size = f"{int(length):,} bytes" if len(length) <= 15 else "over a petabyte"
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is {size}, over the limit of {limit:,}; "
                                                                 "send a smaller image")
        return self.rfile.read(int(length))

    def _send(self, status: HTTPStatus, text: str, allow: str | None = None) -> None:
        payload = text.encode() + b"\n"
        self.send_response(status)
        if status == HTTPStatus.METHOD_NOT_ALLOWED and allow:
            self.send_header("Allow", f"{allow}, HEAD" if allow == "GET" else allow)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the standard library refuses itself (a malformed request line or header, an unknown method), as
        JSON like every other answer."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self.command = getattr(self, "command", None) or ""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":  # a line it could not read: answer in
            self.request_version = "HTTP/1.0"  # HTTP/1.0, with a status line, not as HTTP/0.9's bare body
        self._send(HTTPStatus(code), json.dumps({"error": message or HTTPStatus(code).phrase}))


def _top(query: str) -> int:
    values = parse_qs(query).get("top", [str(DEFAULT_TOP)])
    try:
        top = int(values[-1])
    except ValueError:
        top = 0
    if top < 1:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"top={values[-1][:40]!r}: expected a number of classes, at least 1")
    return top
