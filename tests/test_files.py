"""cnnlab.files: the mode an atomic write gives, the bounds of a read, and which leftovers count as stale."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.files import atomic_write, read_bytes, remove_stale_temp


def test_an_atomic_write_gives_the_mode_open_gives_not_mkstemps_private_0600(tmp_path):
    atomic_write(tmp_path / "metrics.json", "{}")
    (tmp_path / "opened.json").write_text("{}")  # the same umask: what a run folder's other files get
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "opened.json").stat().st_mode)


def test_a_file_of_the_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"x" * 100)
    assert read_bytes(path, limit=100) == b"x" * 100
    with pytest.raises(CnnlabError, match=r"history.csv: 100 bytes, more than the 99 such a file may hold"):
        read_bytes(path, limit=99)


def test_a_file_that_says_it_is_empty_is_cut_off_one_byte_past_the_limit():
    """A file whose size the system does not know (procfs: 0 bytes) is bounded while it is read."""
    path = Path(f"/proc/{os.getpid()}/cmdline")
    whole = path.read_bytes()
    assert path.stat().st_size == 0 and len(whole) > 10
    assert read_bytes(path, limit=len(whole)) == whole
    with pytest.raises(CnnlabError, match=f"grew past {len(whole) - 1:,} bytes while it was read"):
        read_bytes(path, limit=len(whole) - 1)


def test_a_leftover_naming_an_impossible_process_is_stale(tmp_path):
    absurd = tmp_path / ".history.csv.99999999999999999999.abcdefgh.tmp"  # os.kill: OverflowError
    absurd.write_bytes(b"half")
    assert remove_stale_temp(tmp_path) == [absurd] and not absurd.exists()
