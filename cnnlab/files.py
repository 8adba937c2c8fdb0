"""Small file helpers every stage may use: atomic writes, bounded reads, JSON, a writability probe, a run's
lock, and the rule for replacing a file the user named.

Standard library only, so a command that reads a few files starts without PyTorch.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CnnlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 would hide runs from other users


def make_folder(path: Path) -> Path:
    """``path`` made with its parents where missing; a file in its place is an OSError that says so (mkdir's own
    says 'File exists')."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(path))
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes | str, replace: bool = True) -> None:
    """Write ``path`` so that a crash mid-write leaves the previous file whole.

    The temporary file, ``.NAME.PID.XXXXXXXX.tmp`` beside it, names the writing process, so that
    ``remove_stale_temp`` can tell the leftovers of a killed write from a write still going on. ``replace=False``:
    an existing ``path`` is never replaced (FileExistsError), even by a writer that raced this one to it."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as error:  # a read-only or unwritable folder: name the file meant, not a temporary name
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # a hard link, unlike a rename, fails where the name is taken
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


_TEMP = re.compile(r"\..+\.([0-9]+)\.[a-z0-9_]{8}\.tmp")  # atomic_write's temporary files


def remove_stale_temp(folder: Path) -> list[Path]:
    """Delete the temporary files that killed writes left in ``folder`` (those of processes no longer
    running; a write going on keeps its own); the paths deleted."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMP.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False) and not _running(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: alive; an absurd number: nobody's
        return pid < 2**22
    return True


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


DAMAGED = "the run folder is damaged"
MAX_READ = 64 * 2**20  # bytes: far past any JSON, CSV or figure cnnlab writes into a run folder


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, its links followed, lies in ``folder`` (its links followed too)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def read_bytes(path: Path, within: Path | None = None, limit: int = MAX_READ, fix: str = DAMAGED,
               head: bool = False) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes (``head``: its first ``limit`` bytes,
    however large it is): a FIFO, a device or a folder is refused, never waited on or read without end; given
    ``within``, so is a file whose links lead out of that folder. A missing file raises FileNotFoundError; the
    rest, one CnnlabError line ending in ``fix``."""
    path = Path(path)
    if within is not None and not inside(path, within):
        raise CnnlabError(f"{path}: a link that leads out of {within}; {fix}")
    try:  # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CnnlabError(f"{path}: cannot be read ({error.strerror or error}); {fix}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CnnlabError(f"{path}: not a regular file; {fix}")
        if info.st_size > limit and not head:
            raise CnnlabError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} such a file may hold; {fix}")
        chunks, size, end = [], 0, limit if head else limit + 1
        while size < end and (chunk := os.read(fd, min(2**20, end - size))):  # the size can change while it is read
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise CnnlabError(f"{path}: grew past {limit:,} bytes while it was read; {fix}")
        return b"".join(chunks)
    except OSError as error:
        raise CnnlabError(f"{path}: cannot be read ({error.strerror or error}); {fix}") from None
    finally:
        os.close(fd)


def check_regular(path: Path, within: Path | None = None, limit: int | None = None, fix: str = DAMAGED) -> None:
    """Refuse what ``read_bytes`` refuses, for a file another library opens by name (safetensors)."""
    path = Path(path)
    if within is not None and not inside(path, within):
        raise CnnlabError(f"{path}: a link that leads out of {within}; {fix}")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CnnlabError(f"{path}: cannot be read ({error.strerror or error}); {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CnnlabError(f"{path}: not a regular file; {fix}")
    if limit is not None and info.st_size > limit:
        raise CnnlabError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} such a file may hold; {fix}")


def read_json(path: Path, within: Path | None = None) -> Any:
    try:
        return json.loads(read_bytes(path, within))
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {Path(path).parent} a cnnlab run folder?") from None
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, too many digits, nested too deep
        raise CnnlabError(f"{path}: not valid JSON ({error}); {DAMAGED}") from None


# ---------------------------------------------------------------------------------------------------------
# Replacing a file the user named: only one cnnlab wrote, unless told to
# ---------------------------------------------------------------------------------------------------------
SOFTWARE = "cnnlab"  # the PNG text chunk 'Software' of every figure cnnlab writes (cnnlab.plots)
EXPORTED = "cnnlab run "  # how the doc string of every ONNX file cnnlab exports begins (cnnlab.export): protobuf
#                           writes it after the format's and producer's versions, in the file's first 64 bytes


def check_replaceable(path: Path, force: bool = False, flag: str = "--force") -> None:
    """Refuse to replace ``path`` unless it is missing, a figure cnnlab wrote, or ``force`` says so.

    A folder, a device or another special file is refused even then: writing a figure cannot replace it."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise CnnlabError(f"{path}: cannot be checked ({error.strerror or error}); choose another file") from None
    if not stat.S_ISREG(info.st_mode):
        raise CnnlabError(f"{path}: exists and is not a regular file; choose another file")
    if not force and not written_by_cnnlab(path):
        raise CnnlabError(f"{path}: exists and cnnlab did not write it; choose another file, or pass {flag} "
                          "to replace it")


def written_by_cnnlab(path: Path) -> bool:
    """Whether ``path`` is a PNG whose 'Software' text chunk, before its image data, names cnnlab, or an ONNX
    file that cnnlab exported."""
    try:  # the head alone (an exported network may be large); a FIFO or a device is not ours, nor waited on
        head = read_bytes(path, limit=MAX_READ, head=True)
    except (OSError, CnnlabError):
        return False
    if head.startswith(b"\x08") and EXPORTED.encode() in head[:64]:  # ONNX: its first field, ir_version, then…
        return True
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    at = 8
    while at + 8 <= len(head):
        length, kind = int.from_bytes(head[at:at + 4], "big"), head[at + 4:at + 8]
        body = head[at + 8:at + 8 + length]
        if kind == b"tEXt" and body.partition(b"\0")[::2] == (b"Software", SOFTWARE.encode()):
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        at += 12 + length
    return False


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


def lock_owner(folder: Path) -> str | None:
    """The process id that holds ``folder``'s lock (``locked``) now, or None: looked at, neither taken nor made."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no lock file: nobody has trained here, or it cannot be read
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: taken for an instant, released by the close below
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)
