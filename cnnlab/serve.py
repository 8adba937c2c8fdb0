"""Serving: a run behind a small HTTP server from the standard library, for trying a model from other programs.

``GET /health`` says which run and classes it serves; ``POST /predict`` takes an image file's bytes as the body
and answers the ``?top=K`` classes (default 3) exactly as ``cnnlab predict RUN IMAGE --json`` lists them, the
image prepared by the run's own method. Errors are JSON ``{"error": "one line"}`` with status 400 (not an
image, bad ``top``), 404, 405, 411 (no Content-Length) or 413 (a body over MAX_BODY). Not hardened for the
open internet: it binds to 127.0.0.1 unless told otherwise, and has no authentication or rate limit.
"""
from __future__ import annotations

import json
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import torch

from .device import Device
from .errors import CnnlabError

MAX_BODY = 10 * 1024 * 1024  # bytes; a larger upload is refused (413) before it is read
DEFAULT_TOP = 3  # classes per answer, as `cnnlab predict` shows
ROUTES = {"/health": "GET", "/predict": "POST"}


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def make_server(run_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                device: Device = None, max_body: int = MAX_BODY) -> ThreadingHTTPServer:
    """Load the run once and bind a server to ``host``:``port`` (0: any free port); ``serve_forever`` runs it.

    ``device``: a name or a torch.device; None is 'auto'."""
    from .device import choose_device
    from .predict import predict_upload
    from .runs import load_run

    run = load_run(run_dir)
    device = choose_device(device)
    run.model.to(device)  # the run is the server's own
    lock = threading.Lock()  # one forward pass at a time: the model is shared by the request threads
    health = json.dumps({"status": "ok", "run": str(run.run_dir), "classes": list(run.info.classes)})

    def predict(body: bytes, query: str) -> str:
        top = _top(query)
        try:
            with lock, torch.inference_mode():
                prediction = predict_upload(run, body, device)  # as `predict` does
        except CnnlabError as error:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(error)) from None
        return json.dumps({"predictions": prediction.to_json(run.info.classes, top)["top"]})

    class Handler(BaseHTTPRequestHandler):
        server_version = "cnnlab"

        def _handle(self) -> None:
            url = urlsplit(self.path)
            try:
                if url.path not in ROUTES:
                    raise HTTPError(HTTPStatus.NOT_FOUND, f"{url.path}: no such endpoint; use GET /health "
                                                          "or POST /predict")
                if self.command != ROUTES[url.path]:
                    raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{url.path} takes {ROUTES[url.path]}, "
                                                                   f"not {self.command}")
                self._send(HTTPStatus.OK, health if url.path == "/health" else predict(self._body(), url.query))
            except HTTPError as error:
                self._send(error.status, json.dumps({"error": str(error)}))

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True  # whatever body follows is not read
                raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "send the image as the body, with a Content-Length")
            if int(length) > max_body:
                self.close_connection = True
                raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is {int(length):,} bytes, over "
                                                                     f"the limit of {max_body:,}; send a smaller image")
            return self.rfile.read(int(length))

        def _send(self, status: HTTPStatus, text: str) -> None:
            payload = text.encode() + b"\n"
            self.send_response(status)
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", ROUTES[urlsplit(self.path).path])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as error:
        raise CnnlabError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another "
                          "--port or --host") from None
    server.daemon_threads = True  # Ctrl-C does not wait for a slow client
    return server



def _top(query: str) -> int:
    values = parse_qs(query).get("top", [str(DEFAULT_TOP)])
    try:
        top = int(values[-1])
    except ValueError:
        top = 0
    if top < 1:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"top={values[-1]!r}: expected a number of classes, at least 1")
    return top
