"""The studio: a local web app over a folder of runs — draw or drop an image and watch the network's every layer
work on it, click a value to see how it is made, follow a training run's curves as its epochs end, teach a network
classes of your own (the Teach view: examples, `cnnlab train teach` in a child process, tried live).

A thin skin over the library (``cnnlab.inside``, ``cnnlab.prediction``, ``cnnlab.explain``, ``cnnlab.runs``,
``cnnlab.teach``):
each path function checks its input, makes one call and returns data. The page is static files in
``cnnlab/web/`` (no build step, nothing from the internet). Activations travel as 8-bit grey PNGs with their
range. ``GET /health`` and ``POST /predict`` answer as ``cnnlab serve`` does; ``/openapi.json`` documents it all.
Every error is one line of JSON. An upload is decoded on its request's thread, the model's work done on one
thread of its own. Made for one person on their own machine: on the loopback (the default) it answers only
requests addressed to this machine by name (no DNS rebinding) and only its own page's POSTs (no cross-site
requests); bound elsewhere it asks for a token, as Jupyter does.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .errors import CnnlabError, DataMissing, NotFound
from .serve import DEFAULT_TOP, MAX_BODY, is_loopback, predictions, prepare_upload  # as `cnnlab serve`
from .teach import MAX_EXAMPLE_BYTES, Trainings

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

    def prepare(self, name: str, body: bytes) -> torch.Tensor:
        """The uploaded image prepared for the run ``name`` as `cnnlab predict` prepares a file: decoded on the
        calling thread while the model thread serves others (decoding a large image is most of a request's work)."""
        return prepare_upload(self.compute(name, lambda run: run), body)

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
            except DataMissing as error:  # its advice is `cnnlab evaluate`'s --data-dir, which the studio does not take
                raise CnnlabError(f"{error.missing}: put the data back there to pick its test images in the studio, "
                                  "or draw or drop an image of your own") from None
        return self._tests[key]


async def read_body(request: Request) -> bytes:
    """The request's body, refused with 413 once it passes MAX_BODY (whether or not it said its length)."""
    return await read_limited(request, request.app.state.max_body)


async def read_example(request: Request) -> bytes:
    """An example's body for the Teach view: at most MAX_EXAMPLE_BYTES."""
    return await read_limited(request, min(MAX_EXAMPLE_BYTES, request.app.state.max_body))


async def read_limited(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 15 or int(length) > limit):
        size = f"{int(length):,} bytes" if len(length) <= 15 else "over a petabyte"
        raise HTTPException(413, f"the body is {size}, over the limit of {limit:,}; send a smaller image")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"the body is over the limit of {limit:,} bytes; send a smaller image")
    except ClientDisconnect:  # it hung up halfway: no one to answer, and no fault of the studio's to log
        raise HTTPException(400, "the client went away before the body ended") from None
    return bytes(body)


def png(image: torch.Tensor) -> str:
    """A uint8 (C, H, W) image as base64 PNG, grey or RGB, pixel for pixel."""
    from PIL import Image

    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------------------------------------------------
# The app: who may ask, how errors read, then the routes, a router for each part of the page
# ---------------------------------------------------------------------------------------------------------
class Refusal(BaseModel):
    error: str  # one line: what was wrong and what to do


IMAGE = {"type": "string", "format": "binary"}  # an image file's bytes: PNG, JPEG, GIF, BMP or WebP
UPLOAD_BODY = {"requestBody": {"required": True, "description": f"an image file, at most {MAX_BODY:,} bytes",
                               "content": {"image/*": {"schema": IMAGE}}}}
UPLOAD_OR_TEST = {"requestBody": {"required": False, "content": {"image/*": {"schema": IMAGE}},
                                  "description": "an image file; none with ?test=N (or ?pick=true)"}}


def create_app(runs_dir: str | os.PathLike, device: str = "cpu", default_run: str | None = None,
               max_body: int = MAX_BODY, host: str = "127.0.0.1") -> FastAPI:
    """The studio's ASGI app for the runs in ``runs_dir``; ``default_run`` answers a /predict that names none.

    ``host``: where it listens. On the loopback it answers only requests for this machine's own names; anywhere
    else only those carrying ``app.state.token`` (in ``?token=``, the cookie that sets, or ``Authorization:
    token …``), which the command line prints in the studio's address.
    """
    from .device import resolve_device

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CnnlabError(f"{runs_dir}: no such folder; `cnnlab train` writes runs under ./runs (or --runs-dir)")
    runs = Runs(runs_dir, resolve_device(device))
    trainings = Trainings(runs_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        trainings.stop_all()  # the studio is closing: the trainings it started stop too, resumable

    app = FastAPI(title="cnnlab studio", version="1", docs_url=None, redoc_url=None,  # their pages load from a CDN
                  responses={"4XX": {"model": Refusal, "description": "Refused: one line saying why"}},
                  lifespan=lifespan)
    app.state.max_body = max_body
    app.state.token = None if is_loopback(host) else secrets.token_urlsafe(24)
    add_middleware(app)
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    for router in (page_routes(), served_routes(runs, default_run), run_routes(runs, default_run),
                   inside_routes(runs), value_routes(runs), teach_routes(runs, trainings)):
        app.include_router(router)
    return app


def add_middleware(app: FastAPI) -> None:
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # gives back most of base64's third on the PNGs

    @app.middleware("http")
    async def server_timing(request: Request, call_next):
        """The time the app took, in the standard Server-Timing header (browsers' dev tools show it)."""
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.2f}"
        return response

    @app.middleware("http")  # added last, so it runs first
    async def guard(request: Request, call_next):
        """Refuse, before anything else runs, what a web page elsewhere could make a browser send (403)."""
        token = request.app.state.token
        refusal = trespass(request, token)
        if refusal is not None:
            return JSONResponse({"error": refusal}, 403)
        # The page's files are small and sent whole (HTTP lets a server ignore Range): a range that Starlette
        # cannot serve was answered in plain text, the one error that was not JSON.
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k not in (b"range", b"if-range")]
        response = await call_next(request)
        if token is not None and request.query_params.get("token") is not None:  # the printed address: a cookie,
            response.set_cookie(cookie_name(request), token, httponly=True, samesite="strict")  # for what follows
        return response


def trespass(request: Request, token: str | None) -> str | None:
    """Why the request may not be answered, or None.

    On the loopback the Host must be this machine's (a page elsewhere whose name was re-pointed at 127.0.0.1 —
    DNS rebinding — sends its own); elsewhere the token must come along. Either way a POST (or any other method
    that acts) from a browser must come from the studio's own page: a form or fetch of another site, a
    ``text/plain`` one included, says so in its Origin or Sec-Fetch-Site header.
    """
    host = request.headers.get("host", "")
    if token is None:
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        if host and not is_loopback(name.rstrip(".")):
            return (f"Host {host[:100]!r} is not this machine: on the loopback the studio answers only requests "
                    "for localhost or 127.0.0.1; open the address `cnnlab studio` printed")
    elif not has_token(request, token):
        return ("the studio wants its token: open the address `cnnlab studio` printed (it ends in ?token=…); "
                "a script sends the header Authorization: token …")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin, site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
        if (origin is not None and origin.lower() != f"{request.url.scheme}://{host}".lower()
                or site not in (None, "same-origin", "none")):
            return (f"a page of {origin[:100] if origin else 'another site'} may not send requests to the studio; "
                    "use the studio's own page")
    return None


def cookie_name(request: Request) -> str:
    """One cookie per port: two studios on one machine keep their own tokens."""
    return f"cnnlab-studio-{(request.scope.get('server') or ('', 0))[1]}"


def has_token(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = [request.query_params.get("token"), request.cookies.get(cookie_name(request)),
             value if scheme.lower() in ("token", "bearer") else None]
    return any(secrets.compare_digest(item.encode(), token.encode()) for item in given if item is not None)


def add_error_handlers(app: FastAPI) -> None:
    """Every error is ``{"error": "one line"}``: refusals 4xx, and a fault no check foresaw 500."""
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message, path = error.detail, request.url.path[:100]
        if error.detail == "Not Found":  # Starlette's own words, for a path or a method no route takes
            message = f"{path}: no such page or endpoint"
        elif error.detail == "Method Not Allowed":
            message = f"{path} takes {(error.headers or {}).get('Allow')}, not {request.method}"
        return JSONResponse({"error": message}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        return JSONResponse({"error": f"{'.'.join(map(str, first['loc'][1:]))}: {first['msg']}"}, 400)

    @app.exception_handler(CnnlabError)
    async def cnnlab_error(request: Request, error: CnnlabError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, 404 if isinstance(error, NotFound) else 400)

    @app.exception_handler(Exception)  # the traceback still goes to the terminal, where it can be reported
    async def fault(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the studio failed: {type(error).__name__}: {error} (its terminal shows the "
                                      "traceback)"}, 500)


# --- the page ----------------------------------------------------------------------------------------------
def page_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    return router


# --- the API that `cnnlab serve` has too ----------------------------------------------------------------
def served_routes(runs: Runs, default_run: str | None) -> APIRouter:
    from .runs import scan_runs

    router = APIRouter()

    @router.get("/health")
    def health() -> dict:
        """As `cnnlab serve` answers: the run a /predict without ?run= uses (null when none) and its classes; and
        the runs folder with every run in it."""
        listed, _ = scan_runs(runs.root)
        classes = None
        if default_run is not None:
            try:
                classes = list(runs.compute(default_run, lambda run: run.info.classes))
            except (CnnlabError, HTTPException):  # a damaged or vanished run: the studio itself is fine
                pass
        return {"status": "ok", "run": None if default_run is None else str(runs.root / default_run),
                "classes": classes, "runs_dir": str(runs.root), "runs": [run.run_dir.name for run in listed]}

    router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)  # as `cnnlab serve` does

    @router.post("/predict", openapi_extra=UPLOAD_BODY)
    def predict(run: str | None = None, top: int = DEFAULT_TOP, body: bytes = Depends(read_body)) -> dict:
        """The ``top`` classes for the image in the body, as ``cnnlab predict RUN IMAGE --json`` lists them."""
        name = run or default_run
        if not name:
            raise HTTPException(400, "name the run: POST /predict?run=NAME")
        return predict_run(name, top, body)

    @router.post("/api/runs/{name}/predict", openapi_extra=UPLOAD_BODY)
    def predict_run(name: str, top: int = DEFAULT_TOP, body: bytes = Depends(read_body)) -> dict:
        if top < 1:
            raise HTTPException(400, f"top={top}: expected a number of classes, at least 1")
        image = runs.prepare(name, body)
        return runs.compute(name, lambda run: predictions(run, image, runs.device, top))

    return router


# --- runs and their curves -----------------------------------------------------------------------------
def run_routes(runs: Runs, default_run: str | None) -> APIRouter:
    from .runs import Run, scan_runs

    router = APIRouter()

    @router.get("/api/runs")
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

    @router.get("/api/runs/{name}")
    def one(name: str) -> dict:
        return describe(Run(runs.folder(name)).check())

    @router.get("/api/runs/{name}/evaluation")
    def evaluation(name: str) -> dict:
        evaluated = Run(runs.folder(name)).read_evaluation()
        if evaluated is None:
            raise HTTPException(404, f"{name}: not evaluated yet; run `cnnlab evaluate {name}`")
        return evaluated

    return router


# --- inside the network ------------------------------------------------------------------------------
def image_of(runs: Runs, run, uploaded: torch.Tensor | None, test: int | None,
             pick: bool) -> tuple[torch.Tensor, dict]:
    """The uint8 input: the uploaded image prepared as `predict` prepares it, or a test image."""
    if uploaded is not None:
        return uploaded, {"source": "your image", "label": None}
    images = runs.test_set(run)
    index = random.randrange(len(images)) if pick else test
    if index is None:
        raise CnnlabError("send an image, or name a test image with ?test=N (or ?pick=true)")
    if not 0 <= index < len(images):
        raise CnnlabError(f"test={index}: the test set holds images 0 to {len(images) - 1}")
    return images.images[index], {"source": f"test image #{index}", "index": index,
                                  "label": images.classes[int(images.labels[index])]}


def upload(runs: Runs, name: str, body: bytes, test: int | None, pick: bool = False) -> torch.Tensor | None:
    """The uploaded image, prepared on this thread (not the model's), unless a test image is asked for."""
    return runs.prepare(name, body) if test is None and not pick else None


def inside_routes(runs: Runs) -> APIRouter:
    from .explain import occlusion, saliency
    from .inference import answer
    from .inside import activations, quantise
    from .prediction import predict_proba

    router = APIRouter()

    @router.post("/api/runs/{name}/look", openapi_extra=UPLOAD_OR_TEST)
    def look(name: str, test: int | None = None, pick: bool = False, body: bytes = Depends(read_body)) -> dict:
        """Every class's probability, the input as the network received it and every layer's activations."""
        uploaded = upload(runs, name, body, test, pick)

        def work(run) -> dict:
            image, source = image_of(runs, run, uploaded, test, pick)
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

    @router.post("/api/runs/{name}/attribution", openapi_extra=UPLOAD_OR_TEST)
    def attribution(name: str, test: int | None = None, body: bytes = Depends(read_body)) -> dict:
        """Gradient saliency and occlusion for the most probable class, as ``cnnlab explain`` draws them."""
        uploaded = upload(runs, name, body, test)

        def work(run) -> dict:
            image, _ = image_of(runs, run, uploaded, test, False)
            target = int(predict_proba(run, image[None])[0].argmax())  # of the logits the answer comes from (TTA)
            maps = {"saliency": saliency(run, image, target), "occlusion": occlusion(run, image, target)}
            return {"target": target, "label": run.info.classes[target],
                    **{key: quantise(values).to_json() for key, values in maps.items()}}
        return runs.compute(name, work)

    return router


def value_routes(runs: Runs) -> APIRouter:
    from .inside import explain_cell, explain_value

    router = APIRouter()

    @router.post("/api/runs/{name}/value", openapi_extra=UPLOAD_OR_TEST)
    def value(name: str, layer: str, channel: int, row: int, col: int, test: int | None = None,
              body: bytes = Depends(read_body)) -> dict:
        """How the value at (channel, row, col) of convolution ``layer`` is made, and where it goes next."""
        uploaded = upload(runs, name, body, test)
        return runs.compute(name, lambda run: explain_value(run, image_of(runs, run, uploaded, test, False)[0], layer,
                                                            channel, row, col).to_json())

    @router.post("/api/runs/{name}/cell", openapi_extra=UPLOAD_OR_TEST)
    def cell(name: str, layer: str, channel: int, row: int = 0, col: int = 0, test: int | None = None,
             body: bytes = Depends(read_body)) -> dict:
        """How the value at (channel, row, col) of any layer — (channel) of a vector — is made from its input."""
        uploaded = upload(runs, name, body, test)
        return runs.compute(name, lambda run: explain_cell(run, image_of(runs, run, uploaded, test, False)[0], layer,
                                                           channel, row, col))

    return router


# --- the Teach view: classes, examples, training ----------------------------------------------------------
EXAMPLE_BODY = {"requestBody": {"required": True, "description": f"an image file, at most {MAX_EXAMPLE_BYTES:,} bytes",
                                "content": {"image/*": {"schema": IMAGE}}}}


def teach_routes(runs: Runs, trainings: Trainings) -> APIRouter:
    """Teach projects under RUNS/teach (cnnlab.teach): names on disk made by the server, examples bounded, a
    project's examples unchanged while it trains, and training as the command line's own `cnnlab train`."""
    from .runs import CHECKPOINT, Run
    from .teach import (
        MAX_CLASSES,
        MAX_EXAMPLES,
        TEACH_RECIPE,
        Project,
        list_projects,
        project_runs,
        resume_command,
        train_command,
    )

    router = APIRouter(prefix="/api/teach")

    def editable(name: str) -> Project:
        project = Project.open(runs.root, name)
        if trainings.running(project):
            raise CnnlabError(f"{project.name} is training: stop it, or let it finish, before changing its examples")
        return project

    @router.get("")
    def projects() -> dict:
        return {"projects": [project.name for project in list_projects(runs.root)], "recipe": TEACH_RECIPE,
                "limits": {"classes": MAX_CLASSES, "examples": MAX_EXAMPLES, "bytes": MAX_EXAMPLE_BYTES}}

    @router.post("")
    def create(name: str) -> dict:
        return one(Project.create(runs.root, name).name)

    @router.get("/{project}")
    def one(project: str) -> dict:
        """The project's classes and examples, its runs (``resumable``: stopped part-way), its last training."""
        opened = Project.open(runs.root, project)
        trained = project_runs(opened, runs.root)
        resumable = [run.run_dir.name for run in trained if not run.finished and run.has(CHECKPOINT)]
        return {**opened.describe(), "runs": [run.run_dir.name for run in trained if run.finished],
                "resumable": resumable[-1] if resumable else None, "training": trainings.status(opened),
                "command": f"cnnlab train {TEACH_RECIPE} --data {opened.root} --runs-dir {runs.root}"}

    @router.post("/{project}/classes")
    def add_class(project: str, name: str) -> dict:
        return {"name": editable(project).add_class(name)}

    @router.delete("/{project}/classes/{name}")
    def remove_class(project: str, name: str) -> dict:
        editable(project).remove_class(name)
        return {"removed": name}

    @router.post("/{project}/classes/{name}/examples", openapi_extra=EXAMPLE_BODY)
    def add_example(project: str, name: str, body: bytes = Depends(read_example)) -> dict:
        return {"name": editable(project).add_example(name, body)}

    @router.get("/{project}/classes/{name}/examples/{example}", response_class=FileResponse)
    def example(project: str, name: str, example: str) -> FileResponse:
        return FileResponse(Project.open(runs.root, project).example(name, example), media_type="image/png")

    @router.delete("/{project}/classes/{name}/examples/{example}")
    def remove_example(project: str, name: str, example: str) -> dict:
        editable(project).remove_example(name, example)
        return {"removed": example}

    @router.post("/{project}/train")
    def train(project: str, from_run: str | None = None, freeze_epochs: int = 0) -> dict:
        """Start ``cnnlab train`` on the project (``from_run``: a finished run of the folder to start from)."""
        opened = Project.open(runs.root, project)
        opened.check_trainable()
        start = None
        if from_run:
            start = Run(runs.folder(from_run)).check()
            if not start.finished:
                raise CnnlabError(f"{from_run} has not finished training; start from a finished run")
        if not 0 <= freeze_epochs <= 1000:
            raise CnnlabError(f"freeze_epochs={freeze_epochs}: expected a number of epochs, 0 or more")
        trainings.start(opened, train_command(opened, runs.root, start.run_dir if start else None,
                                                   freeze_epochs))
        return one(project)

    @router.post("/{project}/stop")
    def stop(project: str) -> dict:
        trainings.stop(Project.open(runs.root, project))
        return {"stopping": project}

    @router.post("/{project}/resume")
    def resume(project: str) -> dict:
        """Continue the project's run that was stopped part-way, from its last finished epoch."""
        opened = Project.open(runs.root, project)
        run = one(project)["resumable"]
        if run is None:
            raise CnnlabError(f"{opened.name} has no run stopped part-way to resume; train it")
        trainings.start(opened, resume_command(runs.root / run), run=run)
        return one(project)

    return router


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

    from .images import return_freed_memory

    torch.set_num_threads(1)
    return_freed_memory()

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
