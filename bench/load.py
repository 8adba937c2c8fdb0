"""Issue #22's load test: `cnnlab studio` and `cnnlab serve`, each under CLIENTS clients × REQUESTS mixed requests,
worst-case images and slow clients in the mix; prints a Markdown table against the issue's goals.

    .venv/bin/python bench/load.py                               # 16 clients × 2,000 requests to each server
    .venv/bin/python bench/load.py --clients 2 --requests 20     # a smoke run (about a minute)
    .venv/bin/python bench/load.py --servers serve               # one server only

Everything stays on 127.0.0.1. Each server runs as the command line starts it, in its own process (its memory is
its own; its log goes to a file, searched for tracebacks afterwards), on one run written directly: the
Fashion-MNIST lab's network with Keras's initial weights (answers do not depend on training). Each client sends
its requests one after another, each on a new connection, cycling through MIX from its own starting point:

- small requests, timed: /health, a 28×28 drawing to /predict (and, to the studio, a look at it and the run list);
- the worst image an upload may be: a 5000×5000 semi-transparent RGBA PNG (110 KB), decoded and answered;
- the issue's image: a 405 KB semi-transparent 10000×10000 PNG (refused from its header), and files crafted to
  take long (a PNG of 200,000 empty chunks, a 25-megapixel progressive JPEG of 1,000 empty scans);
- bad bytes, a Content-Length over the limit, unknown and traversal paths, HEAD and OPTIONS;
- slow clients: one trickles a drawing over about a second; one sends half a request line and goes quiet for
  2 s, then hangs up; one hangs up (reset) halfway through an upload.

Goals (issue #22): no 5xx; the p99 of small requests ≤ 1 s; memory growth ≤ 100 MB; still answering afterwards.
Also measured: a small request while a worst-case upload is decoded (≤ 0.5 s), the worst-case upload itself
(≤ 1 s), peak memory, and tracebacks in the server's log (0).
"""
from __future__ import annotations

import argparse
import io
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from studio import rss_mb, write_run  # noqa: E402  (bench/studio.py: the runs and /proc as #12's table read them)

MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# What is sent
# ---------------------------------------------------------------------------------------------------------
def encoded(image: Image.Image, file_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def drawing() -> bytes:
    """A digit-like stroke, dark on white, 28×28: what the studio's canvas sends."""
    picture = np.full((28, 28), 255, np.uint8)
    picture[5:23, 12:16] = 0
    return encoded(Image.fromarray(picture))


def tiny_chunks_png(n: int = 200_000) -> bytes:
    png = encoded(Image.new("L", (8, 8)))
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    return png[:33] + empty * n + png[33:]


def empty_scans_jpeg(n: int = 1000) -> bytes:
    jpeg = encoded(Image.new("L", (5000, 5000)), "JPEG", progressive=True)
    last = jpeg.rindex(b"\xff\xda")
    header = jpeg[last:last + 2 + int.from_bytes(jpeg[last + 2:last + 4], "big")]
    return jpeg[:-2] + header * n + b"\xff\xd9"


@dataclass(frozen=True)
class Kind:
    name: str
    method: str
    path: str  # {run}: the run's name, for the studio
    body: bytes | None = None
    small: bool = False  # timed for the p99
    how: str = "plain"  # plain, oversize, slow, idle, hangup
    expect: tuple[int, ...] = ()  # the statuses that are right; () for idle and hangup (no answer)


def mix(server: str, images: dict[str, bytes]) -> list[Kind]:
    """A cycle of 100 requests: 80 small, 1 worst-case upload, 3 refused bombs, 12 refusals, 4 slow clients."""
    predict = "/predict?run=fashion" if server == "studio" else "/predict"
    small = [Kind("health", "GET", "/health", small=True, expect=(200,)),
             Kind("drawing", "POST", predict, images["drawing"], small=True, expect=(200,))]
    if server == "studio":
        small += [Kind("look", "POST", "/api/runs/fashion/look", images["drawing"], small=True, expect=(200,)),
                  Kind("run list", "GET", "/api/runs", small=True, expect=(200,))]
    cycle = [small[i % len(small)] for i in range(80)]
    cycle += [Kind("worst-case upload", "POST", predict, images["worst"], expect=(200,)),
              Kind("the issue's 10000×10000 PNG", "POST", predict, images["issue"], expect=(400,)),
              Kind("crafted file", "POST", predict, images["chunks"], expect=(400,)),
              Kind("crafted file", "POST", predict, images["scans"], expect=(400,))]
    for _ in range(2):
        cycle += [Kind("bad bytes", "POST", predict, b"\x89PNG not really", expect=(400,)),
                  Kind("over the limit", "POST", predict, b"\0" * 65536, how="oversize", expect=(413,)),
                  Kind("unknown path", "GET", "/api/runs/nope/history" if server == "studio" else "/nope",
                       expect=(404,)),
                  Kind("traversal", "GET", "/api/runs/..%2F..%2Fetc%2Fpasswd", expect=(404,)),
                  Kind("HEAD", "HEAD", "/health", expect=(200,)),
                  Kind("OPTIONS", "OPTIONS", "/health", expect=(405,))]
    cycle += [Kind("slow client", "POST", predict, images["drawing"], how="slow", expect=(200,)),
              Kind("slow client", "POST", predict, images["drawing"], how="slow", expect=(200,)),
              Kind("idle half-open", "GET", "/health", how="idle"),
              Kind("hangs up mid-upload", "POST", predict, images["worst"], how="hangup")]
    assert len(cycle) == 100
    random.Random(0).shuffle(cycle)  # any stretch of a client's requests holds a bit of everything
    return cycle


# ---------------------------------------------------------------------------------------------------------
# How it is sent
# ---------------------------------------------------------------------------------------------------------
def head(kind: Kind, length: int | None) -> bytes:
    lines = [f"{kind.method} {kind.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if length is not None:
        lines += ["Content-Type: image/png", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(connection: socket.socket) -> int:
    """The answer's status, after reading the answer to its end (the server closes the connection)."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    if not answer:
        raise ConnectionError("closed without an answer")
    return int(answer.split(b" ", 2)[1])


def send(port: int, kind: Kind) -> int | str:
    """One exchange as ``kind`` says: its status, 'done' for a client that hangs up, or 'error: …'."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
            if kind.how == "idle":
                connection.sendall(f"{kind.method} {kind.path[:3]}".encode())  # half a request line
                time.sleep(2)
                return "done"
            if kind.how == "hangup":
                connection.sendall(head(kind, len(kind.body)) + kind.body[:len(kind.body) // 2])
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                return "done"
            if kind.how == "oversize":  # the header says 10 MiB + 1, a little of it follows
                connection.sendall(head(kind, 10 * MIB + 1))
                try:
                    connection.sendall(kind.body)
                except OSError:
                    pass  # the server may have answered from the header and closed already
                return read_status(connection)
            message = head(kind, None if kind.body is None else len(kind.body)) + (kind.body or b"")
            if kind.how == "slow":  # about a second for the whole request, in four pieces
                for i in range(4):
                    connection.sendall(message[i * len(message) // 4:(i + 1) * len(message) // 4])
                    time.sleep(0.25)
            else:
                connection.sendall(message)
            return read_status(connection)
    except (OSError, ValueError, IndexError) as error:
        return f"error: {type(error).__name__}"


@dataclass
class Load:
    statuses: dict[str, Counter]  # kind → status → count
    small_seconds: list[float]
    worst_seconds: list[float]
    wrong: int  # answers other than expected: 5xx, broken exchanges, a refusal where an answer was due
    seconds: float


def load(port: int, cycle: list[Kind], clients: int, requests: int) -> Load:
    statuses: dict[str, Counter] = defaultdict(Counter)
    small, worst, wrong = [], [], [0]
    lock = threading.Lock()

    def client(number: int) -> None:
        for i in range(requests):
            kind = cycle[(number * 37 + i) % len(cycle)]  # each client from its own place in the cycle
            start = time.perf_counter()
            status = send(port, kind)
            seconds = time.perf_counter() - start
            with lock:
                statuses[kind.name][status] += 1
                if kind.small:
                    small.append(seconds)
                if kind.name == "worst-case upload":
                    worst.append(seconds)
                if (status not in kind.expect) if kind.expect else status != "done":
                    wrong[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return Load(statuses, small, worst, wrong[0], time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------
# The servers, as the command line starts them
# ---------------------------------------------------------------------------------------------------------
def start(server: str, runs: Path, log: Path) -> tuple[subprocess.Popen, int]:
    target = runs if server == "studio" else runs / "fashion"
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", server, str(target), "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = process.stdout.readline()
    if " on http://127.0.0.1:" not in line:
        process.kill()
        raise SystemExit(f"{server} did not start: {line!r}; see {log}")
    return process, int(line.split(" on http://127.0.0.1:")[1].split("/")[0].split()[0])


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def timed(port: int, kind: Kind) -> float:
    start = time.perf_counter()
    status = send(port, kind)
    assert status == 200, (kind.name, status)
    return time.perf_counter() - start


def during_a_worst_case_decode(port: int, cycle: list[Kind]) -> tuple[float, float]:
    """Seconds of a worst-case upload, alone, and of a drawing's /predict sent while it is being decoded."""
    worst = next(kind for kind in cycle if kind.name == "worst-case upload")
    drawing = next(kind for kind in cycle if kind.name == "drawing")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(timed, port, worst)
        time.sleep(0.15)  # the upload has arrived and its decoding begun
        seconds = timed(port, drawing)
        return pending.result(), seconds


def measure(server: str, runs: Path, images: dict[str, bytes], clients: int, requests: int) -> dict:
    log = runs.parent / f"{server}.log"
    process, port = start(server, runs, log)
    try:
        cycle = mix(server, images)
        load(port, cycle, 2, len(cycle) // 2)  # warm-up: one whole cycle, threads, buffers, the allocator
        alone, during = map(statistics.median, zip(*(during_a_worst_case_decode(port, cycle) for _ in range(3))))
        before = rss_mb(process.pid)
        result = load(port, cycle, clients, requests)
        after, peak = rss_mb(process.pid), peak_mb(process.pid)
        alive = send(port, next(kind for kind in cycle if kind.name == "drawing")) == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text(errors="replace")
    return {"load": result, "alone": alone, "during": during, "before": before, "after": after, "peak": peak,
            "alive": alive, "tracebacks": text.count("Traceback"), "log": log}


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


def table(results: dict[str, dict], clients: int, requests: int) -> str:
    names = list(results)
    rows = [("wrong answers (5xx, broken, unexpected)", "0", lambda r: f"{r['load'].wrong:,} of "
             f"{sum(sum(c.values()) for c in r['load'].statuses.values()):,} in {r['load'].seconds:.0f} s"),
            ("5xx", "0", lambda r: str(sum(n for c in r["load"].statuses.values() for s, n in c.items()
                                           if isinstance(s, int) and s >= 500))),
            ("p99 of small requests (median)", "≤ 1 s", lambda r: f"{p99(r['load'].small_seconds):.3f} s "
             f"({statistics.median(r['load'].small_seconds):.3f} s, {len(r['load'].small_seconds):,} requests)"),
            ("worst-case upload alone, median of 3", "≤ 1 s", lambda r: f"{r['alone']:.2f} s"),
            ("a drawing's /predict while it is decoded, median of 3", "≤ 0.5 s", lambda r: f"{r['during']:.3f} s"),
            ("worst-case uploads under the load: median (max)", "", lambda r: "none sent" if not r["load"].worst_seconds
             else f"{statistics.median(r['load'].worst_seconds):.2f} s ({max(r['load'].worst_seconds):.2f} s)"),
            ("memory growth over the load (resident)", "≤ 100 MB",
             lambda r: f"{r['after'] - r['before']:+.1f} MB ({r['before']:.0f} → {r['after']:.0f} MB)"),
            ("peak resident memory", "", lambda r: f"{r['peak']:.0f} MB"),
            ("answers afterwards", "yes", lambda r: "yes" if r["alive"] else "NO"),
            ("tracebacks in the server's log", "0", lambda r: str(r["tracebacks"]))]
    lines = [f"{clients} clients × {requests:,} requests to each server\n",
             "| measure | goal | " + " | ".join(f"`cnnlab {name}`" for name in names) + " |",
             "|---|---|" + "---|" * len(names)]
    lines += [f"| {label} | {goal} | " + " | ".join(cell(results[name]) for name in names) + " |"
              for label, goal, cell in rows]
    for name in names:
        lines.append(f"\n`cnnlab {name}`, statuses by kind of request:")
        for kind, counts in sorted(results[name]["load"].statuses.items()):
            lines.append(f"- {kind}: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(counts.items(), key=str)))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="per client (default 2000)")
    parser.add_argument("--servers", default="studio,serve", help="studio, serve or both (default)")
    args = parser.parse_args()

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}, {os.cpu_count()} CPUs", flush=True)
    images = {"drawing": drawing(),
              "worst": encoded(Image.new("RGBA", (5000, 5000), (40, 60, 80, 128))),
              "issue": encoded(Image.new("RGBA", (10000, 10000), (10, 20, 30, 128)), compress_level=9),
              "chunks": tiny_chunks_png(), "scans": empty_scans_jpeg()}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch) / "runs"
        write_run(runs / "fashion", "fashion-cnn")
        for server in args.servers.split(","):
            results[server] = measure(server, runs, images, args.clients, args.requests)
            print(f"{server}: done at {time.strftime('%H:%M:%S', time.gmtime())} UTC, load average "
                  f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
            if results[server]["tracebacks"]:
                print(results[server]["log"].read_text(errors="replace")[-3000:])
    print()
    print(table(results, args.clients, args.requests))
    ok = all(r["load"].wrong == 0 and r["alive"] and not r["tracebacks"] for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
