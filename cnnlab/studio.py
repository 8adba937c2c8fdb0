"""The studio: a local web app over a folder of runs — draw or drop an image and watch the network's every layer
work on it, click a value to see how it is made, follow a training run's curves as its epochs end.

A thin skin over the library (``cnnlab.inside``, ``cnnlab.predict``, ``cnnlab.explain``, ``cnnlab.runs``):
each path function checks its input, makes one call and returns data. The page is static files in
``cnnlab/web/`` (no build step, nothing from the internet). Activations travel as 8-bit grey PNGs with their
range. ``GET /health`` and ``POST /predict`` answer as ``cnnlab serve`` does; ``/openapi.json`` documents it all.
Made for one person on their own machine: it binds to 127.0.0.1 unless told otherwise, with no authentication.
"""
from __future__ import annotations

import base64
import io
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import CnnlabError
from .serve import DEFAULT_TOP, MAX_BODY  # the same limits and answers as `cnnlab serve`

WEB = Path(__file__).with_name("web")
CACHED_RUNS = 4  # loaded models kept in memory, the most recently used
T = TypeVar("T")


class Runs:
    """The runs folder: run names checked against it, models loaded once (again when the weights change)."""

    def __init__(self, runs_dir: Path, device: torch.device):
        self.root, self.device = runs_dir.resolve(), device
        # Every model computation on one thread: one forward pass at a time (tracing hooks the shared model), and
        # one team of PyTorch threads, not one per request thread, which made a look 5× slower on a busy machine.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-model")
        self._loaded: dict[str, tuple[int, Any]] = {}
        self._tests: dict[str, Any] = {}

    def folder(self, name: str) -> Path:
        """The run folder ``name``, directly in the runs folder: '..', slashes, hidden names and symlinks that
        lead out are 404, as an unknown name is."""
        from .runs import run_folder

        folder = run_folder(self.root, name)  # the rule the run list follows: it lists only what opens
        if folder is None:
            raise HTTPException(404, f"{name[:100]}: no such run in {self.root}")
        return folder

    def compute(self, name: str, work: Callable[[Any], T]) -> T:
        """``work(run)`` for the run ``name``, on the model thread; its answer or its exception."""
        folder = self.folder(name)
        return self._worker.submit(lambda: work(self._load(folder))).result()

    def _load(self, folder: Path):
        from .runs import load_run

        name = folder.name
        weights = folder / "weights.safetensors"
        stamp = weights.stat().st_mtime_ns if weights.exists() else 0
        if name not in self._loaded or self._loaded[name][0] != stamp:
            run = load_run(folder)
            run.model.to(self.device)
            self._loaded[name] = (stamp, run)
            while len(self._loaded) > CACHED_RUNS:
                del self._loaded[next(iter(self._loaded))]
        self._loaded[name] = self._loaded.pop(name)  # the most recently used goes last
        return self._loaded[name][1]

    def test_set(self, run):
        from .runs import load_test_set

        key = str(run.run_dir)
        if key not in self._tests:
            try:  # where the run was trained from; one at a time: MNIST's is 7.8 MB
                self._tests = {key: load_test_set(run)}
            except CnnlabError as error:  # its advice is `cnnlab evaluate`'s --data-dir, which the studio does not take
                gone, advice, _ = str(error).partition("; pass --data-dir")
                if not advice:
                    raise
                raise CnnlabError(f"{gone}: put the data back there to pick its test images in the studio, "
                                  "or draw or drop an image of your own") from None
        return self._tests[key]


async def read_body(request: Request) -> bytes:
    """The request's body, refused with 413 once it passes MAX_BODY (whether or not it said its length)."""
    limit = request.app.state.max_body
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"the body is {int(length):,} bytes, over the limit of {limit:,}; "
                                 "send a smaller image")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is over the limit of {limit:,} bytes; send a smaller image")
    return bytes(body)


def png(image: torch.Tensor) -> str:
    """A uint8 (C, H, W) image as base64 PNG, grey or RGB, pixel for pixel."""
    from PIL import Image

    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def create_app(runs_dir: str | os.PathLike, device: str = "cpu", default_run: str | None = None,
               max_body: int = MAX_BODY) -> FastAPI:
    """The studio's ASGI app for the runs in ``runs_dir``; ``default_run`` answers a /predict that names none."""
    from .device import resolve_device
    from .explain import occlusion, saliency
    from .images import prepare_file
    from .inference import answer
    from .inside import activations, explain_cell, explain_value, quantise
    from .predict import UPLOAD, predict_proba, predict_upload
    from .runs import Run, scan_runs

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CnnlabError(f"{runs_dir}: no such folder; `cnnlab train` writes runs under ./runs (or --runs-dir)")
    runs = Runs(runs_dir, resolve_device(device))
    app = FastAPI(title="cnnlab studio", version="1", docs_url=None, redoc_url=None)  # their pages load from a CDN
    app.state.max_body = max_body
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # gives back most of base64's third on the PNGs

    @app.middleware("http")
    async def server_timing(request: Request, call_next):
        """The time the app took, in the standard Server-Timing header (browsers' dev tools show it)."""
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.2f}"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if error.status_code != 404 or error.detail != "Not Found" else \
            f"{request.url.path}: no such page or endpoint"
        return JSONResponse({"error": message}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        return JSONResponse({"error": f"{'.'.join(map(str, first['loc'][1:]))}: {first['msg']}"}, 400)

    @app.exception_handler(CnnlabError)
    async def cnnlab_error(request: Request, error: CnnlabError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, 400)

    def image_of(run, body: bytes, test: int | None, pick: bool) -> tuple[torch.Tensor, dict]:
        """The uint8 input: the uploaded image prepared as `predict` prepares it, or a test image."""
        if test is None and not pick:  # named as predict_upload names it, so the errors read the same
            return prepare_file(UPLOAD, run.info.preprocess, run.info.in_shape, data=body), {"source": "your image",
                                                                                             "label": None}
        images = runs.test_set(run)
        index = random.randrange(len(images)) if pick else test
        if not 0 <= index < len(images):
            raise CnnlabError(f"test={index}: the test set holds images 0 to {len(images) - 1}")
        return images.images[index], {"source": f"test image #{index}", "index": index,
                                      "label": images.classes[int(images.labels[index])]}

    # --- the page ---------------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    # --- the API that `cnnlab serve` has too ----------------------------------------------------------------
    @app.get("/health")
    def health() -> dict:
        listed, _ = scan_runs(runs.root)
        return {"status": "ok", "runs_dir": str(runs.root), "runs": [run.run_dir.name for run in listed]}

    @app.post("/predict")
    def predict(run: str | None = None, top: int = DEFAULT_TOP, body: bytes = Depends(read_body)) -> dict:
        """The ``top`` classes for the image in the body, as ``cnnlab predict RUN IMAGE --json`` lists them."""
        if run is None and default_run is None:
            raise HTTPException(400, "name the run: POST /predict?run=NAME")
        return predict_run(run or default_run, top, body)

    @app.post("/api/runs/{name}/predict")
    def predict_run(name: str, top: int = DEFAULT_TOP, body: bytes = Depends(read_body)) -> dict:
        if top < 1:
            raise HTTPException(400, f"top={top}: expected a number of classes, at least 1")
        return runs.compute(name, lambda run: {
            "predictions": predict_upload(run, body, runs.device).to_json(run.info.classes, top)["top"]})

    # --- runs and their curves -----------------------------------------------------------------------------
    @app.get("/api/runs")
    def list_all() -> dict:
        listed, damaged = scan_runs(runs.root)
        return {"runs_dir": str(runs.root), "default": default_run,
                "runs": [describe(run) for run in listed],
                "damaged": [{"name": folder.name, "error": error} for folder, error in damaged]}

    def describe(run: Run) -> dict:
        from dataclasses import asdict

        info = run.info if run.has("model.json") else None  # None: just after recipe.json, as a run starts
        return {"name": run.run_dir.name, "recipe": run.recipe.name, "dataset": run.recipe.dataset,
                "model": run.recipe.model, "epochs": len(run.history), "of": run.recipe.epochs,
                "best_val_accuracy": run.best_val_accuracy, "test_accuracy": run.test_accuracy,
                "seconds": run.seconds, "device": run.environment.get("device"),
                "created": run.environment.get("created"), "finished": run.finished,
                "evaluated": run.has("evaluation/metrics.json"),
                "preprocess": info and info.preprocess, "classes": info and list(info.classes),
                "in_shape": info and list(info.in_shape), "history": [asdict(row) for row in run.history]}

    @app.get("/api/runs/{name}")
    def one(name: str) -> dict:
        return describe(Run(runs.folder(name)).check())

    @app.get("/api/runs/{name}/evaluation")
    def evaluation(name: str) -> dict:
        evaluated = Run(runs.folder(name)).read_evaluation()
        if evaluated is None:
            raise HTTPException(404, f"{name}: not evaluated yet; run `cnnlab evaluate {name}`")
        return evaluated

    # --- inside the network ------------------------------------------------------------------------------
    @app.post("/api/runs/{name}/look")
    def look(name: str, test: int | None = None, pick: bool = False, body: bytes = Depends(read_body)) -> dict:
        """Every class's probability, the input as the network received it and every layer's activations."""
        def work(run) -> dict:
            image, source = image_of(run, body, test, pick)
            layers = activations(run, image)
            probabilities = answer(layers[-1].values)  # the bars: softmax of the logits shown last
            return {**source, "input": png(image),
                    "predictions": [{"class": i, "label": run.info.classes[i],
                                     "probability": round(float(probabilities[i]), 6)}
                                    for i in probabilities.argsort(descending=True).tolist()],
                    "layers": [{"name": a.name, "kind": a.kind, "shape": list(a.values.shape),
                                **({"note": a.note} if a.note else {}), **quantise(a.values).to_json()}
                               for a in layers],
                    "logits": layers[-1].values.tolist()}  # exact, for the page's softmax: the bars' logits
        return runs.compute(name, work)

    @app.post("/api/runs/{name}/value")
    def value(name: str, layer: str, channel: int, row: int, col: int, test: int | None = None,
              body: bytes = Depends(read_body)) -> dict:
        """How the value at (channel, row, col) of convolution ``layer`` is made, and where it goes next."""
        return runs.compute(name, lambda run: explain_value(run, image_of(run, body, test, False)[0], layer, channel,
                                                            row, col).to_json())

    @app.post("/api/runs/{name}/cell")
    def cell(name: str, layer: str, channel: int, row: int = 0, col: int = 0, test: int | None = None,
             body: bytes = Depends(read_body)) -> dict:
        """How the value at (channel, row, col) of any layer — (channel) of a vector — is made from its input."""
        return runs.compute(name, lambda run: explain_cell(run, image_of(run, body, test, False)[0], layer, channel,
                                                           row, col))

    @app.post("/api/runs/{name}/attribution")
    def attribution(name: str, test: int | None = None, body: bytes = Depends(read_body)) -> dict:
        """Gradient saliency and occlusion for the most probable class, as ``cnnlab explain`` draws them."""
        def work(run) -> dict:
            image, _ = image_of(run, body, test, False)
            target = int(predict_proba(run, image[None])[0].argmax())  # of the logits the answer comes from (TTA)
            maps = {"saliency": saliency(run, image, target), "occlusion": occlusion(run, image, target)}
            return {"target": target, "label": run.info.classes[target],
                    **{key: quantise(values).to_json() for key, values in maps.items()}}
        return runs.compute(name, work)

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, made before the server starts so that port 0's real port can be printed."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio then sets TCP_NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the queue until the server starts taking them
    except OSError as error:
        raise CnnlabError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another "
                          "--port or --host") from None
    return sock


def serve_studio(app: FastAPI, sock: socket.socket) -> None:
    """Run ``app`` on the bound socket until Ctrl-C, PyTorch on one thread: the studio's work is one image at a
    time, where a second thread gains nothing and, on a busy machine, waits for the first (a look took 230–280
    ms with two threads at load average 9 on 2 cores, 10–12 ms with one)."""
    import uvicorn

    torch.set_num_threads(1)

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
