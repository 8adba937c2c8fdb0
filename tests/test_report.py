"""`cnnlab report`: one self-contained HTML page, checked in a real browser (the tests' one harness: Playwright on
Debian's chromium, in conftest.py) when there is one."""
from __future__ import annotations

import io
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli
from cnnlab.report import write_report


def render(watched, page: Path, width: int = 1100) -> tuple[list[list], Image.Image]:
    """Open ``page`` in the browser: ([complete, naturalWidth] per image, a screenshot of the whole page)."""
    watched.page.set_viewport_size({"width": width, "height": 900})
    watched.page.goto(page.resolve().as_uri())  # returns once the page's load event has fired
    images = watched.page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
    return images, Image.open(io.BytesIO(watched.page.screenshot(full_page=True)))


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


@pytest.mark.slow
def test_report_renders_in_chromium_without_errors(cnn_report, watched, tmp_path):
    images, screenshot = render(watched, cnn_report)
    assert watched.problems == []
    assert len(images) == 9 and all(complete and width > 100 for complete, width in images)  # every PNG decoded
    grey = np.asarray(screenshot.convert("L"), dtype=float)
    assert screenshot.height > 3000  # the whole page, figures and tables, not one screen of it
    assert grey.std() > 20 and (grey < 128).mean() > 0.02  # drawn: dark text and figures on the light page
    screenshot.save(os.environ.get("CNNLAB_REPORT_SCREENSHOT", tmp_path / "report.png"))  # to look at it


def test_the_browser_check_sees_a_broken_page(watched, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><p>broken</p><img src="missing.png">'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    images, _ = render(watched, page)
    problems = watched.problems
    assert any(p.startswith("failed: ") and p.split()[1].endswith("/missing.png") for p in problems)  # the missing file
    assert "console: boom" in problems  # the console error
    assert any(p.startswith("exception: ") and "undefinedFunction" in p for p in problems)  # the uncaught exception
    assert images == [[True, 0]]  # loaded nothing
