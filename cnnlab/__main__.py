"""`python -m cnnlab …`: the `cnnlab` command, for an environment whose scripts folder is not on PATH."""
from .cli import run

run()
