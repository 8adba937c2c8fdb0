"""The studio in a real browser (Playwright driving Debian's chromium; skipped without it): drawing, dropping,
clicking a feature map, the theory widget and a training run followed live, with no console error, no failed
request and no sideways scrolling on a phone or a laptop; the page's plumbing (HTTP errors, time-outs, polling,
the keyboard, contrast); and every view of a value — the sliding kernel, ReLU, pooling, BatchNorm, flatten, a
dense unit, softmax, the colour scales — with its numbers checked against the library's forward pass."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import cli
from cnnlab.images import prepare_file
from cnnlab.inside import activations
from cnnlab.runs import load_run
from helpers import REPO, drawn, make_idx_dataset, move_data, running_studio
from test_predict import write_digits
from test_studio import request

pytestmark = pytest.mark.slow  # a real browser: `make quick` leaves them out

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
    """The CNN and the MLP, and a BatchNorm CNN trained for one epoch (its convolutions have no bias)."""
    from cnnlab import get_recipe, train_recipe, with_overrides

    folder = tmp_path_factory.mktemp("browser") / "runs"
    folder.mkdir()
    shutil.copytree(trained_runs["cnn"], folder / "cnn")
    shutil.copytree(trained_runs["mlp"], folder / "mlp")
    recipe = with_overrides(get_recipe("mnist-cnn"), {"model": "bn-cnn", "epochs": 1, "optimizer": "adam",
                                                      "batch_size": 32, "device": "cpu"})
    shutil.move(train_recipe(recipe, trained_runs["data"], tmp_path_factory.mktemp("bn"), False), folder / "bn")
    return folder


@pytest.fixture(scope="module")
def studio(runs):
    with running_studio(runs, default_run="cnn") as url:
        yield url


def open_studio(page, url: str, view: str = "playground", run: str | None = None) -> None:
    page.goto(f"{url}/{f'?run={run}' if run else ''}#{view}")
    page.wait_for_selector("body[data-ready]", state="attached")  # the page's CSP forbids wait_for_function's eval


def runs_of_one(run: Path, folder: Path, name: str) -> Path:
    """A runs folder of its own holding a copy of ``run`` named ``name``, for a test that changes or adds runs."""
    folder.mkdir()
    shutil.copytree(run, folder / name)
    return folder


def answered(page) -> None:
    """Wait until the look asked for is shown."""
    page.wait_for_selector("body:not([data-busy])", state="attached")


def upload(page, path) -> None:
    page.set_input_files("#file", str(path))
    answered(page)


def bars(page) -> list[list]:
    """The answer's bars as shown, top to bottom: [label, class, probability]."""
    return page.eval_on_selector_all("#bars .bar", "bars => bars.map(b => [b.dataset.label, Number(b.dataset.class), "
                                                   "Number(b.dataset.probability)])")


def explained(page, cell: str | None = None, state: str = "chosen", prefix: str = "") -> str:
    """Wait until the value ``cell`` ('layer/channel/row/col'), or any of ``prefix``, is explained; its key."""
    where = f'[data-cell="{cell}"]' if cell else f'[data-cell^="{prefix}"]'
    page.wait_for_selector(f'#value{where}[data-state="{state}"]')
    return page.locator("#value").get_attribute("data-cell")


def number(page, id: str) -> float:
    return float(page.locator(f"#{id}").get_attribute("data-value"))


def library(run_dir, path) -> dict[str, torch.Tensor]:
    """Every layer's output for the image file at ``path``, from cnnlab's own forward pass."""
    run = load_run(run_dir)
    return {a.name: a.values for a in activations(run, prepare_file(path, run.info.preprocess, run.info.in_shape))}


def page_problems(watched, *provoked: str) -> list[str]:
    """What went wrong on the page, but the failed requests a test provoked (``provoked``: parts of their URLs)
    and the console lines Chromium writes for them."""
    def by_the_test(problem: str) -> bool:
        return problem.startswith("console: Failed to load resource") or \
            (problem.startswith(("HTTP ", "failed: ")) and any(part in problem for part in provoked))
    return [problem for problem in watched.problems if not by_the_test(problem)]


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
        answered(page)
        expect(page.locator("#bars .bar")).to_have_count(10)
        shown = sorted(bars(page), key=lambda bar: -bar[2])[:3]  # the bars stay in class order; the top 3
        answer = expected.pop(0)
        assert [[label, p] for label, _, p in shown] == [[p["label"], p["probability"]] for p in answer]
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
        with page.expect_response("**/cell*") as answer:
            target.click(position=where)
        expect(page.locator("#value h2")).to_contain_text(f"map {channel},")
        explained(page, prefix=f"conv2d/{channel}/")
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


# ---------------------------------------------------------------------------------------------------------
# The page's plumbing: HTTP errors, time-outs, polling, the keyboard, contrast
# ---------------------------------------------------------------------------------------------------------
def test_an_error_page_or_a_hung_request_is_a_message_not_a_crash(watched, studio, tmp_path):
    page = watched.page
    page.clock.install()  # the page's timers at the test's command: its 30 s time-out in no time
    (path,) = write_digits(tmp_path, 1)
    open_studio(page, studio)
    upload(page, path)
    expect(page.locator("#bars .bar")).to_have_count(10)
    page.route("**/look*", lambda route: route.fulfill(status=502, content_type="text/html",
                                                       body="<html><h1>502 Bad Gateway</h1></html>"))
    upload(page, path)  # an HTML error page: its status is read, not its body parsed as JSON
    look = page.locator('#message [data-topic="look"]')
    expect(look).to_contain_text("/look: the studio answered 502")
    expect(page.locator("#bars .bar")).to_have_count(0)  # the previous image's answer went with it
    page.unroute("**/look*")
    page.route("**/look*", lambda route: None)  # never answered
    page.set_input_files("#file", str(path))
    page.clock.run_for(31_000)
    answered(page)
    expect(look).to_contain_text("did not answer /api/runs/cnn/look within 30 s")
    page.unroute("**/look*")
    upload(page, path)
    expect(look).to_have_count(0)
    expect(page.locator("#bars .bar")).to_have_count(10)
    assert page_problems(watched, "/look", "/api/runs") == []  # the clock's jump may time out a poll too


def test_a_failed_poll_of_the_run_list_is_shown_then_cleared(watched, studio):
    page = watched.page
    open_studio(page, studio, "runs")  # the run list, polled every second
    page.route("**/api/runs", lambda route: route.fulfill(status=503, content_type="application/json",
                                                          body='{"error": "busy"}'))
    polled = page.locator('#message [data-topic="runs"]')
    expect(polled).to_contain_text("The run list could not be read: busy")
    page.unroute("**/api/runs")
    expect(polled).to_have_count(0)
    assert page_problems(watched, "/api/runs") == []


def test_a_feature_map_pixel_is_chosen_from_the_keyboard(watched, studio, runs, tmp_path):
    page = watched.page
    conv = inside_a_digit(page, studio, runs, tmp_path)["conv2d"]
    page.focus('canvas.map[data-layer="conv2d"][data-channel="5"]')
    page.keyboard.press("Enter")
    explained(page, "conv2d/5/0/0")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    explained(page, "conv2d/5/1/2")
    assert number(page, "value-result") == pytest.approx(float(conv[5, 1, 2]), abs=1e-5)
    assert page.evaluate("document.activeElement.dataset.channel") == "5"  # the focus stays on the map
    page.focus("#slide-output")  # the detail view's own map, too
    page.keyboard.press("ArrowDown")
    explained(page, "conv2d/5/2/2")
    assert number(page, "value-result") == pytest.approx(float(conv[5, 2, 2]), abs=1e-5)
    assert watched.problems == []


# Every element's text against the background it is drawn on (ancestors' colours composited): WCAG AA asks
# 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
CONTRAST = """() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = (rgb) => rgb.slice(0, 3).map((c) => (c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
    .reduce((sum, c, i) => sum + [0.2126, 0.7152, 0.0722][i] * c, 0);
  const over = (top, under) => under.map((v, i) => top[3] * top[i] + (1 - top[3]) * v);
  const background = (node) => {
    const layers = [];
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255]);
  };
  const failures = [], seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode.parentElement, text = walker.currentNode.textContent.trim();
    if (!text || seen.has(node) || node.closest("option, script, style")) continue;
    seen.add(node);
    if (!node.checkVisibility({ visibilityProperty: true, opacityProperty: true })) continue;
    const style = getComputedStyle(node), bg = background(node), fg = over(parse(style.color), bg);
    const [light, dark] = [lum(fg), lum(bg)].sort((a, b) => b - a), ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const need = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700) ? 3 : 4.5;
    if (ratio < need) failures.push(`${node.tagName}.${node.className} "${text.slice(0, 30)}": ${ratio.toFixed(2)}`);
  }
  return failures;
}"""


def test_every_text_on_every_view_meets_wcag_aa_contrast(watched, studio, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    open_studio(page, studio)
    upload(page, path)
    failures = {"playground": page.evaluate(CONTRAST)}
    page.click('#tabs a[data-view="inside"]')
    page.locator('canvas.map[data-layer="conv2d"]').nth(2).click(position={"x": 1, "y": 1})
    explained(page, prefix="conv2d/2/")
    failures["inside: a convolution"] = page.evaluate(CONTRAST)
    page.locator('canvas.map[data-layer="max_pooling2d"]').nth(2).click(position={"x": 20, "y": 20})
    explained(page, prefix="max_pooling2d/2/")
    failures["inside: pooling"] = page.evaluate(CONTRAST)
    page.click('#tabs a[data-view="theory"]')
    page.fill("#t-kernel", "9")  # an error and its marks
    page.select_option("#t-op", "max")
    failures["theory"] = page.evaluate(CONTRAST)
    page.click('#tabs a[data-view="runs"]')
    page.wait_for_selector("#chart-accuracy .u-legend")
    failures["runs"] = page.evaluate(CONTRAST)
    page.click('#tabs a[data-view="playground"]')
    upload(page, bad)
    expect(page.locator('#message [data-topic="look"]')).to_be_visible()
    failures["an error message"] = page.evaluate(CONTRAST)
    assert {view: found for view, found in failures.items() if found} == {}
    assert page_problems(watched, "/look") == []


# ---------------------------------------------------------------------------------------------------------
# What a learner found wrong: the theory widget, the answer's bars, the bias, the window, the phone, the runs
# ---------------------------------------------------------------------------------------------------------
def test_the_theory_widget_marks_impossible_settings_instead_of_clamping(watched, studio):
    page = watched.page
    open_studio(page, studio, "theory")
    page.click("#t-course")
    size, problems = page.locator("#t-output-size"), page.locator("#t-problems li")
    page.fill("#t-size", "28")  # once clamped to 14 while the box said 28
    assert page.input_value("#t-size") == "28" and page.input_value("#t-size-slider") == "28"
    assert size.get_attribute("data-size") == "26×26"
    expect(page.locator("#t-formula")).to_contain_text("⌊(28 + 2·0 − 3) / 1⌋ + 1 = 26")
    page.fill("#t-size", "40")  # beyond what the widget draws: kept in the box, marked, nothing computed
    assert page.input_value("#t-size") == "40" and size.get_attribute("data-size") == "invalid"
    assert page.get_attribute("#t-size", "aria-invalid") == "true"
    assert "invalid" in page.get_attribute("#t-size", "class")
    expect(problems).to_have_attribute("data-problem", "out-of-range")
    page.fill("#t-size", "5")
    page.fill("#t-kernel", "6")
    assert size.get_attribute("data-size") == "impossible"
    expect(problems).to_have_attribute("data-problem", "kernel-too-large")
    page.fill("#t-kernel-slider", "3")  # the slider moves the box
    assert page.input_value("#t-kernel") == "3" and size.get_attribute("data-size") == "3×3"
    expect(problems).to_have_count(0)
    page.fill("#t-stride", "3")  # ⌊(5 − 3) / 3⌋ + 1 = 1: the last 2 rows and columns are never read
    assert size.get_attribute("data-size") == "1×1"
    expect(problems).to_have_attribute("data-problem", "stride-skips")
    expect(problems).to_contain_text("skips the last 2 rows and columns")
    assert "warn" in page.get_attribute("#t-stride", "class")
    page.select_option("#t-op", "max")
    page.fill("#t-stride", "1")
    page.fill("#t-kernel", "2")
    page.fill("#t-pad", "2")  # the corner windows would hold only padding
    assert size.get_attribute("data-size") == "impossible"
    expect(problems).to_have_attribute("data-problem", "padding-only-window")
    page.fill("#t-pad", "1")  # padding ≤ k/2: what PyTorch takes
    expect(problems).to_have_count(0)
    assert size.get_attribute("data-size") == "6×6"
    assert watched.problems == []


def colour(value: float, limit: float) -> list[int]:
    """heat.js's colour: blue below 0, white at 0, red above, full at ±limit."""
    t = max(-1.0, min(1.0, value / limit if limit else 0.0))
    fade = round(255 * (1 - abs(t)))
    return [255, fade, fade] if t >= 0 else [fade, fade, 255]


def test_the_theory_widget_computes_what_pytorch_computes_and_colours_its_first_cell_on_the_whole_scale(
        watched, studio):
    page = watched.page
    open_studio(page, studio, "theory")
    page.click("#t-play")  # paused: only the first output cell is drawn
    for op, (n, k, p, s) in (("conv", (7, 3, 1, 2)), ("max", (6, 2, 1, 2)), ("avg", (6, 3, 1, 2))):
        page.select_option("#t-op", op)
        for field, value in zip(("size", "kernel", "pad", "stride"), (n, k, p, s)):
            page.fill(f"#t-{field}", str(value))
        image = torch.tensor(json.loads(page.get_attribute("#t-input", "data-values")), dtype=torch.float64)[None, None]
        shown = torch.tensor(json.loads(page.get_attribute("#t-output", "data-values")), dtype=torch.float64)
        if op == "conv":  # the widget's edge kernel: −1 in the left column, +1 in the right
            kernel = torch.zeros(1, 1, k, k, dtype=torch.float64)
            kernel[..., 0], kernel[..., -1] = -1, 1
            expected = nn.functional.conv2d(image, kernel, padding=p, stride=s)
        elif op == "max":
            expected = nn.functional.max_pool2d(image, k, s, p)
        else:  # padding left out of the mean
            expected = nn.functional.avg_pool2d(image, k, s, p, count_include_pad=False)
        assert torch.allclose(shown, expected[0, 0], atol=1e-9), op
    page.select_option("#t-op", "conv")
    page.fill("#t-size", "5")
    page.fill("#t-pad", "0")
    page.fill("#t-stride", "1")
    outputs = json.loads(page.get_attribute("#t-output", "data-values"))
    limit = max(abs(v) for row in outputs for v in row)
    first = page.evaluate("""n => { const c = document.getElementById('t-output'), side = c.width / n;
        return Array.from(c.getContext('2d').getImageData(side / 2, side / 2, 1, 1).data).slice(0, 3); }""",
                          len(outputs))
    assert page.get_attribute("#t-output", "data-frame") == "0"
    assert first == pytest.approx(colour(outputs[0][0], limit), abs=1)  # not full colour unless it is the largest
    assert watched.problems == []


def test_the_answers_bars_are_named_and_keep_their_places_while_drawing(watched, studio, runs):
    page = watched.page
    classes = list(load_run(runs / "cnn").info.classes)
    open_studio(page, studio)
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    orders = []
    for i in range(1, 9):  # the answer to each part of the stroke, as it is drawn
        page.mouse.move(x + 6 * (i % 3), box["y"] + (0.15 + 0.08 * i) * box["height"], steps=2)
        page.wait_for_timeout(250)
        answered(page)
        orders.append([(label, cls) for label, cls, _ in bars(page)])
    page.mouse.up()
    answered(page)
    orders.append([(label, cls) for label, cls, _ in bars(page)])
    assert all(order == list(zip(classes, range(10))) for order in orders if order)
    shown = bars(page)
    top = page.locator("#bars .bar.top").get_attribute("data-label")
    assert top == max(shown, key=lambda bar: bar[2])[0]
    page.click('#tabs a[data-view="inside"]')
    assert page.locator(".logit .name").all_inner_texts() == classes  # the output layer's bars, named
    assert watched.problems == []


def test_a_convolution_without_a_bias_adds_none(watched, studio, runs, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    open_inside(page, studio, path, run="bn")
    row, col = click_value(page, "conv1", 3, 30, 30)
    sum_line = page.locator("#value .sum").inner_text()
    assert page.locator("#value-bias").count() == 0 and "+ bias" not in sum_line and "0.0000 =" not in sum_line
    conv = library(runs / "bn", path)["conv1"]
    assert number(page, "value-result") == number(page, "value-sum")
    assert number(page, "value-result") == pytest.approx(float(conv[3, row, col]), abs=1e-5)
    assert watched.problems == []


def test_the_window_and_the_chosen_cell_are_framed_in_black_and_white(watched, studio, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    open_inside(page, studio, path)
    page.locator('canvas.map[data-layer="max_pooling2d"]').nth(0).click(position={"x": 20, "y": 20})
    explained(page, prefix="max_pooling2d/0/")
    frames = {selector: page.eval_on_selector(selector, """node => { const s = getComputedStyle(node);
        return [s.outlineColor, s.outlineStyle, parseFloat(s.outlineWidth), s.boxShadow]; }""")
              for selector in ("#pool-input .mark.window", "#pool-output .mark.cell", "#value table.window td.here")}
    for selector, (color, style, width, shadow) in frames.items():  # one of the two lines shows on any colour
        assert (color, style) == ("rgb(17, 17, 17)", "solid") and width >= 2, selector
        assert "rgb(255, 255, 255)" in shadow, selector
    assert watched.problems == []


def test_on_a_phone_the_answer_is_right_under_the_drawing(watched, studio):
    page = watched.page
    page.set_viewport_size({"width": 390, "height": 844})
    open_studio(page, studio)
    with page.expect_response("**/look*"):
        page.click("#random")
    answered(page)
    pad = page.locator("#pad").bounding_box()
    first, last = page.locator("#bars .bar").first.bounding_box(), page.locator("#bars .bar").last.bounding_box()
    assert first["y"] - (pad["y"] + pad["height"]) < 250  # it was about 1,000 px
    assert last["y"] + last["height"] <= 844  # the whole answer on the first screen
    assert watched.problems == []


def test_switching_runs_keeps_the_image(watched, studio, runs, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    open_studio(page, studio)
    upload(page, path)
    page.select_option("#run", "mlp")
    page.wait_for_selector("#bars .bar")
    answered(page)
    status, answer = request(f"{studio}/predict?run=mlp&top=10", path.read_bytes())
    assert status == 200
    assert sorted((label, p) for label, _, p in bars(page)) == \
        sorted((p["label"], p["probability"]) for p in answer["predictions"])
    with page.expect_response("**/look*"):
        page.click("#random")
    answered(page)
    picked = page.locator("#prepared-note").inner_text().split(" of ")[0]  # "test image #N"
    page.select_option("#run", "cnn")  # the same data set: the same test image
    page.wait_for_selector("#bars .bar")
    answered(page)
    expect(page.locator("#prepared-note")).to_contain_text(f"{picked} of the run's data set")
    assert watched.problems == []


def test_a_run_that_finishes_while_the_page_is_open_joins_the_picker(watched, runs, tmp_path):
    page = watched.page
    folder = runs_of_one(runs / "cnn", tmp_path / "runs", "cnn")
    with running_studio(folder) as url:
        open_studio(page, url)
        page.evaluate("window.notReloaded = true")
        options = page.locator("#run option")
        expect(options).to_have_count(1)
        shutil.copytree(runs / "mlp", tmp_path / "mlp")  # a run being written: no metrics.json yet
        metrics = (tmp_path / "mlp" / "metrics.json").read_bytes()
        (tmp_path / "mlp" / "metrics.json").unlink()
        os.rename(tmp_path / "mlp", folder / "mlp")
        page.wait_for_timeout(3500)  # a poll or more
        expect(options).to_have_count(1)  # not offered while it trains
        (folder / "mlp" / "metrics.json").write_bytes(metrics)  # finished
        expect(options).to_have_count(2, timeout=8000)
        assert options.all_inner_texts()[1].startswith("mlp") and page.input_value("#run") == "cnn"
        problems = list(watched.problems)  # now: once the server stops, the page's next poll fails
    assert page.evaluate("window.notReloaded") is True and problems == []


def test_a_failed_upload_takes_its_answer_away_and_a_good_run_clears_the_errors(watched, studio, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    open_studio(page, studio)
    upload(page, path)
    expect(page.locator("#bars .bar")).to_have_count(10)
    upload(page, bad)
    expect(page.locator("#bars .bar")).to_have_count(0)  # not the previous image's answer
    expect(page.locator("#bars")).to_contain_text("No answer")
    expect(page.locator('#message [data-topic="look"]')).to_be_visible()
    page.select_option("#run", "mlp")
    expect(page.locator("#message span")).to_have_count(0)
    assert page_problems(watched, "/look") == []


def test_the_learning_curves_legend_tells_train_from_validation(watched, studio):
    page = watched.page
    open_studio(page, studio, "runs")
    page.wait_for_selector("#chart-loss .u-legend")
    for chart in ("#chart-accuracy", "#chart-loss"):
        legend = page.eval_on_selector_all(f"{chart} .u-legend tr.u-series", """rows => rows.slice(1).map(r => {
            const marker = r.querySelector('.u-marker');
            return [r.querySelector('.u-label').textContent, getComputedStyle(marker).borderTopStyle,
                    getComputedStyle(marker, '::after').content !== 'none']; })""")
        assert legend == [["cnn validation", "solid", True], ["cnn train", "dashed", False]]  # line, dash, dot
    assert watched.problems == []


def test_moved_data_is_explained_in_the_studios_terms(watched, runs, tmp_path):
    page = watched.page
    folder = runs_of_one(runs / "cnn", tmp_path / "runs", "moved")
    move_data(folder / "moved", tmp_path / "gone")
    with running_studio(folder) as url:
        open_studio(page, url)
        page.click("#random")
        answered(page)
        message = page.locator('#message [data-topic="look"]').inner_text()
        problems = page_problems(watched, "/look")
    assert "--data-dir" not in message and "which is gone: put the data back there" in message
    assert "draw or drop an image of your own" in message and problems == []


# ---------------------------------------------------------------------------------------------------------
# The views CNN Explainer has, on the learner's own run: every number against the library's forward pass
# ---------------------------------------------------------------------------------------------------------
def open_inside(page, url: str, path, run: str = "cnn") -> None:
    open_studio(page, url, run=run)
    upload(page, path)
    page.click('#tabs a[data-view="inside"]')


def inside_a_digit(page, url: str, runs: Path, tmp_path: Path, run: str = "cnn") -> dict[str, torch.Tensor]:
    """A digit written, sent to ``run`` and the Inside view opened on it; every layer's output for it, as the
    library computes them (``library``), to check the page's numbers against."""
    (path,) = write_digits(tmp_path, 1)
    open_inside(page, url, path, run=run)
    return library(runs / run, path)


def click_value(page, layer: str, channel: int, x: int, y: int) -> tuple[int, int]:
    """Click map ``channel`` of ``layer`` in the overview at (``x``, ``y``) px; the (row, col) it explains."""
    page.locator(f'canvas.map[data-layer="{layer}"][data-channel="{channel}"]').click(position={"x": x, "y": y})
    _, row, col = map(int, explained(page, prefix=f"{layer}/{channel}/").split("/")[1:])
    return row, col


def choose_at(page, selector: str, row: int, col: int, size: tuple[int, int], state: str = "chosen") -> None:
    """Hover (``state`` 'preview') or click (``state`` 'chosen') cell (row, col) of a board of ``size`` cells."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + (col + 0.5) * box["width"] / size[1], box["y"] + (row + 0.5) * box["height"] / size[0]
    if state == "chosen":
        page.mouse.click(x, y)
    else:
        page.mouse.move(x, y)


def test_softmax_is_explained_with_the_runs_own_numbers(watched, studio, runs, tmp_path):
    page = watched.page
    logits = inside_a_digit(page, studio, runs, tmp_path)["dense_1"].double()
    rows = page.eval_on_selector_all("#softmax-table tr[data-class]", """rows => rows.map(r => [
        r.querySelector('th').textContent, Number(r.dataset.logit), Number(r.dataset.exp), Number(r.dataset.share)])""")
    assert [row[0] for row in rows] == list(load_run(runs / "cnn").info.classes)  # named
    shown = torch.tensor([row[1:] for row in rows], dtype=torch.float64)
    assert torch.allclose(shown[:, 0], logits, atol=1e-6)  # logits → exponentials → shares
    assert torch.allclose(shown[:, 1], logits.exp(), rtol=1e-6)
    assert torch.allclose(shown[:, 2], logits.softmax(0), atol=1e-7)
    assert float(page.get_attribute("#softmax", "data-sum")) == pytest.approx(float(logits.exp().sum()), rel=1e-6)
    page.click('#tabs a[data-view="playground"]')
    probabilities = {cls: p for _, cls, p in bars(page)}  # what the bars say: the same shares
    assert [probabilities[c] for c in range(10)] == pytest.approx(shown[:, 2].tolist(), abs=1e-6)
    assert page.locator("#softmax-note").count() == 0
    page.click('#tabs a[data-view="inside"]')
    page.click('.logit[data-class="3"]')  # a logit, made: the weighted sum of dense's 128 numbers plus a bias
    explained(page, "dense_1/3/0/0")
    assert number(page, "value-result") == pytest.approx(float(logits[3]), abs=1e-5)
    assert number(page, "value-sum") + number(page, "value-bias") == pytest.approx(float(logits[3]), abs=1e-5)
    assert watched.problems == []


def test_the_kernel_slides_under_the_hovered_output_cell_with_its_running_sum(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path)
    conv = load_run(runs / "cnn").model.conv2d
    padded = nn.functional.pad(values["input"], (1, 1, 1, 1))  # 'same': one cell of zeros around
    page.locator('canvas.map[data-layer="conv2d"][data-channel="7"]').click(position={"x": 40, "y": 40})
    chosen = explained(page, prefix="conv2d/7/")
    for row, col in ((0, 0), (10, 20), (27, 27)):
        choose_at(page, "#slide-output", row, col, (28, 28), "preview")
        explained(page, f"conv2d/7/{row}/{col}", "preview")
        window = page.locator("#slide-input")
        assert (int(window.get_attribute("data-top")), int(window.get_attribute("data-left"))) == (row - 1, col - 1)
        products = (padded[0, row:row + 3, col:col + 3] * conv.weight[7, 0].detach()).flatten()
        running = json.loads(page.get_attribute("#running", "data-running"))
        assert running == pytest.approx(products.cumsum(0).tolist(), abs=1e-6)  # product after product
        assert running[-1] + number(page, "value-bias") == pytest.approx(float(values["conv2d"][7, row, col]), abs=1e-5)
        assert float(conv.bias[7].detach()) == pytest.approx(number(page, "value-bias"), abs=1e-7)
    page.mouse.move(0, 0)  # the pointer gone: back to the value chosen
    explained(page, chosen)
    assert watched.problems == []


def test_the_running_sum_adds_every_input_channel(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path, run="bn")
    conv = load_run(runs / "bn").model.conv2  # 32 input channels: relu1's maps
    row, col = click_value(page, "conv2", 4, 20, 30)
    source = nn.functional.pad(values["relu1"], (1, 1, 1, 1))
    expected = [float((source[c, row:row + 3, col:col + 3] * conv.weight[4, c].detach()).sum()) for c in range(32)]
    table = page.eval_on_selector_all("#channel-sums tr[data-channel]", "rows => rows.map(r => [Number(r.dataset.sum), "
                                                                        "Number(r.dataset.total)])")
    assert [s for s, _ in table] == pytest.approx(expected, abs=1e-5)
    assert [t for _, t in table] == pytest.approx(np.cumsum(expected).tolist(), abs=1e-5)
    assert table[-1][1] == pytest.approx(float(values["conv2"][4, row, col]), abs=1e-5)  # no bias to add
    page.click('#channel-sums tr[data-channel="3"] button')  # the window and products of input channel 3
    expect(page.locator("#value .product-row .channel")).to_have_text("input channel 3")
    running = json.loads(page.get_attribute("#running", "data-running"))
    assert running[-1] == pytest.approx(expected[3], abs=1e-5)
    assert watched.problems == []


def test_relu_and_pooling_are_views_of_their_own(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path)
    row, col = click_value(page, "relu", 2, 30, 50)
    assert number(page, "value-before") == pytest.approx(float(values["conv2d"][2, row, col]), abs=1e-6)
    assert number(page, "value-result") == pytest.approx(max(0.0, number(page, "value-before")), abs=1e-9)
    assert number(page, "value-map") == pytest.approx(float(values["relu"][2, row, col]), abs=1e-6)
    assert page.locator("#value canvas.curve").count() == 1 and page.locator("#before").count() == 1
    row, col = click_value(page, "max_pooling2d", 2, 20, 30)
    for r, c in ((row, col), (13, 0)):  # chosen, then hovered on the pooled map: the window follows
        if (r, c) != (row, col):
            choose_at(page, "#pool-output", r, c, (14, 14), "preview")
            explained(page, f"max_pooling2d/2/{r}/{c}", "preview")
        window = page.locator("#pool-input")
        assert (int(window.get_attribute("data-top")), int(window.get_attribute("data-left"))) == (2 * r, 2 * c)
        window = values["relu"][2, 2 * r:2 * r + 2, 2 * c:2 * c + 2]
        assert number(page, "value-result") == pytest.approx(float(window.max()), abs=1e-6)
        assert number(page, "value-map") == pytest.approx(float(values["max_pooling2d"][2, r, c]), abs=1e-6)
    assert watched.problems == []


def test_batchnorm_shows_its_formula_with_its_numbers(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path, run="bn")
    norm = load_run(runs / "bn").model.norm1
    row, col = click_value(page, "norm1", 6, 25, 25)
    expect(page.locator("#value")).to_contain_text("y = γ · (x − μ) / √(σ² + ε) + β")
    shown = {name: number(page, f"norm-{name}") for name in ("x", "mean", "var", "eps", "weight", "bias")}
    expected = {"x": values["pool1"][6, row, col], "mean": norm.running_mean[6], "var": norm.running_var[6],
                "eps": norm.eps, "weight": norm.weight[6].detach(), "bias": norm.bias[6].detach()}
    assert shown == pytest.approx({name: float(v) for name, v in expected.items()}, abs=1e-7)
    assert number(page, "value-result") == pytest.approx(float(values["norm1"][6, row, col]), abs=1e-5)
    assert watched.problems == []


def test_flatten_is_explained_element_by_element(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path)
    page.locator('canvas.vector[data-layer="flatten"]').click(position={"x": 300, "y": 5})
    index = int(explained(page, prefix="flatten/").split("/")[1])
    where = tuple(int(i) for i in np.unravel_index(index, (32, 14, 14)))
    assert tuple(json.loads(page.get_attribute("#flat-index", "data-from"))) == where
    assert number(page, "value-map") == pytest.approx(float(values["flatten"][index]), abs=1e-6)
    assert number(page, "value-before") == pytest.approx(float(values["max_pooling2d"][where]), abs=1e-6)
    choose_at(page, "#flat-map", 3, 4, (14, 14))  # a pixel of the map: its place in the vector
    index = where[0] * 196 + 3 * 14 + 4
    explained(page, f"flatten/{index}/0/0")
    assert number(page, "value-map") == pytest.approx(float(values["max_pooling2d"][where[0], 3, 4]), abs=1e-6)
    expect(page.locator("#flat-index")).to_contain_text(f"= {where[0]} · 196 + 3 · 14 + 4 = {index}")
    assert watched.problems == []


def test_the_colour_legends_follow_the_scale_chosen(watched, studio, runs, tmp_path):
    page = watched.page
    values = inside_a_digit(page, studio, runs, tmp_path)
    largest = {name: float(v.abs().max()) for name, v in values.items()}

    def legends() -> dict[str, float]:
        return dict(page.eval_on_selector_all(".layer[data-name]", """cards => cards.map(c => [c.dataset.name,
            Number(c.querySelector('.legend').dataset.limit)])"""))
    assert legends() == pytest.approx(largest, rel=1e-6)  # each layer its own
    page.select_option("#scale", "network")
    network = max(v for name, v in largest.items() if name != "input")
    assert legends() == pytest.approx({**{name: network for name in largest}, "input": largest["input"]}, rel=1e-6)
    conv = page.locator('canvas.map[data-layer="conv2d"][data-channel="0"]')
    assert float(conv.get_attribute("data-limit")) == pytest.approx(network, rel=1e-6)
    # its pixels coloured on that scale (give or take the 8-bit picture the maps travel as)
    step = (float(values["conv2d"].max()) - float(values["conv2d"].min())) / 255
    pixels = page.evaluate("""() => {
        const c = document.querySelector('canvas.map[data-layer="conv2d"][data-channel="0"]');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    shown = np.array(pixels).reshape(28, 28, 4)[..., :3]
    expected = np.array([[colour(float(v), network) for v in row] for row in values["conv2d"][0]])
    assert np.abs(shown - expected).max() <= 255 * step / 2 / network + 1
    page.select_option("#scale", "map")
    for channel in (0, 9):
        canvas = page.locator(f'canvas.map[data-layer="conv2d"][data-channel="{channel}"]')
        limit = float(canvas.get_attribute("data-limit"))
        assert limit == pytest.approx(float(values["conv2d"][channel].abs().max()), abs=step / 2 + 1e-6)
    assert watched.problems == []


def test_a_run_with_test_time_augmentation_explains_the_mean_its_answer_comes_from(watched, runs, tmp_path):
    page = watched.page
    (path,) = write_digits(tmp_path, 1)
    folder = runs_of_one(runs / "cnn", tmp_path / "runs", "tta")
    recipe = folder / "tta" / "recipe.json"
    recipe.write_text(json.dumps({**json.loads(recipe.read_text()), "tta": "flip"}))  # the image and its mirror
    logits = library(folder / "tta", path)["tta"].double()
    with running_studio(folder) as url:
        open_inside(page, url, path, run="tta")
        expect(page.locator('.layer[data-name="tta"] .note')).to_contain_text("mirror")
        shares = page.eval_on_selector_all("#softmax-table tr[data-class]",
                                           "rows => rows.map(r => Number(r.dataset.share))")
        assert shares == pytest.approx(logits.softmax(0).tolist(), abs=1e-7)  # softmax of the mean, not of one pass
        expect(page.locator("#softmax-note")).to_contain_text("The logits are tta's")
        assert page.locator('.logit[data-class="0"]').is_disabled()  # a mean: no layer to open
        page.click('#tabs a[data-view="playground"]')
        probabilities = {cls: p for _, cls, p in bars(page)}
        assert [probabilities[c] for c in range(10)] == pytest.approx(shares, abs=1e-6)  # the bars say the same
        problems = list(watched.problems)
    assert problems == []
