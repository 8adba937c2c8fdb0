"""The studio in a real browser (Playwright driving Debian's chromium; skipped without it): drawing, dropping,
clicking a feature map, the theory widget and a training run followed live, with no console error, no failed
request and no sideways scrolling on a phone or a laptop."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from cnnlab import cli
from cnnlab.images import prepare_file
from cnnlab.inside import activations
from cnnlab.runs import load_run
from conftest import REPO, drawn, make_idx_dataset, running_studio
from test_predict import write_digits
from test_studio import request

expect = pytest.importorskip("playwright.sync_api", reason="the browser tests need pytest-playwright "
                             "(pip install -e '.[test]')").expect
VIEWS = ("playground", "inside", "theory", "runs")
# `cnnlab train` slowed down by a pause after each optimiser step, so that epochs end seconds apart
SLOW = """
import sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda optimizer, args, kwargs: time.sleep({pause}))
from cnnlab import cli
sys.exit(cli.main({argv!r}))
"""


@pytest.fixture(scope="module")
def runs(trained_runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser") / "runs"
    folder.mkdir()
    shutil.copytree(trained_runs["cnn"], folder / "cnn")
    shutil.copytree(trained_runs["mlp"], folder / "mlp")
    return folder


@pytest.fixture(scope="module")
def studio(runs):
    with running_studio(runs, default_run="cnn") as url:
        yield url


def open_studio(page, url: str, view: str = "playground") -> None:
    page.goto(f"{url}/#{view}")
    page.wait_for_selector("body[data-ready]", state="attached")  # the page's CSP forbids wait_for_function's eval


def test_a_drawn_stroke_gets_the_answer_predict_gives_for_the_canvas(watched, studio):
    page = watched.page
    open_studio(page, studio)
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    for i in range(1, 21):  # looks go out as the stroke grows (debounced)
        page.mouse.move(x, box["y"] + (0.15 + 0.035 * i) * box["height"])
    page.mouse.up()  # and the last one now
    page.wait_for_selector("body:not([data-busy])", state="attached")  # its answer shown
    expect(page.locator("#bars .bar")).to_have_count(10)
    shown = page.locator("#bars .bar.top").get_attribute("data-label")
    canvas = base64.b64decode(page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",")[1])
    status, answer = request(f"{studio}/predict?run=cnn&top=1", canvas)
    assert status == 200 and answer["predictions"][0]["label"] == shown
    assert drawn(page.screenshot()) and watched.problems == []


def test_a_dropped_file_gets_the_answer_of_cnnlab_predict_json(watched, studio, runs, tmp_path, capsys):
    page = watched.page
    paths = write_digits(tmp_path, 2)
    assert cli.main(["predict", str(runs / "cnn"), *map(str, paths), "--json", "--device", "cpu"]) == 0
    expected = [json.loads(line)["top"] for line in capsys.readouterr().out.splitlines()]
    open_studio(page, studio)
    # One file dropped on the drop zone, the other chosen with the file picker.
    payload = base64.b64encode(paths[0].read_bytes()).decode()
    transfer = page.evaluate_handle("""data => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'digit0.png', {type: 'image/png'}));
        return transfer; }""", payload)
    for action in (lambda: page.dispatch_event("#drop", "drop", {"dataTransfer": transfer}),
                   lambda: page.set_input_files("#file", str(paths[1]))):
        action()
        page.wait_for_selector("body:not([data-busy])", state="attached")  # the answer shown
        expect(page.locator("#bars .bar")).to_have_count(10)
        shown = page.eval_on_selector_all("#bars .bar", "bars => bars.slice(0, 3).map(b => [b.dataset.label, "
                                                       "Number(b.dataset.probability)])")
        answer = expected.pop(0)
        assert shown == [[p["label"], p["probability"]] for p in answer]
    assert watched.problems == []


def test_a_clicked_feature_map_pixel_is_explained_to_the_forward_passs_value(watched, studio, runs, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    open_studio(page, studio)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body:not([data-busy])", state="attached")
    page.click('#tabs a[data-view="inside"]')
    run = load_run(runs / "cnn")
    conv = {a.name: a.values for a in activations(run, prepare_file(path, "digit", (1, 28, 28)))}["conv2d"]
    for channel, where in ((5, {"x": 1, "y": 1}), (12, None)):  # the top-left corner (padding), then the centre
        target = page.locator(f'canvas.map[data-layer="conv2d"][data-channel="{channel}"]')
        with page.expect_response("**/value*") as answer:
            target.click(position=where)
        expect(page.locator("#value h2")).to_contain_text(f"map {channel},")
        query = dict(p.split("=") for p in answer.value.url.split("?")[1].split("&"))
        row, col = int(query["row"]), int(query["col"])
        if where:
            assert (row, col) == (0, 0) and page.locator("#value table.patch td.padding").count() == 5
        total = float(page.locator("#value-sum").get_attribute("data-value")) + \
            float(page.locator("#value-bias").get_attribute("data-value"))
        assert total == pytest.approx(float(conv[channel, row, col]), abs=1e-4)
        assert float(page.locator("#value-result").get_attribute("data-value")) == pytest.approx(total, abs=1e-9)
    assert page.locator("#value").get_by_text("max_pooling2d keeps the largest of its 2×2 window").count() == 1
    assert drawn(page.screenshot()) and watched.problems == []


def test_the_theory_widget_reproduces_the_courses_example(watched, studio):
    page = watched.page
    open_studio(page, studio, "theory")
    page.click("#t-course")
    size = page.locator("#t-output-size")
    assert size.get_attribute("data-size") == "3×3"
    page.fill("#t-pad", "1")
    assert size.get_attribute("data-size") == "5×5"
    page.fill("#t-stride", "2")
    assert size.get_attribute("data-size") == "3×3"  # ⌊(5 + 2 − 3) / 2⌋ + 1
    page.select_option("#t-op", "max")
    page.fill("#t-pad", "0")
    page.fill("#t-kernel", "2")
    assert size.get_attribute("data-size") == "2×2"  # 2×2 pooling, stride 2, halves 5 to 2 (floor)
    assert drawn(page.screenshot()) and watched.problems == []


def test_a_run_in_training_gains_its_epochs_without_a_reload(watched, tmp_path):
    page = watched.page
    data = make_idx_dataset(tmp_path / "mnist", n_train=1000, n_test=100)  # 13 steps of 0.15 s or more an epoch
    folder = tmp_path / "runs"
    folder.mkdir()
    with running_studio(folder) as url:
        open_studio_empty = page.goto(f"{url}/#runs")
        assert open_studio_empty.ok
        page.evaluate("window.notReloaded = true")
        argv = ["train", "mnist-cnn", "--data-dir", str(data), "--runs-dir", str(folder), "--set", "epochs=4",
                "--set", "batch_size=64", "--set", "optimizer=adam", "--device", "cpu"]
        training = subprocess.Popen([sys.executable, "-c", SLOW.format(pause=0.15, argv=argv)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            counts = set()
            for _ in range(600):
                counts.add(page.locator("#epochs tr.epoch-row").count())
                if 4 in counts or training.poll() is not None:
                    break
                page.wait_for_timeout(100)
            assert training.wait(timeout=120) == 0, training.stderr.read()
            expect(page.locator("#epochs tr.epoch-row")).to_have_count(4, timeout=5000)
            problems = list(watched.problems)  # now: once the server stops, the page's next poll fails
        finally:
            training.kill()
    assert len(counts - {0, 4}) >= 1  # seen part-way: rows came one epoch at a time
    assert page.evaluate("window.notReloaded") is True
    assert problems == []


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 800)])
def test_no_view_scrolls_sideways_and_none_is_blank(watched, studio, width, height, tmp_path):
    page = watched.page
    page.set_viewport_size({"width": width, "height": height})
    open_studio(page, studio)
    with page.expect_response("**/look*"):
        page.click("#random")
    expect(page.locator("#bars .bar")).to_have_count(10)
    for view in VIEWS:
        page.click(f'#tabs a[data-view="{view}"]')
        page.wait_for_timeout(400)
        if view == "inside":
            page.locator('canvas.map[data-layer="conv2d"]').nth(3).click(position={"x": 20, "y": 20})
            page.wait_for_selector("#value-sum")
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{view} at {width}×{height} scrolls sideways: {scroll} > {inner}"
        shot = page.screenshot(full_page=True)
        assert drawn(shot), f"{view} at {width}×{height} looks blank"
        (tmp_path / f"{view}-{width}.png").write_bytes(shot)
    page.click('#tabs a[data-view="playground"]')
    if os.environ.get("CNNLAB_STUDIO_SCREENSHOTS"):  # to look at them
        shutil.copytree(tmp_path, os.environ["CNNLAB_STUDIO_SCREENSHOTS"], dirs_exist_ok=True)
    assert watched.problems == []
