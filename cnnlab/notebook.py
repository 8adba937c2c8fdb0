"""cnnlab inside Jupyter: a CnnlabError shows as its one line (its advice in Python terms), and rich's output
comes as plain text, so a notebook's plain-text copy holds no escape codes and no empty progress widget.

``install`` runs when cnnlab is imported inside IPython (``cnnlab/__init__.py``); elsewhere it costs one lookup.
"""
from __future__ import annotations

import sys
from typing import Any

from .errors import CnnlabError


def show_one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython's custom exception handler: the error's own line instead of a traceback. The cell still fails,
    so "run all" stops there as it would on any error."""
    line = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, line)  # ipykernel sends it as the cell's error output
    return line


def install() -> None:
    """Set up the running IPython for cnnlab, when there is one and it has no custom handler of its own."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    if not shell.custom_exceptions:
        shell.set_custom_exc((CnnlabError,), show_one_line)
    if type(shell).__name__ == "ZMQInteractiveShell":  # a Jupyter kernel, not the terminal's IPython
        import rich

        # fit's progress bar and epoch lines use rich's console: in Jupyter it draws into an output widget that
        # stays behind empty, and its text/plain copy carries ANSI codes. As plain text they read as Keras's lines.
        rich.reconfigure(force_jupyter=False, force_terminal=False, highlight=False)
