"""`cnnlab report`: one self-contained HTML page, checked in a real browser (headless Chromium) when there is one.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending
in NUL on file descriptors 3 and 4), so the check needs no network, no port and no package beyond the standard
library.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli
from cnnlab.report import write_report

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's)")
ERROR_EVENTS = ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")


def render(page: Path, profile: Path, width: int = 1100) -> tuple[list[str], list[list], Image.Image]:
    """Open ``page`` in headless Chromium: (errors it logged, [complete, naturalWidth] per image, screenshot)."""
    to_chrome, from_chrome = os.pipe(), os.pipe()

    def wire_fds() -> None:  # Chromium reads commands from fd 3 and writes replies and events to fd 4
        os.dup2(to_chrome[0], 3)
        os.dup2(from_chrome[1], 4)

    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-pipe", "about:blank"],
        pass_fds=(3, 4), preexec_fn=wire_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome[0])
    os.close(from_chrome[1])
    events: list[dict] = []
    pending = b""
    next_id = 0

    def receive() -> dict:
        nonlocal pending
        while b"\0" not in pending:
            chunk = os.read(from_chrome[0], 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            pending += chunk
        message, _, pending = pending.partition(b"\0")
        return json.loads(message)

    def send(method: str, params: dict | None = None, session: str | None = None) -> dict:
        nonlocal next_id
        next_id += 1
        message = {"id": next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(to_chrome[1], json.dumps(message).encode() + b"\0")
        while (reply := receive()).get("id") != next_id:
            events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    try:
        target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            send(f"{domain}.enable", session=session)
        send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                    "mobile": False}, session)
        send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(receive())
        images = json.loads(send("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images, i => [i.complete, i.naturalWidth]))",
            "returnByValue": True}, session)["result"]["value"])
        shot = send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)["data"]
        send("Browser.close")
    finally:
        os.close(to_chrome[1])  # Chromium quits when its pipe closes, even if Browser.close was never sent
        os.close(from_chrome[0])
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    errors = [json.dumps(e["params"])[:300] for e in events if e.get("method") in ERROR_EVENTS and
              (e["method"] == "Runtime.exceptionThrown" or e["params"].get("type") == "error" or
               e["params"].get("entry", {}).get("level") == "error")]
    return errors, images, Image.open(io.BytesIO(base64.b64decode(shot)))


class Links(HTMLParser):
    """Every address a page names in an attribute (src, href, srcset, …), with its tag."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, value or "") for name, value in attrs
                       if name in ("src", "href", "srcset", "action", "data", "poster", "background")]


@pytest.fixture(scope="module")
def cnn_report(trained_runs, tmp_path_factory) -> Path:
    run_dir = shutil.copytree(trained_runs["cnn"], tmp_path_factory.mktemp("report") / "run")
    return write_report(run_dir, trained_runs["data"], device="cpu")


def test_report_is_self_contained(cnn_report):
    text = cnn_report.read_text()
    links = Links(text).found
    assert len(links) == 9 and all(tag == "img" and address.startswith("data:image/png;base64,")
                                   for tag, address in links)
    assert "url(" not in text and "@import" not in text  # nor from the style sheet
    assert "default-src 'none'" in text  # and the browser is told to fetch nothing else
    for heading in ("Test metrics", "Learning curves", "Per-class scores", "Confusion matrix", "Worst mistakes",
                    "Predictions", "What the network sees", "Model", "Recipe"):
        assert f"<h2>{heading}</h2>" in text
    assert "Total params: 804,554" in text and "<td>mnist-cnn</td>" in text


def test_report_of_an_mlp_says_it_has_no_convolution(trained_runs, tmp_path, capsys):
    run_dir = shutil.copytree(trained_runs["mlp"], tmp_path / "run")
    assert cli.main(["report", str(run_dir), "--data-dir", str(trained_runs["data"]), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == f"{run_dir / 'report.html'}\n"
    text = (run_dir / "report.html").read_text()
    assert "has no convolution" in text and 'alt="dense_weights"' in text and 'alt="feature_maps"' not in text


@needs_chromium
def test_report_renders_in_chromium_without_errors(cnn_report, tmp_path):
    errors, images, screenshot = render(cnn_report, tmp_path / "profile")
    assert errors == []
    assert len(images) == 9 and all(complete and width > 100 for complete, width in images)  # every PNG decoded
    grey = np.asarray(screenshot.convert("L"), dtype=float)
    assert screenshot.height > 3000  # the whole page, figures and tables, not one screen of it
    assert grey.std() > 20 and (grey < 128).mean() > 0.02  # drawn: dark text and figures on the light page
    screenshot.save(os.environ.get("CNNLAB_REPORT_SCREENSHOT", tmp_path / "report.png"))  # to look at it


@needs_chromium
def test_the_browser_check_sees_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><p>broken</p><img src="missing.png">'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    errors, images, _ = render(page, tmp_path / "profile")
    assert len(errors) == 3  # the missing file, the console error and the uncaught exception
    assert images == [[True, 0]]  # loaded nothing
