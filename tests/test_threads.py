"""cnnlab.threads: OpenMP's thread count set before PyTorch starts, and training giving way to other programs.
The settings are read back from OpenMP itself (OMP_DISPLAY_ENV) in fresh interpreters."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from cnnlab import threads

OMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", threads.CHOSEN)


def fresh(code: list[str], **env: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter whose OpenMP prints the settings it starts with (on stderr)."""
    clean = {name: value for name, value in os.environ.items() if name not in OMP_VARIABLES}
    return subprocess.run([sys.executable, *code], capture_output=True, text=True, timeout=120,
                          env={**clean, "OMP_DISPLAY_ENV": "TRUE", **env})


def omp_setting(stderr: str, name: str) -> str:
    line = next(line for line in stderr.splitlines() if line.strip().startswith(f"{name} ="))
    return line.split("=", 1)[1].strip().strip("'")


@pytest.mark.slow
def test_import_cnnlab_sets_the_thread_count_before_torch_starts_openmp(monkeypatch):
    done = fresh(["-c", "import cnnlab, os, torch; print(torch.get_num_threads(), 'OMP_WAIT_POLICY' in os.environ)"])
    assert done.returncode == 0, done.stderr
    assert omp_setting(done.stderr, "OMP_NUM_THREADS") == str(threads.usable_cpus())
    assert done.stdout.split() == [str(threads.usable_cpus()), "False"]  # the wait: OpenMP's own default
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.0)  # a container with one CPU's quota
    environ: dict[str, str] = {}
    threads.configure(environ)
    assert environ["OMP_NUM_THREADS"] == "1"
    threads.configure(dict(os.environ))


@pytest.mark.slow
def test_the_cli_sets_them_too_and_says_so_with_verbose(tmp_path):
    # `train` imports torch, then stops at the unknown recipe: OpenMP has printed what it started with
    done = fresh(["-m", "cnnlab.cli", "train", "no-such-recipe", "--verbose", "--runs-dir", str(tmp_path)])
    assert done.returncode == 2
    assert omp_setting(done.stderr, "OMP_NUM_THREADS") == str(threads.usable_cpus())
    assert done.stdout.startswith(f"CPU threads: {threads.usable_cpus()} (the CPUs this process may use")


@pytest.mark.slow
def test_the_users_own_variables_are_left_as_they_are():
    done = fresh(["-c", "import cnnlab, torch; print(torch.get_num_threads())"], OMP_NUM_THREADS="1",
                 OMP_WAIT_POLICY="ACTIVE")
    assert done.returncode == 0, done.stderr
    assert omp_setting(done.stderr, "OMP_WAIT_POLICY") == "ACTIVE"
    assert done.stdout.split() == ["1"]


def test_a_child_of_a_cnnlab_process_chooses_afresh_and_the_users_choice_is_kept():
    parent: dict[str, str] = {}
    threads.configure(parent)  # what `import cnnlab` leaves in a parent's environment
    assert parent["OMP_NUM_THREADS"] == str(threads.usable_cpus()) and "OMP_WAIT_POLICY" not in parent
    child = dict(parent)
    assert threads.configure(child)["adaptive"] is True  # the parent's values are cnnlab's, not the user's
    users = {"OMP_NUM_THREADS": "3", "GOMP_SPINCOUNT": "1000"}
    choice = threads.configure(users)
    assert users["OMP_NUM_THREADS"] == "3" and "OMP_WAIT_POLICY" not in users
    assert choice["adaptive"] is False and "GOMP_SPINCOUNT=1000 (as set)" in choice["wait"]
    threads.configure(dict(os.environ))  # CHOICE back to this process's own


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_a_cgroup_quota_caps_the_thread_count(tmp_path, monkeypatch, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_quota(tmp_path) == quota
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.0)
    assert threads.usable_cpus() == 1


@dataclass
class FakeMachine:
    """A clock and /proc/stat's counts that a test moves by hand: (all processes' CPU-seconds on our CPUs, ours)."""
    full: int
    clock: float = 0.0
    used: list[float] = field(default_factory=lambda: [0.0, 0.0])
    looks: list[float] = field(default_factory=list)  # when FairShare read the counts

    def others_busy(self, cpus, proc_stat=Path("/proc/stat")) -> tuple[float, float]:
        self.looks.append(self.clock)
        return self.used[0], self.used[1]

    def run(self, seconds: float, busy: float) -> None:
        """``seconds`` pass; the others use ``busy`` CPUs and this process the rest."""
        self.clock += seconds
        self.used[0] += seconds * self.full
        self.used[1] += seconds * (self.full - busy)


@pytest.fixture
def machine(monkeypatch) -> FakeMachine:
    full = torch.get_num_threads()
    if full < 2:
        pytest.skip("one CPU: nothing to give way with")
    monkeypatch.setitem(threads.CHOICE, "adaptive", True)
    monkeypatch.setenv("OMP_NUM_THREADS", str(full))
    fake = FakeMachine(full)
    monkeypatch.setattr(threads.time, "monotonic", lambda: fake.clock)
    monkeypatch.setattr(threads, "others_busy", fake.others_busy)
    return fake


def test_training_gives_way_while_other_programs_use_the_cpus_and_takes_them_back(machine):
    full, changes = machine.full, []
    with threads.FairShare("cpu", on_change=changes.append) as share:
        for busy in [0.0, 0.2, full, full, 0.6 * full, 0.1, 0.1]:
            machine.run(1.0, busy)
            share.tick()
        assert changes == list(range(full - 1, 0, -1))[:len(changes)] and changes  # gave way, one at a time
        assert torch.get_num_threads() == full  # and took them back once the others stopped
        assert share.fewest < full
    assert torch.get_num_threads() == full


def test_the_first_look_comes_within_a_quarter_second_then_once_a_second(machine):
    with threads.FairShare("cpu") as share:
        for step in range(12):  # steps 1/8 s apart, the others using every CPU
            machine.run(0.125, machine.full)
            share.tick()
            if step == 1:  # 0.25 s in
                assert torch.get_num_threads() == machine.full - 1  # gave way at the first look, not a second in
    assert machine.looks == [0.0, 0.25, 1.25]


def test_no_giving_way_on_a_gpu_or_when_the_user_set_the_count(monkeypatch):
    monkeypatch.setattr(threads, "others_busy", lambda cpus, proc_stat=None: pytest.fail("looked at the CPUs"))
    monkeypatch.setattr(threads.time, "monotonic", iter(range(0, 100, 5)).__next__)
    for device_type, adaptive in (("cuda", True), ("cpu", False)):
        monkeypatch.setitem(threads.CHOICE, "adaptive", adaptive)
        with threads.FairShare(device_type) as share:
            share.tick()
            share.tick()
