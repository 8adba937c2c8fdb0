"""Small file helpers every stage may use: atomic writes, JSON, a writability probe and a run's lock.

Standard library only, so a command that reads a few files starts without PyTorch.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import CnnlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 would hide runs from other users


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` so that a crash mid-write leaves the previous file whole."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {Path(path).parent} a cnnlab run folder?") from None
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, too many digits, nested too deep
        raise CnnlabError(f"{path}: not valid JSON ({error}); the run folder is damaged") from None


def check_writable(folder: Path) -> None:
    """Raise OSError unless a file can be written in ``folder``."""
    probe = folder / f".write-test-{os.getpid()}"  # one per process: two probes never unlink each other's
    probe.write_bytes(b"ok")
    probe.unlink()


LOCK = ".lock"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs, or raise at once if another process holds it.

    An advisory ``flock`` on ``folder/.lock``, which holds the owner's process id for the message: the system
    drops the lock when its process ends, however it ends, so a killed run never blocks the next one.
    """
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as error:
        raise CnnlabError(f"cannot write to {folder} ({error.strerror or error}); make it writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise CnnlabError(f"{folder} is in use by process {owner}, which is training it; wait for it to "
                              "finish (or stop it), then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
