"""Teach projects: the classes and examples a learner makes in the studio's Teach view, kept as an ordinary folder
of images, and the trainings the page starts on it.

A project is ``RUNS/teach/PROJECT/CLASS/0001.png``: one sub-folder per class, PNG, inside the runs folder (which
lists only folders holding a recipe.json, so teach/ is never taken for a run). It trains from the command line as
it does from the page, because the page starts that very command (``train_command``) as a child process: the run
lock, checkpoints, Ctrl-C (SIGINT) and ``--resume`` work as they do in a terminal. Every name on disk is made here
(``folder_name``) from what the learner typed; an example is decoded within cnnlab.images' bounds, shrunk and
written as a new file that never replaces one; the counts and sizes are bounded.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import CnnlabError, NotFound
from .files import atomic_write
from .images import PARTS, read_image, rgb_array

TEACH_DIR = "teach"  # inside the runs folder: RUNS/teach/PROJECT/CLASS/NNNN.png
TEACH_RECIPE = "teach"  # the recipe the page trains with: few examples, MNIST-like 28×28 grey (cnnlab.recipes)
MIN_CLASSES, MAX_CLASSES = 2, 10
MAX_EXAMPLES = 2000  # examples in a project, all classes together
MAX_EXAMPLE_BYTES = 2 * 2**20  # bytes of one uploaded example (a 640×480 camera frame as PNG is about 0.5 MB)
EXAMPLE_SIDE = 256  # pixels: an example is kept at most this long a side; the network sees 28×28 or so
MAX_NAME = 40  # characters of a project or class name
EXAMPLE = re.compile(r"[0-9]{4,}\.png")  # the names this module gives examples
_WRITING = threading.Lock()  # a count and the write it allows, one request at a time: no 2,001st example


def folder_name(label: str, what: str = "class") -> str:
    """The folder name for a name the learner typed: letters, digits, '-' and '_' (spaces become '-'), at most
    MAX_NAME long; refused when nothing is left or when it is a name a folder of images keeps for its parts."""
    text = re.sub(r"\s+", "-", unicodedata.normalize("NFKC", label).strip())
    name = "".join(c for c in text if c.isalnum() or c in "-_").strip("-_")[:MAX_NAME]
    if not name:
        raise CnnlabError(f"{label[:60]!r}: a {what} name needs a letter or a digit")
    if name.casefold() in PARTS:  # a class named 'train' would make the folder's train/ part of its own
        raise CnnlabError(f"{name!r}: {', '.join(PARTS)} name a folder's parts; choose another {what} name")
    return name


def _child(parent: Path, name: str, what: str) -> Path:
    """``parent/name`` where ``name`` is one this module could have made and it is a real folder (no link)."""
    with contextlib.suppress(CnnlabError):
        if folder_name(name, what) == name:
            folder = parent / name
            if folder.is_dir() and not folder.is_symlink():
                return folder
    raise NotFound(f"{name[:60]!r}: no such {what} in {parent}")


def teach_dir(runs_dir: str | os.PathLike, make: bool = False) -> Path:
    """RUNS/teach (made if missing and ``make``); refused if it is a link (it could lead out of the runs folder)."""
    folder = Path(runs_dir) / TEACH_DIR
    if folder.is_symlink() or folder.exists() and not folder.is_dir():
        raise CnnlabError(f"{folder}: not a folder of teach projects (a link or a file); move it away")
    if make:
        folder.mkdir(exist_ok=True)
    return folder


@dataclass(frozen=True)
class Project:
    """One teach project's folder: its classes are its sub-folders, its examples their PNG files."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, label: str) -> Project:
        name = folder_name(label, "project")
        try:
            (teach_dir(runs_dir, make=True) / name).mkdir()
        except FileExistsError:
            raise CnnlabError(f"a project named {name!r} exists already; open it, or choose another name") from None
        return cls(Path(runs_dir) / TEACH_DIR / name)

    @classmethod
    def open(cls, runs_dir: str | os.PathLike, name: str) -> Project:
        return cls(_child(teach_dir(runs_dir), name, "project"))

    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def examples(self, class_name: str) -> list[str]:
        return sorted(p.name for p in self._class(class_name).iterdir() if EXAMPLE.fullmatch(p.name))

    def count(self) -> int:
        return sum(len(self.examples(name)) for name in self.classes())

    def add_class(self, label: str) -> str:
        name = folder_name(label)
        with _WRITING:
            taken = {existing.casefold(): existing for existing in self.classes()}
            if name.casefold() in taken:  # 'Cat' beside 'cat': one folder on macOS and Windows
                raise CnnlabError(f"{label[:60]!r}: the project has a class {taken[name.casefold()]!r} already")
            if len(taken) >= MAX_CLASSES:
                raise CnnlabError(f"{self.name} has {MAX_CLASSES} classes, the most a project takes; remove one first")
            (self.root / name).mkdir()
        return name

    def remove_class(self, class_name: str) -> None:
        folder = self._class(class_name)
        for example in self.examples(class_name):
            (folder / example).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            raise CnnlabError(f"{folder}: holds files the studio did not write; remove them, then the class") from None

    def add_example(self, class_name: str, data: bytes) -> str:
        """Decode the image ``data`` (within cnnlab.images' bounds), shrink it to EXAMPLE_SIDE, and write it as
        the class's next PNG; its file name."""
        folder = self._class(class_name)
        if len(data) > MAX_EXAMPLE_BYTES:
            raise CnnlabError(f"the image is {len(data):,} bytes, over the limit of {MAX_EXAMPLE_BYTES:,} an example")
        picture = read_image(f"the image for {class_name}", draft=True, data=data).image
        picture.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
        pixels = rgb_array(picture)  # (H, W, 3); alpha laid on a background
        grey = bool((pixels == pixels[..., :1]).all())  # a drawing: kept grey, a third of the size
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(pixels[..., 0]) if grey else pixels).save(buffer, format="PNG")
        with _WRITING:
            if self.count() >= MAX_EXAMPLES:
                raise CnnlabError(f"{self.name} holds {MAX_EXAMPLES:,} examples, the most a project takes; "
                                  "remove some first")
            number = max((int(name[:-4]) for name in self.examples(class_name)), default=0) + 1
            while True:
                name = f"{number:04d}.png"
                try:
                    atomic_write(folder / name, buffer.getvalue(), replace=False)
                    return name
                except FileExistsError:  # written meanwhile by something else (the learner's file manager)
                    number += 1

    def example(self, class_name: str, name: str) -> Path:
        """The example's path, for a name this module gives examples and a regular file (not a link)."""
        path = self._class(class_name) / name
        if not EXAMPLE.fullmatch(name) or path.is_symlink() or not path.is_file():
            raise NotFound(f"{name[:60]!r}: no such example in {self.name}/{class_name}")
        return path

    def remove_example(self, class_name: str, name: str) -> None:
        self.example(class_name, name).unlink(missing_ok=True)

    def check_trainable(self) -> None:
        """Refuse, in the page's words, a project the command line would refuse: too few classes or examples."""
        counts = {name: len(self.examples(name)) for name in self.classes()}
        if len(counts) < MIN_CLASSES:
            raise CnnlabError(f"{self.name} has {len(counts)} class{'es' * (len(counts) != 1)}; make at least "
                              f"{MIN_CLASSES} to train")
        empty = [name for name, count in counts.items() if count < 2]
        if empty:
            raise CnnlabError(f"add examples to {', '.join(empty)}: each class needs 2 at least (15 or more learn "
                              "well)")

    def _class(self, name: str) -> Path:
        return _child(self.root, name, "class")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.root),
                "classes": [{"name": name, "examples": self.examples(name)} for name in self.classes()]}


def list_projects(runs_dir: str | os.PathLike) -> list[Project]:
    folder = teach_dir(runs_dir)
    if not folder.is_dir():
        return []
    return [Project(p) for p in sorted(folder.iterdir())
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]


def project_runs(project: Project, runs_dir: str | os.PathLike) -> list:
    """The runs in ``runs_dir`` trained on the project's folder, by the page or the command line, oldest first."""
    from .runs import scan_runs

    root = project.root.resolve()
    return [run for run in scan_runs(runs_dir)[0] if run.data_dir is not None and run.data_dir == root]


# ---------------------------------------------------------------------------------------------------------
# Training a project: `cnnlab train` in a child process, as the learner would type it
# ---------------------------------------------------------------------------------------------------------
def train_command(project: Project, runs_dir: str | os.PathLike, from_run: str | os.PathLike | None = None,
                  freeze_epochs: int = 0) -> list[str]:
    """``python -m cnnlab.cli train teach --data PROJECT --runs-dir RUNS [--from RUN --set freeze_epochs=N]``."""
    command = [sys.executable, "-m", "cnnlab.cli", "train", TEACH_RECIPE, "--data", str(project.root.resolve()),
               "--runs-dir", str(Path(runs_dir).resolve())]
    if from_run is not None:
        command += ["--from", str(Path(from_run).resolve()), "--set", f"freeze_epochs={freeze_epochs}"]
    return command


def resume_command(run_dir: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "cnnlab.cli", "train", "--resume", str(Path(run_dir).resolve())]


@dataclass
class Training:
    """A `cnnlab train` process the studio started for a project."""

    process: subprocess.Popen
    log: IO[bytes]  # its stdout and stderr together
    before: set[str]  # the runs folder's entries before it started: its run is the new one trained on the project
    run: str | None = None  # the run folder's name, once it is there
    started: float = field(default_factory=time.time)

    def tail(self, size: int = 4096) -> list[str]:
        """The last lines it wrote."""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - size))
        return [line.strip() for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]


class Trainings:
    """The trainings the studio started, one at a time per project (a second is refused while one runs)."""

    def __init__(self, runs_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir).resolve()
        self._started: dict[str, Training] = {}
        self._lock = threading.Lock()

    def start(self, project: Project, command: list[str], run: str | None = None) -> Training:
        with self._lock:
            previous = self._started.get(project.name)
            if previous is not None and previous.process.poll() is None:
                raise CnnlabError(f"{project.name} is training already (process {previous.process.pid}); wait for "
                                  "it, or stop it")
            log = tempfile.TemporaryFile()
            package = str(Path(__file__).resolve().parents[1])  # this very cnnlab, wherever it was imported from
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package, os.environ.get("PYTHONPATH")))),
                   "PYTHONUNBUFFERED": "1"}  # its lines in the log as they are printed
            # A session of its own: Ctrl-C in the studio's terminal reaches the studio, which stops it (stop_all).
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
            if previous is not None:
                previous.log.close()
            self._started[project.name] = training = Training(process, log, set(os.listdir(self.runs_dir)), run)
            return training

    def stop(self, project: Project) -> None:
        """Ctrl-C for its training: the run keeps its last finished epoch, and resumes from it."""
        training = self._started.get(project.name)
        if training is None or training.process.poll() is not None:
            raise CnnlabError(f"{project.name} is not training")
        training.process.send_signal(signal.SIGINT)

    def running(self, project: Project) -> bool:
        training = self._started.get(project.name)
        return training is not None and training.process.poll() is None

    def status(self, project: Project) -> dict[str, Any] | None:
        """What the page shows of the project's last training: running or how it ended, its run, its last line."""
        training = self._started.get(project.name)
        if training is None:
            return None
        code = training.process.poll()
        if training.run is None:
            training.run = self._new_run(project, training)
        lines = training.tail()
        error = next((line for line in reversed(lines) if line.startswith("cnnlab:")), None)
        return {"running": code is None, "pid": training.process.pid, "exit_code": code, "run": training.run,
                "stopped": code == 130, "line": lines[-1] if lines else "",
                "error": error if code not in (None, 0) else None}

    def _new_run(self, project: Project, training: Training) -> str | None:
        from .runs import Run

        root = project.root.resolve()
        for name in sorted(set(os.listdir(self.runs_dir)) - training.before):
            with contextlib.suppress(CnnlabError, OSError):
                if (self.runs_dir / name / "environment.json").exists() and Run(self.runs_dir / name).data_dir == root:
                    return name
        return None

    def stop_all(self, wait: float = 30.0) -> None:
        """Stop every training still running (the studio is closing), each resumable; kill one that hangs."""
        running = [t for t in self._started.values() if t.process.poll() is None]
        for training in running:
            training.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + wait
        for training in running:
            try:
                training.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                training.process.kill()
                training.process.wait()
        for training in self._started.values():
            training.log.close()
