"""The Teach view's server (FastAPI's TestClient, no browser): a project is an ordinary folder of images under the
runs folder, with names the server makes; every limit and refusal is one line; a training is `cnnlab train` in a
child process, one at a time per project, stopped and resumed as the command line does."""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import cli, teach
from test_studio import LOCAL


def picture(size: tuple[int, int] = (280, 280), mode: str = "RGBA", seed: int = 0) -> bytes:
    """A drawing as the page's canvas sends it (RGBA, dark strokes on white), or a colour frame (mode RGB)."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 4 if mode == "RGBA" else 3), 255, dtype=np.uint8)
    top, left = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[top:top + size[1] // 3, left:left + 20, :3] = 0 if mode == "RGBA" else rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def runs(trained_runs, tmp_path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(trained_runs["cnn"], folder / "cnn")
    return folder


@pytest.fixture
def client(runs):
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    with TestClient(create_app(runs, "cpu"), base_url=LOCAL) as client:
        yield client


def make_project(client, name: str = "shapes", classes: dict[str, int] | None = None) -> str:
    """A project with ``classes`` (name: examples), through the API; the project's name."""
    answer = client.post("/api/teach", params={"name": name})
    assert answer.status_code == 200, answer.json()
    project = answer.json()["name"]
    for index, (label, count) in enumerate((classes or {}).items()):
        assert client.post(f"/api/teach/{project}/classes", params={"name": label}).status_code == 200
        for i in range(count):
            added = client.post(f"/api/teach/{project}/classes/{label}/examples", content=picture(seed=100 * index + i))
            assert added.status_code == 200, added.json()
    return project


def refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.json()
    (message,) = response.json().values()
    assert "\n" not in message and all(word in message for word in words), message


def test_a_project_is_an_ordinary_image_folder_the_run_list_does_not_take_for_a_run(client, runs, capsys):
    project = make_project(client, "My shapes!", {"circle": 2, "line": 1})
    assert project == "My-shapes"
    folder = runs / "teach" / "My-shapes"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == \
        ["circle", "circle/0001.png", "circle/0002.png", "line", "line/0001.png"]
    drawn = Image.open(folder / "circle" / "0001.png")
    assert drawn.mode == "L" and drawn.size == (256, 256)  # a drawing stays grey, shrunk to EXAMPLE_SIDE
    answer = client.get(f"/api/teach/{project}").json()
    assert [(c["name"], c["examples"]) for c in answer["classes"]] == \
        [("circle", ["0001.png", "0002.png"]), ("line", ["0001.png"])]
    assert answer["command"] == \
        f"cnnlab train {teach.TEACH_RECIPE} --data {folder.resolve()} --runs-dir {runs.resolve()}"
    thumbnail = client.get(f"/api/teach/{project}/classes/circle/examples/0002.png")
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content == (folder / "circle" / "0002.png").read_bytes()
    assert client.delete(f"/api/teach/{project}/classes/circle/examples/0001.png").status_code == 200
    assert client.post(f"/api/teach/{project}/classes/circle/examples", content=picture()).json() == \
        {"name": "0003.png"}  # a new number: a deleted example's is never given again
    assert client.delete(f"/api/teach/{project}/classes/line").status_code == 200
    assert sorted(p.name for p in folder.iterdir()) == ["circle"]
    # The runs folder still lists its one run, and nothing damaged: teach/ is no run.
    listed = client.get("/api/runs").json()
    assert [run["name"] for run in listed["runs"]] == ["cnn"] and listed["damaged"] == []
    assert cli.main(["runs", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "cnn" in out and "teach" not in out and err == ""
    assert client.get("/api/teach").json()["projects"] == ["My-shapes"]


def test_looking_writes_nothing(client, runs):
    assert client.get("/api/teach").json()["projects"] == []
    refused(client.get("/api/teach/p"), 404, "no such project")
    assert not (runs / "teach").exists()


def test_a_camera_frame_is_kept_in_colour_within_the_size(client, runs):
    project = make_project(client, "camera", {"me": 0})
    frame = picture((640, 480), "RGB")
    assert client.post(f"/api/teach/{project}/classes/me/examples", content=frame).status_code == 200
    kept = Image.open(runs / "teach" / project / "me" / "0001.png")
    assert kept.mode == "RGB" and kept.size == (256, 192)


@pytest.mark.parametrize("label, name", [("../../etc", "etc"), ("a/b\\c", "abc"), (" two  words ", "two-words"),
                                         ("Été", "Été"), (".hidden", "hidden"), ("x" * 100, "x" * 40)])
def test_names_on_disk_are_made_by_the_server(client, runs, label, name):
    project = make_project(client, "p")
    answer = client.post(f"/api/teach/{project}/classes", params={"name": label})
    assert answer.json() == {"name": name}
    assert (runs / "teach" / "p" / name).is_dir()


@pytest.mark.parametrize("label, words", [("", "needs a letter or a digit"), ("///", "needs a letter or a digit"),
                                          ("Train", "train, val, test name a folder's parts"),
                                          ("test", "choose another class name")])
def test_a_name_that_makes_no_safe_folder_is_refused(client, label, words):
    project = make_project(client, "p")
    refused(client.post(f"/api/teach/{project}/classes", params={"name": label}), 400, words)


def test_collisions_and_counts_are_refused_in_one_line(client, runs):
    project = make_project(client, "p", {"Cat": 0})
    refused(client.post(f"/api/teach/{project}/classes", params={"name": "cat"}), 400, "has a class 'Cat' already")
    refused(client.post("/api/teach", params={"name": "p"}), 400, "a project named 'p' exists already")
    for i in range(teach.MAX_CLASSES - 1):
        assert client.post(f"/api/teach/{project}/classes", params={"name": f"c{i}"}).status_code == 200
    refused(client.post(f"/api/teach/{project}/classes", params={"name": "one-more"}), 400,
            "has 10 classes, the most a project takes")
    assert len(list((runs / "teach" / "p").iterdir())) == teach.MAX_CLASSES


def test_an_example_over_the_limits_is_refused_and_nothing_is_written(client, runs, monkeypatch):
    project = make_project(client, "p", {"a": 0})
    url = f"/api/teach/{project}/classes/a/examples"
    refused(client.post(url, content=b"\0" * (teach.MAX_EXAMPLE_BYTES + 1)), 413, "over the limit of 2,097,152")
    refused(client.post(url, content=b"not an image"), 400, "the image for a")
    bomb = io.BytesIO()
    Image.new("1", (5001, 5001)).save(bomb, "PNG")  # 3 kB that decode to 25 million pixels
    refused(client.post(url, content=bomb.getvalue()), 400, "beyond the limit of 25,000,000 for an upload")
    monkeypatch.setattr(teach, "MAX_EXAMPLES", 2)
    assert client.post(url, content=picture()).status_code == 200
    assert client.post(url, content=picture()).status_code == 200
    refused(client.post(url, content=picture()), 400, "holds 2 examples, the most a project takes")
    assert sorted(p.name for p in (runs / "teach" / "p" / "a").iterdir()) == ["0001.png", "0002.png"]


@pytest.mark.parametrize("path", ["/api/teach/..%2f..%2fcnn", "/api/teach/nope/classes/a/examples/0001.png",
                                  "/api/teach/p/classes/..%2f..%2fcnn/examples/weights.safetensors",
                                  "/api/teach/p/classes/a/examples/..%2f..%2f..%2fcnn%2frecipe.json",
                                  "/api/teach/p/classes/a/examples/0001.PNG"])
def test_nothing_outside_a_projects_examples_is_reached(client, path):
    make_project(client, "p", {"a": 1})
    refused(client.get(path), 404, "no such")


def test_a_link_in_the_teach_folder_is_not_followed(client, runs, tmp_path):
    make_project(client, "p", {"a": 1})
    outside = tmp_path / "outside"
    (outside / "a").mkdir(parents=True)
    (runs / "teach" / "linked").symlink_to(outside)
    (runs / "teach" / "p" / "b").symlink_to(outside / "a")
    refused(client.post("/api/teach/linked/classes/a/examples", content=picture()), 404, "no such project")
    refused(client.post("/api/teach/p/classes/b/examples", content=picture()), 404, "no such class")
    assert list((outside / "a").iterdir()) == []
    assert client.get("/api/teach").json()["projects"] == ["p"]


def test_a_teach_folder_that_is_a_link_is_refused(client, runs, tmp_path):
    (tmp_path / "elsewhere" / "p" / "a").mkdir(parents=True)
    (runs / "teach").symlink_to(tmp_path / "elsewhere")
    for response in (client.get("/api/teach"), client.post("/api/teach?name=q"),
                     client.post("/api/teach/p/classes/a/examples", content=picture())):
        refused(response, 400, "not a folder of teach projects (a link or a file); move it away")
    assert sorted(p.name for p in (tmp_path / "elsewhere").rglob("*")) == ["a", "p"]


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Host": "evil.example:8000"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_another_site_may_not_make_or_change_a_project(client, runs, headers):
    make_project(client, "p", {"a": 0})
    for method, path in (("POST", "/api/teach?name=q"), ("POST", "/api/teach/p/classes?name=b"),
                         ("POST", "/api/teach/p/classes/a/examples"), ("DELETE", "/api/teach/p/classes/a"),
                         ("POST", "/api/teach/p/train")):
        refused(client.request(method, path, content=picture(), headers=headers), 403)
    assert sorted(p.name for p in (runs / "teach").rglob("*")) == ["a", "p"]


def test_bound_elsewhere_the_teach_routes_want_the_token(runs):
    from fastapi.testclient import TestClient

    from cnnlab.studio import create_app

    with TestClient(create_app(runs, "cpu", host="0.0.0.0"), base_url="http://192.168.1.20:8000") as client:
        refused(client.post("/api/teach?name=p"), 403, "token")
    assert not (runs / "teach").exists()


def test_training_needs_two_classes_with_examples_and_a_finished_run_to_start_from(client, runs):
    project = make_project(client, "p", {"a": 3})
    refused(client.post(f"/api/teach/{project}/train"), 400, "has 1 class; make at least 2")
    client.post(f"/api/teach/{project}/classes", params={"name": "b"})
    refused(client.post(f"/api/teach/{project}/train"), 400, "add examples to b")
    client.post(f"/api/teach/{project}/classes/b/examples", content=picture())
    client.post(f"/api/teach/{project}/classes/b/examples", content=picture(seed=1))
    refused(client.post(f"/api/teach/{project}/train", params={"from_run": "../cnn"}), 404, "no such run")
    refused(client.post(f"/api/teach/{project}/train", params={"from_run": "cnn", "freeze_epochs": -1}), 400,
            "freeze_epochs=-1")
    refused(client.post(f"/api/teach/{project}/stop"), 400, "p is not training")
    refused(client.post(f"/api/teach/{project}/resume"), 400, "no run stopped part-way")


def wait_for(check, client, project: str = "p", seconds: float = 120.0):
    """``check()``'s answer once it is true; the project's state where its training failed or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        state = client.get(f"/api/teach/{project}").json()
        training = state["training"] or {}
        assert training.get("stopped") or not training.get("error"), state
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s in vain: {client.get(f'/api/teach/{project}').json()}")


@pytest.mark.slow  # child processes that train
def test_a_training_from_the_page_is_refused_twice_stops_resumably_and_resumes(runs, monkeypatch):
    """The command line's own `cnnlab train`: one at a time per project, no example changed meanwhile, stopped
    with SIGINT into a run that resumes to the end; an ordinary run folder at last."""
    from fastapi.testclient import TestClient

    from cnnlab.runs import Run
    from cnnlab.studio import create_app

    command = teach.train_command
    monkeypatch.setattr(teach, "train_command", lambda *args: command(*args) + ["--epochs", "400"])  # time to stop
    with TestClient(create_app(runs, "cpu"), base_url=LOCAL) as client:
        project = make_project(client, "p", {"a": 6, "b": 6})
        started = client.post(f"/api/teach/{project}/train").json()["training"]
        assert started["running"] and started["pid"]
        refused(client.post(f"/api/teach/{project}/train"), 400, "p is training already", str(started["pid"]))
        refused(client.post(f"/api/teach/{project}/classes/a/examples", content=picture()), 400,
                "p is training: stop it")
        refused(client.delete(f"/api/teach/{project}/classes/a/examples/0001.png"), 400, "p is training")
        run = wait_for(lambda: client.get(f"/api/teach/{project}").json()["training"]["run"], client)
        wait_for(lambda: len(client.get(f"/api/runs/{run}").json()["history"]) >= 1, client)  # an epoch done
        assert client.post(f"/api/teach/{project}/stop").status_code == 200
        stopped = wait_for(lambda: (answer := client.get(f"/api/teach/{project}").json())["training"]["exit_code"]
                           is not None and answer, client)
        assert stopped["training"]["stopped"] and stopped["resumable"] == run and stopped["runs"] == []
        assert stopped["training"]["error"].startswith(f"cnnlab: interrupted: {runs.resolve() / run} holds epoch")
        epochs = len(Run(runs / run).history)
        resumed = client.post(f"/api/teach/{project}/resume").json()["training"]
        assert resumed["running"] and resumed["run"] == run
        wait_for(lambda: len(client.get(f"/api/runs/{run}").json()["history"]) > epochs, client)
        # the studio closes: its training stops, resumable again
    assert not Run(runs / run).finished and (runs / run / "checkpoint.safetensors").exists()
    environment = json.loads((runs / run / "environment.json").read_text())
    assert environment["data_dir"] == str((runs / "teach" / "p").resolve())


@pytest.mark.slow  # a child process that trains
def test_a_training_from_a_run_of_the_learners_takes_its_layers_and_the_freeze_chosen(client, runs):
    project = make_project(client, "p", {"a": 4, "b": 4})
    started = client.post(f"/api/teach/{project}/train", params={"from_run": "cnn", "freeze_epochs": 2}).json()
    assert started["training"]["running"]
    done = wait_for(lambda: (answer := client.get(f"/api/teach/{project}").json())["training"]["exit_code"] is not None
                    and answer, client)
    (run,) = done["runs"]
    assert done["training"] == {**done["training"], "running": False, "exit_code": 0, "run": run, "error": None}
    described = client.get(f"/api/runs/{run}").json()
    assert described["recipe"] == "teach" and described["classes"] == ["a", "b"] and described["finished"]
    model = json.loads((runs / run / "model.json").read_text())
    assert model["started_from"]["run"] == "cnn"
    assert json.loads((runs / run / "recipe.json").read_text())["freeze_epochs"] == 2


def test_an_example_never_replaces_a_file_that_took_its_name(client, runs, monkeypatch):
    """Between the count and the write something else (the learner's file manager) may take the name: the
    example goes to the next number, the file stays as it is."""
    project = make_project(client, "p", {"a": 1})
    first = (runs / "teach" / "p" / "a" / "0001.png").read_bytes()
    monkeypatch.setattr(teach.Project, "examples", lambda self, name: [])  # as if 0001.png were not there yet
    added = client.post(f"/api/teach/{project}/classes/a/examples", content=picture(seed=5))
    assert added.json() == {"name": "0002.png"}
    assert (runs / "teach" / "p" / "a" / "0001.png").read_bytes() == first
    assert [p.name for p in (runs / "teach" / "p" / "a").iterdir() if p.name.startswith(".")] == []  # no temp file
