"""The one exception type users see: its message is a single line that says what went wrong and what to do."""
import contextlib
import contextvars
import sys
from collections.abc import Iterator

COMMAND_LINE = False  # set by cnnlab.cli.main: advice then names flags; in Python it names recipe fields and arguments
# What a file holds is named in its own terms (recipe fields) whichever door read it: per thread and task, since the
# studio reads run folders in several at once.
_FILE_TERMS: contextvars.ContextVar[bool] = contextvars.ContextVar("file_terms", default=False)


class CnnlabError(Exception):
    """A failure the user can act on (bad data, bad value, missing file). The CLI prints it as one line."""


class UsageError(CnnlabError):
    """A bad command-line value or recipe field: the CLI exits with code 2, like argparse."""


class NotFound(CnnlabError):
    """What was named (a project, a class, an example) is not there: the studio answers 404."""


class DataMissing(CnnlabError):
    """A run's data is not where it was trained from: ``missing`` says what and where, ``advice`` what to do, in the
    user's terms (``hint``); the message is "missing; advice". The parts are kept apart so that a caller with other
    advice to give (the studio, which takes no --data-dir) reads them rather than cutting the sentence."""

    def __init__(self, missing: str, advice: str):
        super().__init__(f"{missing}; {advice}")
        self.missing, self.advice = missing, advice

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # by its parts: the default would call DataMissing(line)
        return type(self), (self.missing, self.advice)


def warn(message: str) -> None:
    """One line on stderr for what is worth knowing but does not stop the command."""
    print(f"cnnlab: warning: {message}", file=sys.stderr)


def hint(cli: str, python: str) -> str:
    """Advice in the user's own terms: ``cli`` under the ``cnnlab`` command, ``python`` in a script or notebook."""
    return cli if COMMAND_LINE and not _FILE_TERMS.get() else python


@contextlib.contextmanager
def file_terms() -> Iterator[None]:
    """Within it, ``hint`` gives the Python terms: a bad field read from recipe.json is ``epochs='ten'`` there,
    not a flag the user never typed."""
    token = _FILE_TERMS.set(True)
    try:
        yield
    finally:
        _FILE_TERMS.reset(token)
