"""PyTorch's CPU threads: how many, and how they wait — chosen for this machine before PyTorch starts.

PyTorch runs each CPU operation on a team of OpenMP threads, and by default a thread that finishes early
spins (libgomp: 300,000 turns) waiting for its team. On a machine other programs share, a spinning thread
holds a core its teammate needs, and the whole team stalls at every operation: beside a busy Jupyter kernel
a 20 s Fashion-MNIST epoch took 731 s (issue #17). So cnnlab lets an idle thread sleep at once
(``OMP_WAIT_POLICY=PASSIVE``), and runs as many threads as the CPUs this process may use — its affinity mask
and its cgroup's CPU quota — rather than as many as the machine has. bench/contention.py measures both.

OpenMP reads these variables once, when PyTorch loads it, so ``configure()`` runs on ``import cnnlab``, in a
notebook as much as in the CLI, and imports nothing heavy. A variable the user set is left as it is; if PyTorch
was imported first, the wait policy is out of reach and ``CHOICE`` says so.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # libgomp's, and Intel OpenMP's
CHOICE: dict[str, object] = {}  # what configure() decided and why; environment.json records it


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
    """Set OpenMP's thread count and wait policy in ``environ`` unless the user has; returns and records the
    choice. Too late once torch is imported: then only ``CHOICE["note"]`` changes."""
    choice: dict[str, object] = {}
    if "OMP_NUM_THREADS" in environ:
        choice["threads"] = f"{environ['OMP_NUM_THREADS']} (OMP_NUM_THREADS, as set)"
    else:
        environ["OMP_NUM_THREADS"] = str(usable_cpus())
        choice["threads"] = f"{environ['OMP_NUM_THREADS']} (the CPUs this process may use)"
    user_wait = [name for name in WAIT_VARIABLES if name in environ]
    if user_wait:
        choice["wait"] = ", ".join(f"{name}={environ[name]}" for name in user_wait) + " (as set)"
    else:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        choice["wait"] = "OMP_WAIT_POLICY=PASSIVE (idle threads sleep: no stall beside other programs)"
    if "torch" in sys.modules:
        choice["note"] = ("torch was imported before cnnlab, so OpenMP had already read its settings; import "
                          "cnnlab first, or set OMP_WAIT_POLICY=PASSIVE before starting Python")
    CHOICE.clear()
    CHOICE.update(choice)
    return choice


def describe() -> str:
    """One line for --verbose and notebooks: what cnnlab chose for this machine's CPU threads."""
    line = f"CPU threads: {CHOICE.get('threads', 'not set by cnnlab')}; wait: {CHOICE.get('wait', 'not set by cnnlab')}"
    return line + (f" — {CHOICE['note']}" if "note" in CHOICE else "")
