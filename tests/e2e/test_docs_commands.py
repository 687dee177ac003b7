"""Every ``gpp`` command the documentation shows exists, with the options it shows.

The shell blocks (```bash / ```console / ```sh) of README.md, docs/*.md, notebooks/README.md
and docker/README.md are read line by line (backslash continuations joined, comments
dropped); every ``gpp ...`` command in them (also after ``&&`` or in a pipe, and
``docker run ... gpp-cubes:<tag> <args>``, whose entrypoint is ``gpp``) is checked against
the real command tree (``typer.main.get_command``), without a subprocess:

* the sub-command path exists (``gpp sites list``, ``gpp tune``...);
* every ``--option`` is an option of that sub-command, and an option that takes a value has
  one;
* a command written out in full (no ``...`` placeholder and no ``--config`` file that could
  supply the rest) gives every required option and argument and no surplus argument.

The same option check runs on the ``gpp`` commands in inline code spans of the prose
(```gpp build --qa flag```) and on the examples in each command's own help text.

The commands that run offline in seconds are then **run** (typer's ``CliRunner`` on the
real app): ``--help`` of anything, ``gpp --version``, ``gpp sites list`` (with any filter)
and ``gpp sites show SITE``; they must exit 0, and ``--json`` output must parse. The others
only parse: ``gpp demo`` and ``gpp build --demo`` build the demo world's cubes and train
models (minutes; the demo end-to-end tests run them), ``gpp sites select`` / ``gpp build
--sites ...`` / ``gpp tune`` ... need the real archives (CORINE, FLUXNET, Planetary Computer)
or trained runs, and ``docker``/``pip``/``pytest`` lines are not ``gpp`` commands.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from gpp_cubes.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "notebooks" / "README.md", ROOT / "docker" / "README.md")
SHELL_LANGS = {"bash", "console", "sh", "shell"}
OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
#: The doc's placeholder for "more options": the command is not complete, names only.
ELLIPSIS = "..."
#: (sub-command path, ) of the commands cheap and offline enough to run here
RUNNABLE = {("sites", "list"), ("sites", "show")}
#: What docker/entrypoint.sh runs as given rather than as ``gpp`` arguments.
IMAGE_PROGRAMS = {"dask", "dask-scheduler", "dask-worker", "python", "python3", "bash", "sh"}


@dataclass(frozen=True)
class DocCommand:
    """One ``gpp`` command found in the docs: where, its arguments, what follows it."""

    where: str  # file:line
    args: tuple[str, ...]  # after ``gpp``
    piped: bool  # its stdout goes to another program (``| jq``)
    complete: bool  # a block's command, written out: required options are checked

    def __str__(self) -> str:
        return f"{self.where}: gpp {shlex.join(self.args)}"


def _logical_lines(text: str, first_line: int) -> list[tuple[int, str]]:
    """Join backslash continuations; keep each logical line's first line number."""
    out: list[tuple[int, str]] = []
    buf, start = "", first_line
    for i, line in enumerate(text.splitlines(), start=first_line):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _shell_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(first line number, language, body) of each fenced shell block of ``path``."""
    blocks, lang, body, start = [], None, [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = re.match(r"^\s*```\s*([\w-]*)", line)
        if fence and lang is None:
            lang, body, start = fence.group(1).lower(), [], i + 1
        elif fence:
            if lang in SHELL_LANGS:
                blocks.append((start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def _segments(line: str) -> list[tuple[list[str], bool]]:
    """Split a shell line into simple commands; each with 'is piped into the next'."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.whitespace_split = True
    tokens = list(lexer)
    segments: list[tuple[list[str], bool]] = []
    current: list[str] = []
    redirect = False
    for tok in tokens:
        if redirect:  # the target of > file, 2>&1, < file
            redirect = False
            continue
        if re.fullmatch(r"[<>]+&?", tok):
            if current and current[-1].isdigit():  # the file descriptor of 2> ...
                current.pop()
            redirect = True
            continue
        if tok in OPERATORS:
            segments.append((current, tok == "|"))
            current = []
        else:
            current.append(tok)
    segments.append((current, False))
    return [(seg, piped) for seg, piped in segments if seg]


def _gpp_args(tokens: list[str]) -> list[str] | None:
    """The arguments given to ``gpp`` by this simple command, or None if it runs no gpp."""
    while tokens and re.fullmatch(r"\w+=\S*", tokens[0]):  # VAR=value gpp ...
        tokens = tokens[1:]
    if tokens and tokens[0] == "gpp":
        return tokens[1:]
    if tokens[:2] == ["docker", "run"] and "--entrypoint" not in tokens:
        for i, tok in enumerate(tokens):
            if tok.startswith("gpp-cubes:"):  # our images: docker/entrypoint.sh runs `gpp`
                args = tokens[i + 1:]  # unless the arguments name a program it passes on
                if args[:1] == ["gpp"]:
                    return args[1:]
                if args and (args[0] in IMAGE_PROGRAMS or args[0].startswith("/")):
                    return None
                return args
    return None


def block_commands() -> list[DocCommand]:
    """Every ``gpp`` command of the shell blocks of :data:`DOC_FILES`."""
    found = []
    for path in DOC_FILES:
        for start, lang, body in _shell_blocks(path):
            for lineno, line in _logical_lines(body, start):
                if lang == "console":  # only prompt lines are commands, the rest is output
                    if not line.lstrip().startswith("$ "):
                        continue
                    line = line.lstrip()[2:]
                for tokens, piped in _segments(line):
                    args = _gpp_args(tokens)
                    if args is not None:
                        found.append(DocCommand(f"{path.relative_to(ROOT)}:{lineno}",
                                                tuple(args), piped, complete=True))
    return found


_SAFE = r"[\w./:=,<>@{}*~+-]+"
_GPP_RUN = re.compile(rf"\bgpp((?: +{_SAFE})+)")


def prose_commands() -> list[DocCommand]:
    """``gpp ...`` in inline code spans of the docs' prose (names and options only)."""
    found = []
    fenced = re.compile(r"^\s*```.*?^\s*```", re.M | re.S)
    for path in DOC_FILES:
        # blank out fenced blocks (same length: offsets still give line numbers)
        text = fenced.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)),
                          path.read_text(encoding="utf-8"))
        for m in re.finditer(r"`([^`]+)`", text):  # a span may wrap onto the next line
            words = m.group(1).split()
            if words and words[0] == "gpp":
                lineno = text.count("\n", 0, m.start()) + 1
                found.append(DocCommand(f"{path.relative_to(ROOT)}:{lineno}",
                                        tuple(words[1:]), False, complete=False))
    return found


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, cmd)]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _walk(sub, (*path, name))
    return out


def help_commands() -> list[DocCommand]:
    """``gpp ...`` examples in the commands' own help and epilog texts (names and options;
    a wrapped example is checked on its first line)."""
    found = []
    for path, cmd in _walk(typer.main.get_command(app)):
        text = f"{cmd.help or ''}\n{cmd.epilog or ''}"
        for run in _GPP_RUN.findall(text):
            found.append(DocCommand(f"help of gpp {' '.join(path)}".strip(),
                                    tuple(run.split()), False, complete=False))
    return found


def _find_option(cmd: Any, name: str) -> Any | None:
    for p in cmd.params:
        if p.param_type_name == "option" and name in (*p.opts, *p.secondary_opts):
            return p
    return None


def check_command(doc: DocCommand) -> tuple[tuple[str, ...], list[str]]:
    """Resolve ``doc`` against the app; return (sub-command path, problems found)."""
    cmd = typer.main.get_command(app)
    path: list[str] = []
    args = list(doc.args)
    problems: list[str] = []
    given: set[str] = set()
    positional = 0
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == ELLIPSIS:
            continue
        if tok.startswith("-") and len(tok) > 1 and not re.fullmatch(r"-[\d.]+", tok):
            name, has_value = tok.split("=", 1)[0], "=" in tok
            if name == "--help":
                given.add("--help")
                continue
            opt = _find_option(cmd, name)
            if opt is None:
                where = " ".join(["gpp", *path])
                problems.append(f"{where} has no option {name}")
                continue
            given.add(opt.name)
            if not (opt.is_flag or opt.count or has_value):
                value = args[i] if i < len(args) else None
                if value is None or (value.startswith("--") and value != ELLIPSIS):
                    problems.append(f"{name} needs a value")
                else:
                    i += 1
            continue
        subs = getattr(cmd, "commands", None)
        if subs is not None and re.fullmatch(r"<[\w-]+>", tok):  # `gpp <command> --help`
            return tuple(path), problems
        if subs is not None:
            for part in tok.split("/"):  # prose: `gpp tune/train/evaluate/explain`
                if part not in subs:
                    where = " ".join(["gpp", *path])
                    problems.append(f"{where} has no command {part!r}; it has "
                                    f"{', '.join(sorted(subs))}")
            if tok in subs:
                cmd = subs[tok]
                path.append(tok)
            else:
                return tuple(path), problems
            continue
        positional += 1
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    capacity = sum(p.nargs for p in arguments) if all(p.nargs > 0 for p in arguments) else None
    if capacity is not None and positional > capacity:
        problems.append(f"gpp {' '.join(path)} takes {capacity} argument(s), got {positional}")
    finished = (doc.complete and ELLIPSIS not in doc.args and "--help" not in given
                and "config" not in given and "version" not in given)
    if finished and getattr(cmd, "commands", None) is not None:
        problems.append(f"gpp {' '.join(path)} needs a command")
    if finished:
        needed = sum(p.nargs if p.nargs > 0 else 1 for p in arguments if p.required)
        if positional < needed:
            problems.append(f"gpp {' '.join(path)} needs {needed} argument(s), got "
                            f"{positional}")
        for p in cmd.params:
            if p.param_type_name == "option" and p.required and p.name not in given:
                problems.append(f"gpp {' '.join(path)} needs {p.opts[0]}")
    return tuple(path), problems


BLOCKS = block_commands()
ALL = BLOCKS + prose_commands() + help_commands()


def test_the_docs_show_gpp_commands():
    # the extraction itself works: the README's blocks hold these commands
    shown = {c.args[:2] for c in BLOCKS if c.where.startswith("README.md")}
    assert {("sites", "list"), ("sites", "select"), ("build", "--sites"),
            ("demo",)} <= shown | {c.args[:1] for c in BLOCKS}
    assert any(c.where.startswith("docker/README.md") and c.args[:1] == ("build",)
               for c in BLOCKS), "docker run ... gpp-cubes:cpu build ... not found"
    assert len(ALL) > len(BLOCKS) > 10


@pytest.mark.parametrize("doc", ALL, ids=str)
def test_documented_command_exists_with_its_options(doc: DocCommand):
    _, problems = check_command(doc)
    assert not problems, f"{doc}: {'; '.join(problems)}"


@pytest.mark.parametrize(("args", "expected"), [
    (("tune", "--cube", "cubes/features.zarr", "--cell", "lstm"), "gpp tune has no option --cube"),
    (("tune", "cubes/features.zarr", "--cell", "lstm"), "gpp tune needs --workdir"),
    (("sites", "lst"), "gpp sites has no command 'lst'"),
    (("sites", "show"), "gpp sites show needs 1 argument(s), got 0"),
    (("sites", "show", "DE-Hai", "BE-Vie"), "gpp sites show takes 1 argument(s), got 2"),
    (("build", "--sites"), "--sites needs a value"),
])
def test_the_check_catches_wrong_commands(args, expected):
    # the kind of error the README had (`gpp tune --cube ...`) and its relatives
    _, problems = check_command(DocCommand("test", args, False, complete=True))
    assert any(expected in p for p in problems), problems


def test_the_check_reads_shell_syntax():
    line = ('pip install -e ".[dev]" && GPP_X=1 gpp sites list --json 2>/dev/null | jq ".[0]"'
            '  # note\n'
            'docker run --rm --init -v "$PWD/o:/work/out" gpp-cubes:cpu build --out /work/out \\\n'
            '    --demo')
    cmds = [(_gpp_args(t), p) for lineno, text in _logical_lines(line, 1)
            for t, p in _segments(text)]
    assert [c for c in cmds if c[0] is not None] == [
        (["sites", "list", "--json"], True), (["build", "--out", "/work/out", "--demo"], False)]
    assert _gpp_args(["docker", "run", "--entrypoint", "dask", "gpp-cubes:cpu", "worker"]) is None
    assert _gpp_args(["docker", "run", "gpp-cubes:cpu", "dask", "worker", "tcp://h:8786"]) is None
    assert _gpp_args(["docker", "run", "gpp-cubes:cpu", "gpp", "demo"]) == ["demo"]


RUN = [c for c in BLOCKS
       if ELLIPSIS not in c.args
       and ("--help" in c.args or c.args == ("--version",)
            or check_command(c)[0] in RUNNABLE)]


def test_some_documented_commands_run():
    assert any(c.args[:2] == ("sites", "list") for c in RUN)
    assert any("--help" in c.args for c in RUN)


@pytest.mark.parametrize("doc", RUN, ids=str)
def test_documented_command_runs(doc: DocCommand, tmp_path):
    from typer.testing import CliRunner

    # the study set of a fresh installation: no selection file
    env = {"COLUMNS": "200", "GPP_CUBES_SELECTION": str(tmp_path / "selection.csv")}
    res = CliRunner().invoke(app, list(doc.args), env=env)
    assert res.exit_code == 0, f"{doc}: exit {res.exit_code}\n{res.output}"
    assert "Traceback" not in res.output
    if "--json" in doc.args:
        json.loads(res.stdout)
