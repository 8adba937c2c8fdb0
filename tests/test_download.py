"""The download path against a real HTTP server on 127.0.0.1: good files, a wrong checksum, a cut-off transfer."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import socket
import tarfile
import threading

import pytest

from cnnlab import data
from cnnlab.errors import CnnlabError
from helpers import make_cifar_dataset, make_idx_dataset


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        mode, _, name = self.path.lstrip("/").partition("/")
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "cut":  # promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    source = make_idx_dataset(tmp_path / "published")
    _Handler.files = {p.name: p.read_bytes() for p in source.iterdir()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _spec(mirrors: tuple[str, ...]) -> data.DatasetSpec:
    """MNIST's declaration with the fake files' checksums and the test server as its mirrors."""
    spec = data.DATASETS["mnist"]
    fix = lambda f: dataclasses.replace(f, md5=hashlib.md5(_Handler.files[f.name]).hexdigest())  # noqa: E731
    return dataclasses.replace(spec, mirrors=mirrors, train_files=tuple(map(fix, spec.train_files)),
                               test_files=tuple(map(fix, spec.test_files)))


def test_download_good_files(server, tmp_path):
    target = tmp_path / "cache" / "mnist"
    data.fetch(_spec((f"{server}/good/",)), target)
    assert sorted(p.name for p in target.iterdir()) == sorted(_Handler.files)
    for name, body in _Handler.files.items():
        assert (target / name).read_bytes() == body


def test_wrong_checksum_is_refused_and_nothing_is_left(server, tmp_path):
    target = tmp_path / "cache" / "mnist"
    with pytest.raises(CnnlabError, match="checksum mismatch"):
        data.fetch(_spec((f"{server}/corrupt/",)), target)
    assert list(target.iterdir()) == []  # no half-checked file under the real name, no temporary left


def test_cut_off_transfer_is_refused_and_nothing_is_left(server, tmp_path):
    target = tmp_path / "cache" / "mnist"
    with pytest.raises(CnnlabError, match="cut off|IncompleteRead|Connection|transfer"):
        data.fetch(_spec((f"{server}/cut/",)), target)
    assert list(target.iterdir()) == []


def test_falls_back_to_the_next_mirror(server, tmp_path):
    target = tmp_path / "cache" / "mnist"
    data.fetch(_spec((f"{server}/cut/", f"{server}/good/")), target)
    assert len(list(target.iterdir())) == 4


@pytest.fixture
def only_the_cache(monkeypatch):
    """Only the test's own empty cache is searched: Debian's dataset-mnist in /usr/share/datasets, say, must
    not answer for the files a test wants missing."""
    searched = data.search_dirs
    monkeypatch.setattr(data, "search_dirs", lambda spec, data_dir=None: [
        folder for folder in searched(spec, data_dir) if folder.is_relative_to(data.cache_root())])


def test_offline_with_no_files_says_what_to_do(monkeypatch, only_the_cache):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the connection is refused, as offline
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"],
                                                                    mirrors=(f"http://127.0.0.1:{port}/",)))
    with pytest.raises(CnnlabError) as caught:
        data.load_dataset("mnist")
    message = str(caught.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte.gz" in message and "pass data_dir=FOLDER" in message  # Python's terms
    assert str(data.cache_root() / "mnist") in message


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10: one archive, verified, then only its six data files taken out, under the names the spec gives
# ---------------------------------------------------------------------------------------------------------
def _member(name: str, body: bytes = b"", kind: bytes = tarfile.REGTYPE,
            link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(body) if kind == tarfile.REGTYPE else 0
    return info, body


def _cifar_archive(tmp_path, members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A tar.gz of the fake batches under cifar-10-batches-py/, with ``members`` (hostile ones) among them."""
    batches = make_cifar_dataset(tmp_path / "published-cifar") / "cifar-10-batches-py"
    entries = [_member(f"cifar-10-batches-py/{path.name}", path.read_bytes()) for path in sorted(batches.iterdir())]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, body in members[:2] + entries + members[2:]:
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return out.getvalue()


def _cifar_spec(server: str, archive: bytes, tmp_path) -> data.DatasetSpec:
    spec = data.DATASETS["cifar10"]
    batches = tmp_path / "published-cifar" / "cifar-10-batches-py"
    fix = lambda f: dataclasses.replace(f, md5=hashlib.md5((batches / f.name).read_bytes()).hexdigest())  # noqa: E731
    return dataclasses.replace(spec, mirrors=(f"{server}/good/",), train_files=tuple(map(fix, spec.train_files)),
                               test_files=tuple(map(fix, spec.test_files)),
                               archive=dataclasses.replace(spec.archive, md5=hashlib.md5(archive).hexdigest()))


def test_cifar_archive_yields_its_six_files_and_nothing_else(server, tmp_path, monkeypatch, only_the_cache):
    outside = tmp_path / "outside.txt"
    hostile = [_member("../escape.txt", b"up and out"), _member(str(outside), b"absolute"),
               _member("cifar-10-batches-py/readme.html", b"<html>"), _member("cifar-10-batches-py/batches.meta", b"x"),
               _member("cifar-10-batches-py/link", kind=tarfile.SYMTYPE, link="/etc/passwd"),
               _member("cifar-10-batches-py/../../escape2.txt", b"up again")]
    archive = _cifar_archive(tmp_path, hostile)
    _Handler.files["cifar-10-python.tar.gz"] = archive
    monkeypatch.setitem(data.DATASETS, "cifar10", _cifar_spec(server, archive, tmp_path))

    train, test = data.load_dataset("cifar10")
    assert len(train) == 5 * 40 and len(test) == 40 and train.images.shape[1:] == (3, 32, 32)
    target = data.cache_root() / "cifar10"
    expected = {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "cifar-10-python.tar.gz"}
    assert {path.name for path in target.iterdir()} == expected  # no readme, no meta, no link, no temporary
    assert not any(path.is_symlink() for path in target.iterdir())
    assert not outside.exists()
    for root in (data.cache_root(), data.cache_root().parent, tmp_path):
        assert not list(root.rglob("escape*.txt"))


def test_cifar_archive_whose_data_file_is_a_link_is_refused(server, tmp_path, monkeypatch, only_the_cache):
    """A wanted name that is a symbolic or hard link, not a file: never followed, and the file counts as missing."""
    archive = _cifar_archive(tmp_path, [])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    relinked = [_member(info.name, kind=tarfile.SYMTYPE, link="/etc/passwd") if info.name.endswith("data_batch_1")
                else _member(info.name, kind=tarfile.LNKTYPE, link="cifar-10-batches-py/data_batch_3")
                if info.name.endswith("data_batch_2") else (info, body) for info, body in members]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, body in relinked:
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    _Handler.files["cifar-10-python.tar.gz"] = out.getvalue()
    monkeypatch.setitem(data.DATASETS, "cifar10", _cifar_spec(server, out.getvalue(), tmp_path))

    with pytest.raises(CnnlabError, match="CIFAR-10 not found and not downloaded.*cifar-10-python.tar.gz"):
        data.load_dataset("cifar10")
    target = data.cache_root() / "cifar10"
    assert {"data_batch_1", "data_batch_2"}.isdisjoint(path.name for path in target.iterdir())
    assert not any(path.is_symlink() for path in target.iterdir())


def test_cifar_archive_with_a_wrong_checksum_is_refused_and_not_unpacked(server, tmp_path, monkeypatch,
                                                                         only_the_cache):
    archive = _cifar_archive(tmp_path, [])
    _Handler.files["cifar-10-python.tar.gz"] = archive
    spec = _cifar_spec(server, archive, tmp_path)
    monkeypatch.setitem(data.DATASETS, "cifar10", dataclasses.replace(spec, mirrors=(f"{server}/corrupt/",)))
    with pytest.raises(CnnlabError, match="checksum mismatch"):
        data.load_dataset("cifar10")
    assert list((data.cache_root() / "cifar10").iterdir()) == []  # neither the archive nor anything from it
