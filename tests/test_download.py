"""The download path against a real HTTP server on 127.0.0.1: good files, a wrong checksum, a cut-off transfer."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading

import pytest

from cnnlab import data
from cnnlab.errors import CnnlabError
from conftest import make_idx_dataset


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


def test_offline_with_no_files_says_what_to_do(monkeypatch):
    # Only the test's own empty cache is searched: Debian's dataset-mnist in /usr/share/datasets must not
    # answer for the missing files.
    searched = data.search_dirs
    monkeypatch.setattr(data, "search_dirs", lambda spec, data_dir=None: [
        folder for folder in searched(spec, data_dir) if folder.is_relative_to(data.cache_root())])
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
    assert "train-images-idx3-ubyte.gz" in message and "--data-dir" in message
    assert str(data.cache_root() / "mnist") in message
