"""PyTorch's CPU threads: how many, chosen for this machine and its neighbours.

PyTorch runs each CPU operation on a team of OpenMP threads that wait for each other at its end. On a machine
other programs share, one thread of the team loses its core to a neighbour and the whole team waits for it at
every operation: beside a busy Jupyter kernel a 20 s Fashion-MNIST epoch took 731 s (issue #17). So cnnlab:
- on ``import cnnlab``, before PyTorch loads OpenMP (which reads its variables once), asks for as many threads
  as the CPUs this process may use — its affinity mask and its cgroup's CPU quota, not the machine's count;
- while training (``FairShare``), looks once a second at how much of those CPUs other programs use, and trains
  on fewer threads while they do, on all of them again once they stop.
Idle threads keep OpenMP's default short spin: letting them sleep at once (``OMP_WAIT_POLICY=PASSIVE``) cost
10–120 % on a quiet machine and did not stop the stall, which only fewer threads did (bench/contention.py).
A variable the user set (OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT, KMP_BLOCKTIME) is left as it is, and
a thread count the user set keeps training on that count. Threads change the order of a few sums, so a run that
had to give way may differ from a quiet one in the last digits; it says so in one line.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from types import TracebackType

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # libgomp's and Intel OpenMP's; reported
CHOICE: dict[str, object] = {}  # what configure() decided and why; environment.json records it
CHOSEN = "CNNLAB_OMP_CHOSEN"  # names the variables cnnlab set, so that a child process chooses them afresh


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup's CPU quota in CPUs (``docker --cpus 1.5`` gives 1.5), or None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "150000 100000"
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()  # -1 without a quota
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        if quota == "max" or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except ValueError:
        return None


def configure(environ: os._Environ[str] | dict[str, str] = os.environ) -> dict[str, object]:
    """Set OpenMP's thread count in ``environ`` unless the user has; returns and records the choice (with any wait
    policy the user set). Too late once torch is imported: then only ``CHOICE["note"]`` changes."""
    ours = set(environ.get(CHOSEN, "").split(","))  # what a parent cnnlab set is not the user's choice
    user = {name: environ[name] for name in ("OMP_NUM_THREADS", *WAIT_VARIABLES)
            if name in environ and name not in ours}
    chosen = []
    choice: dict[str, object] = {"adaptive": "OMP_NUM_THREADS" not in user}
    if "OMP_NUM_THREADS" in user:
        choice["threads"] = f"{user['OMP_NUM_THREADS']} (OMP_NUM_THREADS, as set)"
    else:
        environ["OMP_NUM_THREADS"] = str(usable_cpus())
        chosen.append("OMP_NUM_THREADS")
        choice["threads"] = (f"{environ['OMP_NUM_THREADS']} (the CPUs this process may use; fewer while other "
                             "programs use them)")
    waits = [f"{name}={value}" for name, value in user.items() if name in WAIT_VARIABLES]
    choice["wait"] = ", ".join(waits) + " (as set)" if waits else "OpenMP's default (a short spin, then sleep)"
    environ[CHOSEN] = ",".join(chosen)
    if "torch" in sys.modules:
        choice["note"] = ("torch was imported before cnnlab, so OpenMP had already read its thread count; "
                          "training still gives way to other programs")
    CHOICE.clear()
    CHOICE.update(choice)
    return choice


def describe() -> str:
    """One line for --verbose and notebooks: what cnnlab chose for this machine's CPU threads."""
    line = f"CPU threads: {CHOICE.get('threads', 'not set by cnnlab')}; wait: {CHOICE.get('wait', 'not set by cnnlab')}"
    return line + (f" — {CHOICE['note']}" if "note" in CHOICE else "")


# ---------------------------------------------------------------------------------------------------------
# While training: give way to other programs
# ---------------------------------------------------------------------------------------------------------
def others_busy(cpus: set[int], proc_stat: Path = Path("/proc/stat")) -> tuple[float, float] | None:
    """(CPU-seconds used on ``cpus`` by everything, this process's own CPU-seconds), or None off Linux."""
    try:
        lines = proc_stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
            ticks += user + nice + system + irq + softirq + steal  # steal: the hypervisor gave the core away
    own = os.times()
    return ticks / os.sysconf("SC_CLK_TCK"), own.user + own.system


class FairShare:
    """Fewer PyTorch threads while other programs use this process's CPUs, all of them again when they stop.

    ``tick()`` once a training step; once a second it compares the CPU time all processes used on our CPUs with
    our own, and moves the thread count by one when the others' share says so (with a margin, so it does not
    flap). Off — ``tick()`` does nothing — on a GPU, when the user set the thread count, or off Linux.
    """

    INTERVAL = 1.0  # seconds between looks; a look costs ~50 µs, a training step milliseconds
    FIRST_LOOK = 0.25  # seconds to the first look: beside busy neighbours the whole team stalls from the first step,
    #                    and a lab's epoch on a small split lasts only seconds (25 ticks a CPU at 100 Hz suffice)

    def __init__(self, device_type: str, on_change=None) -> None:
        import torch

        self._torch = torch
        self.full = torch.get_num_threads()
        self.fewest = self.full
        self._on_change = on_change  # called with the new count: one line for the user
        try:
            self._cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self._cpus = set()
        adaptive = bool(CHOICE.get("adaptive")) and str(self.full) == os.environ.get("OMP_NUM_THREADS")
        self._last = others_busy(self._cpus) if device_type == "cpu" and adaptive and self.full > 1 else None
        self._at = time.monotonic()
        self._interval = self.FIRST_LOOK

    def tick(self) -> None:
        if self._last is None or (now := time.monotonic()) - self._at < self._interval:
            return
        sample = others_busy(self._cpus)
        if sample is None:
            return
        others = max(0.0, (sample[0] - self._last[0]) - (sample[1] - self._last[1])) / (now - self._at)
        self._last, self._at, self._interval = sample, now, self.INTERVAL
        threads = self._torch.get_num_threads()
        free = self.full - others  # CPUs the others leave us
        wanted = threads - 1 if free < threads - 0.5 else threads + 1 if free > threads + 0.75 else threads
        wanted = max(1, min(self.full, wanted))
        if wanted != threads:
            self._torch.set_num_threads(wanted)
            if wanted < self.fewest and self._on_change is not None:
                self._on_change(wanted)
            self.fewest = min(self.fewest, wanted)

    def __enter__(self) -> FairShare:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._torch.get_num_threads() != self.full:
            self._torch.set_num_threads(self.full)  # what comes after training starts from the whole count
