"""The Teach view in a real browser (Playwright on Debian's chromium; skipped without it): three classes drawn
with the mouse, trained from the page, then new drawings recognised live; the folder the page wrote trains from the
command line into the same history; a camera frame (Chromium's fake camera) becomes an example."""
from __future__ import annotations

import base64
import math
import os
from pathlib import Path

import numpy as np
import pytest

from cnnlab import cli
from helpers import BROWSER_ARGS, CHROMIUM, history, running_studio

expect = pytest.importorskip("playwright.sync_api", reason="the browser tests need pytest-playwright "
                             "(pip install -e '.[test]')").expect
pytestmark = pytest.mark.slow  # a real browser, and a training: `make quick` leaves them out
SHAPES = ("circle", "line", "cross")
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def strokes(kind: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """A ``kind`` as a hand draws it on the 280-pixel pad: the strokes' points, at a random place, size and angle,
    each point off the ideal path by a few pixels."""
    size = rng.uniform(60, 100)  # px: a circle's radius, half a line
    centre = rng.uniform(40 + size, 240 - size, 2)
    angle = rng.uniform(0, math.pi)

    def path(points: np.ndarray, turn: float) -> list[tuple[float, float]]:
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        placed = points @ rotation.T * size + centre + rng.normal(0, 2.5, points.shape)
        return [tuple(point) for point in placed.clip(2, 278)]

    line = np.stack([np.linspace(-1, 1, 16), np.zeros(16)], 1)
    if kind == "circle":
        around = np.linspace(0, 2 * math.pi * rng.uniform(1.0, 1.1), 32)
        return [path(np.stack([np.cos(around), rng.uniform(0.75, 1.0) * np.sin(around)], 1), angle)]
    if kind == "line":
        return [path(line, angle)]
    return [path(line, angle), path(line, angle + math.pi / 2 + rng.uniform(-0.3, 0.3))]


def draw(page, kind: str, rng: np.random.Generator) -> None:
    # The mouse draws where the pad is on the screen: all of it in sight, none under the page's sticky header.
    page.locator("#teach-pad").evaluate("pad => pad.scrollIntoView({block: 'center'})")
    box = page.locator("#teach-pad").bounding_box()
    scale = box["width"] / 280
    for points in strokes(kind, rng):
        page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.up()


def make_project(page, url: str, name: str, classes: tuple[str, ...]) -> None:
    page.goto(f"{url}/#teach")
    page.wait_for_selector("body[data-ready]", state="attached")
    page.fill("#teach-project-name", name)
    page.click("#teach-new-project button")
    for label in classes:
        page.fill("#teach-class-name", label)
        page.click("#teach-new-class button")
        expect(page.locator(f'.teach-class[data-class="{label}"]')).to_have_count(1)


def count(page, label: str) -> int:
    return int(page.locator(f'.teach-class[data-class="{label}"]').get_attribute("data-count"))


def test_three_drawn_shapes_trained_from_the_page_recognise_new_drawings(watched, tmp_path, monkeypatch):
    page = watched.page
    runs = tmp_path / "runs"
    runs.mkdir()
    # Both trainings on the CPU, whose runs repeat to the last digit (cuDNN's autotuned kernels need not): the
    # page's `cnnlab train` (a child process, device 'auto') sees no GPU, the command line below asks for the CPU.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    rng = np.random.default_rng(0)
    with running_studio(runs) as url:
        make_project(page, url, "shapes", SHAPES)
        for kind in SHAPES:
            page.click(f'.teach-class[data-class="{kind}"] button[aria-pressed]')
            expect(page.locator("#teach-target")).to_have_text(kind)
            for i in range(15):
                draw(page, kind, rng)
                page.click("#teach-add")
                expect(page.locator(f'.teach-class[data-class="{kind}"]')).to_have_attribute("data-count", str(i + 1))
        page.click("#teach-start")
        expect(page.locator("#teach-status")).to_have_attribute("data-state", "training")
        expect(page.locator("#teach-status")).to_have_attribute("data-state", "trained", timeout=300_000)
        run = page.locator("#teach-status").get_attribute("data-run")
        expect(page.locator("#teach-chart .u-legend")).to_have_count(1)  # its curves, as the Runs view draws them

        looks = {"now": 0, "most": 0, "sent": 0}  # the live looks in flight: never more than one

        def sent(request, change: int) -> None:
            if "/look" in request.url:
                looks["now"] += change
                looks["most"] = max(looks["most"], looks["now"])
                looks["sent"] += change > 0
        page.on("request", lambda request: sent(request, 1))
        for event in ("requestfinished", "requestfailed"):
            page.on(event, lambda request: sent(request, -1))
        page.check("#teach-live")
        right = 0
        for kind in SHAPES:
            for _ in range(10):
                page.click("#teach-clear")
                draw(page, kind, rng)
                version = page.locator("#teach-pad").get_attribute("data-version")
                expect(page.locator("#teach-bars")).to_have_attribute("data-version", version, timeout=20_000)
                right += page.locator("#teach-bars .bar.top").get_attribute("data-label") == kind
        if os.environ.get("CNNLAB_STUDIO_SCREENSHOTS"):  # to look at it (the README's is this one)
            page.set_viewport_size({"width": 1280, "height": 1000})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=Path(os.environ["CNNLAB_STUDIO_SCREENSHOTS"]) / "studio-teach.png")
        assert page.evaluate("document.getElementById('run').value") == run  # the studio's run is the one trained
        page.click('#tabs a[data-view="inside"]')
        expect(page.locator('.layer[data-name="conv2d"]')).to_have_count(1)  # Inside follows the live drawings
        problems = list(watched.problems)
    assert right >= 24, f"{right} of 30 new drawings recognised"
    assert looks["most"] == 1 and looks["sent"] >= 30
    assert problems == []
    # The folder the page wrote, trained from the command line with the same recipe (and so the same seed).
    assert cli.main(["train", "teach", "--data", str(runs / "teach" / "shapes"), "--runs-dir", str(tmp_path / "cli"),
                     "--quiet", "--device", "cpu"]) == 0
    (cli_run,) = (tmp_path / "cli").iterdir()
    assert history(runs / run) == history(cli_run)


@pytest.fixture
def camera_page(playwright):
    """A page of a chromium of its own, whose camera is Chromium's fake one (a test pattern), allowed at once."""
    if CHROMIUM is None:
        pytest.skip("no chromium here: `apt-get install chromium` (.ci/run does) to run the browser tests")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS + FAKE_CAMERA)
    try:
        yield browser.new_page()
    finally:
        browser.close()


def test_a_camera_frame_becomes_an_example_and_a_held_button_a_burst(camera_page, tmp_path):
    page = camera_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_studio(runs) as url:
        make_project(page, url, "me", ("hand", "face"))
        page.click('.teach-class[data-class="hand"] button[aria-pressed]')
        page.click("#teach-camera")
        expect(page.locator("#teach-snap")).to_be_visible()
        page.click("#teach-snap")  # one click, one frame
        expect(page.locator('.teach-class[data-class="hand"]')).to_have_attribute("data-count", "1")
        snap = page.locator("#teach-snap").bounding_box()
        page.mouse.move(snap["x"] + 5, snap["y"] + 5)
        page.mouse.down()
        page.wait_for_timeout(1000)  # held: a frame every 150 ms
        page.mouse.up()
        page.wait_for_selector("#teach[data-sending='0']", state="attached")
        held = count(page, "hand") - 1
    frames = sorted((runs / "teach" / "me" / "hand").iterdir())
    assert len(frames) == held + 1 and 3 <= held <= 12, held
    from PIL import Image

    with Image.open(frames[0]) as first:
        assert first.format == "PNG" and max(first.size) <= 256 and first.mode == "RGB"  # the test pattern's colours
    assert errors == []


def small_project(runs: Path, classes: tuple[str, ...] = ("circle", "line"), per_class: int = 6) -> None:
    """A project written as the page writes one, without a browser: drawings of each class (helpers' shapes)."""
    import io

    from cnnlab.teach import Project
    from helpers import draw_shape

    rng = np.random.default_rng(0)
    project = Project.create(runs, "shapes")
    for kind in classes:
        project.add_class(kind)
        for _ in range(per_class):
            buffer = io.BytesIO()
            draw_shape(kind, rng).save(buffer, "PNG")
            project.add_example(kind, buffer.getvalue())


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)])
def test_the_teach_view_fits_a_phone_meets_contrast_and_takes_dropped_files_and_deletions(
        watched, tmp_path, width, height):
    from test_studio_browser import CONTRAST

    page = watched.page
    page.set_viewport_size({"width": width, "height": height})
    runs = tmp_path / "runs"
    runs.mkdir()
    small_project(runs)
    circles = runs / "teach" / "shapes" / "circle"
    payload = [base64.b64encode((circles / name).read_bytes()).decode() for name in ("0001.png", "0002.png")]
    with running_studio(runs) as url:
        page.goto(f"{url}/#teach")
        page.wait_for_selector("body[data-ready]", state="attached")
        expect(page.locator(".teach-class")).to_have_count(2)
        page.click('.teach-class[data-class="circle"] button[aria-pressed]')
        transfer = page.evaluate_handle("""files => {
            const transfer = new DataTransfer();
            files.forEach((data, i) => transfer.items.add(new File([Uint8Array.from(atob(data), c => c.charCodeAt(0))],
                                                                  `dropped${i}.png`, {type: 'image/png'})));
            return transfer; }""", payload)
        page.dispatch_event("#teach-drop", "drop", {"dataTransfer": transfer})
        expect(page.locator('.teach-class[data-class="circle"]')).to_have_attribute("data-count", "8")
        page.click('button[aria-label="delete circle 0003.png"]')
        expect(page.locator('.teach-class[data-class="circle"]')).to_have_attribute("data-count", "7")
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"the Teach view at {width}×{height} scrolls sideways: {scroll} > {inner}"
        assert page.evaluate(CONTRAST) == []
        problems = list(watched.problems)
    assert sorted(p.name for p in circles.iterdir()) == [f"{i:04d}.png" for i in (1, 2, 4, 5, 6, 7, 8)]
    assert (circles / "0007.png").read_bytes() == (circles / "0001.png").read_bytes()  # dropped, kept as it came
    assert problems == []


def test_training_is_stopped_and_resumed_from_the_page(watched, tmp_path, monkeypatch):
    from cnnlab import teach

    command = teach.train_command
    monkeypatch.setattr(teach, "train_command", lambda *args: command(*args) + ["--epochs", "400"])  # time to stop
    page = watched.page
    runs = tmp_path / "runs"
    runs.mkdir()
    small_project(runs)
    status = page.locator("#teach-status")
    with running_studio(runs) as url:
        page.goto(f"{url}/#teach")
        page.wait_for_selector("body[data-ready]", state="attached")
        page.click("#teach-start")
        expect(status).to_have_attribute("data-state", "training")
        expect(status).to_contain_text("validation accuracy", timeout=60_000)  # an epoch is done
        expect(page.locator("#teach-start")).to_be_hidden()
        page.click("#teach-stop")
        expect(status).to_have_attribute("data-state", "stopped", timeout=30_000)
        run = status.get_attribute("data-run")
        page.click("#teach-resume")
        expect(status).to_have_attribute("data-state", "training")
        assert status.get_attribute("data-run") == run  # the same run, continued
        problems = list(watched.problems)
    assert (runs / run / "checkpoint.safetensors").exists() and problems == []
