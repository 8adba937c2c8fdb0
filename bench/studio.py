"""The studio's speed and its behaviour under load, against issue #12's goals; prints a Markdown table.

    .venv/bin/python bench/studio.py                      # everything: latency, page load, bytes, load test
    .venv/bin/python bench/studio.py --clients 4 --requests 100   # a short load test

Two runs are written directly (untrained, Keras's initial weights: timing and sizes do not depend on training):
the Fashion-MNIST lab's network (cnn-dropout, 1×28×28) and the CIFAR-10 lab's (cnn-deep, 3×32×32). The studio
runs as `cnnlab studio` in its own process, so its memory is its own. Figures:

- server-side time of a prediction with every layer's activations (POST /api/runs/RUN/look): the median of the
  app's own Server-Timing header, and of the round trip from this process;
- DOMContentLoaded of the page in Debian's chromium (Playwright), a fresh browser context each time;
- bytes on the wire of one CIFAR-lab image's look (gzip, as a browser asks), for a real Fashion-MNIST picture
  made RGB 32×32 and for random noise (the worst case for PNG);
- the load test: CLIENTS threads × REQUESTS requests each, cycling through good images (/predict and /look), bad
  bytes, oversized bodies (a Content-Length over 10 MiB; 64 KiB of it sent, the server answers from the header),
  unknown and traversal paths. No 5xx allowed, the server must answer afterwards; its resident memory is read
  from /proc after a warm-up and at the end.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnlab import get_recipe  # noqa: E402
from cnnlab.data import DATASETS, load_test_images  # noqa: E402
from cnnlab.models import create_model  # noqa: E402
from cnnlab.runs import ModelInfo, save_run_files, save_weights  # noqa: E402

MIB = 1024 * 1024


def write_run(folder: Path, recipe_name: str) -> None:
    recipe = get_recipe(recipe_name)
    spec = DATASETS[recipe.dataset]
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model(recipe.model, spec.image_shape, len(spec.classes))
    save_run_files(folder, recipe, ModelInfo(recipe.model, spec.image_shape, tuple(spec.classes), recipe.dataset),
                   torch.device("cpu"))
    save_weights(folder / "weights.safetensors", model)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def fashion_picture() -> np.ndarray:
    """A Fashion-MNIST test image (28×28 grey) when the data set is at hand, else a drawn shirt-like blob."""
    try:
        return load_test_images("fashion-mnist", download=False).images[0, 0].numpy()
    except Exception:  # noqa: BLE001 - any reason it is missing: fall back to a picture of our own
        picture = np.zeros((28, 28), np.uint8)
        picture[4:24, 8:20] = 200
        return picture


def post(address: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(address, timeout=120)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def latency(address: str, image: bytes, repeat: int) -> tuple[float, float]:
    """Median server-side and round-trip milliseconds of a look at ``image`` by the Fashion lab's network."""
    server, trip = [], []
    for i in range(repeat + 3):
        start = time.perf_counter()
        status, headers, _ = post(address, "/api/runs/fashion/look", image)
        elapsed = (time.perf_counter() - start) * 1000
        assert status == 200, status
        if i >= 3:  # the first looks load the model and warm the caches
            trip.append(elapsed)
            server.append(float(headers["server-timing"].split("dur=")[1]))
    return statistics.median(server), statistics.median(trip)


def wire_bytes(address: str, image: bytes) -> tuple[int, int]:
    """(gzip, plain) bytes of the CIFAR lab's look at ``image``."""
    status, headers, body = post(address, "/api/runs/cifar/look", image, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip", (status, headers)
    return len(body), len(gzip.decompress(body))


def dom_content_loaded(url: str, repeat: int) -> float | None:
    """Median ms from navigation start to DOMContentLoaded's end, in Debian's chromium; None without it."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        for _ in range(repeat):
            context = browser.new_context()
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            times.append(page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
            context.close()
        browser.close()
    return statistics.median(times)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def load_test(address: str, good: bytes, clients: int, requests: int) -> Counter:
    """Every client sends ``requests`` requests of the mix; the statuses (and 'error: …' for broken exchanges)."""
    host, port = address.split(":")
    mix = [
        ("POST", "/predict?run=fashion", good),
        ("POST", "/api/runs/fashion/look", good),
        ("POST", "/predict?run=fashion", b"\x89PNG not really"),
        ("POST", "/api/runs/fashion/look", None),  # oversized
        ("GET", "/api/runs/nope/history", b""),
        ("GET", "/api/runs/..%2F..%2Fetc%2Fpasswd", b""),
        ("GET", "/static/../../README.md", b""),
    ]
    counts: Counter = Counter()
    lock = threading.Lock()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=300)
        for i in range(requests):
            method, path, body = mix[(number + i) % len(mix)]
            try:
                if body is None:  # a body over the limit: the header says so, and a little of it follows
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=300)
                    connection.putrequest(method, path)
                    connection.putheader("Content-Length", str(10 * MIB + 1))
                    connection.endheaders()
                    try:
                        connection.send(b"\0" * 65536)
                    except OSError:
                        pass  # the server may have answered and closed already
                else:
                    connection.request(method, path, body=body)
                response = connection.getresponse()
                response.read()
                status: int | str = response.status
                if body is None or response.will_close:
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=300)
            except (OSError, http.client.HTTPException) as error:
                status = f"error: {type(error).__name__}"
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=300)
            with lock:
                counts[status] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50, help="looks timed (default 50)")
    parser.add_argument("--loads", type=int, default=10, help="page loads timed (default 10)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="per client (default 2000)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch) / "runs"
        write_run(runs / "fashion", "fashion-cnn")
        write_run(runs / "cifar", "cifar10-cnn")
        server = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "studio", str(runs), "--port", "0"],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            url = server.stdout.readline().split(" on ")[1].split()[0].rstrip("/")
            address = url.removeprefix("http://")
            picture = fashion_picture()
            good = png_bytes(picture)
            server_ms, trip_ms = latency(address, good, args.repeat)
            smooth = np.asarray(Image.fromarray(picture).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB"))
            noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            smooth_bytes, noise_bytes = wire_bytes(address, png_bytes(smooth)), wire_bytes(address, png_bytes(noise))
            dcl = dom_content_loaded(url + "/", args.loads)
            post(address, "/predict?run=fashion", good)
            load_test(address, good, 2, 50)  # warm-up: threads, buffers, allocator
            before = rss_mb(server.pid)
            start = time.perf_counter()
            counts = load_test(address, good, args.clients, args.requests)
            seconds = time.perf_counter() - start
            after = rss_mb(server.pid)
            status, _, _ = post(address, "/predict?run=fashion", good)
            alive = status == 200
        finally:
            server.terminate()
            server.wait(timeout=30)

    fives = sum(n for s, n in counts.items() if not isinstance(s, int) or s >= 500)
    total = sum(counts.values())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    print("\n| measure | goal | measured |\n|---|---|---|")
    print(f"| look (prediction + every layer), Fashion lab, server-side median | ≤ 50 ms | {server_ms:.1f} ms "
          f"(round trip {trip_ms:.1f} ms, {args.repeat} looks) |")
    print(f"| page DOMContentLoaded, median of {args.loads} fresh loads | ≤ 500 ms | "
          + ("no chromium |" if dcl is None else f"{dcl:.0f} ms |"))
    print(f"| one CIFAR-lab image's look on the wire (gzip) | ≤ 200 KB | {smooth_bytes[0] / 1000:.0f} KB picture, "
          f"{noise_bytes[0] / 1000:.0f} KB noise "
          f"(plain JSON {smooth_bytes[1] / 1000:.0f} / {noise_bytes[1] / 1000:.0f} KB) |")
    print(f"| load test: {args.clients} clients × {args.requests:,} requests | no 5xx, answers after | "
          f"{fives} 5xx or broken of {total:,} in {seconds:.0f} s; answers after: {'yes' if alive else 'NO'} |")
    print(f"| server memory growth over the load test | ≤ 100 MB | {after - before:+.1f} MB "
          f"({before:.0f} → {after:.0f} MB resident) |")
    print("\nstatuses:", ", ".join(f"{s}: {n:,}" for s, n in sorted(counts.items(), key=str)))
    return 0 if fives == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
