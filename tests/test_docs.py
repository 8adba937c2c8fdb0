"""The README and the guide show commands and links: every command they show parses, every link resolves."""
from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from cnnlab.cli import build_parser
from cnnlab.recipes import Recipe

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def shown_commands(path: Path) -> list[str]:
    """The cnnlab command lines in a page's code blocks: `$ cnnlab …` in output, `cnnlab …` in sh blocks, and
    what follows `-m cnnlab.cli` under torchrun. Comments and `...` elisions are dropped."""
    commands = []
    for block in FENCE.findall(path.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            torchrun = re.search(r"-m cnnlab(?:\.cli)? (.*)", line)
            if torchrun:
                line = "cnnlab " + torchrun.group(1)
            if not line.startswith("cnnlab "):
                continue
            line = re.sub(r"\s+#.*", "", line).rstrip("\\ ")
            commands.append(" ".join(word for word in line.split() if word not in ("...", "…")))
    return commands


COMMANDS = [(path.relative_to(ROOT).as_posix(), line) for path in DOCS for line in shown_commands(path)]


def test_the_pages_show_commands():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "docs/guide.md"} <= pages and len(COMMANDS) > 30


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{page}: {line}" for page, line in COMMANDS])
def test_every_shown_command_parses(page, line, capsys):
    """A flag renamed or removed in cli.py fails here, naming the page and the line that still shows it."""
    parser = build_parser()
    argv = shlex.split(re.sub(r"\[[^\]]*\]", "", line))[1:]  # optional parts left out: `explain RUN_DIR`
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        refusal = capsys.readouterr().err.strip().splitlines()[-1]
        pytest.fail(f"{page} shows `{line}`, which cnnlab's parser refuses: {refusal}")
    command = next(action for action in parser._actions if action.dest == "command").choices[args.command]
    flags = {flag for action in command._actions for flag in action.option_strings}
    shown = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", line)  # the optional parts' flags too
    assert set(shown) <= flags, f"{page} shows `{line}`: cnnlab {args.command} has no {set(shown) - flags}"
    names = {field.name for field in fields(Recipe)}
    for assignment in getattr(args, "set", None) or []:
        assert assignment.split("=")[0] in names, f"{page} shows `{line}`: no recipe field {assignment!r}"


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation but `-` and `_` dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings; a repeated heading gets -1, -2… as on GitHub."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    ids: set[str] = set()
    repeats: dict[str, int] = {}
    for heading in re.findall(r"^#+\s+(.*)$", text, re.M):
        slug = github_anchor(heading)
        ids.add(f"{slug}-{repeats[slug]}" if slug in repeats else slug)
        repeats[slug] = repeats.get(slug, 0) + 1
    return ids


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for path in DOCS:
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            file = (path.parent / target).resolve() if target else path
            if not file.exists():
                broken.append(f"{path.name}: {link} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{path.name}: {link} (no such heading)")
    assert not broken, broken
