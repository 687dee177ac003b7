"""Shared CLI plumbing: TOML config files, one-line errors, exit codes, JSON output,
progress bars.

Exit codes follow the click/typer convention: 0 success, 1 a run that failed, 2 a command
line that cannot run as given (:class:`UsageError`, a bad ``--config`` file, an unknown
option; also :class:`~gpp_cubes.errors.StaleStoreError`, a decision left to the user).
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gpp_cubes.errors import ConfigError, GppError
from gpp_cubes.secrets import redact

console = Console(stderr=True)

#: Exit code of a usage error (click's and typer's convention).
USAGE_EXIT_CODE = 2


class UsageError(ConfigError):
    """A command line that cannot run as given: conflicting, missing or malformed options,
    or a bad ``--config`` file. :func:`guarded` prints it as one line and exits with 2."""

    exit_code = USAGE_EXIT_CODE


def read_config(path: Path, command: str) -> dict[str, Any]:
    """Read the ``[command]`` table (or the top level) of a TOML config file.

    Keys use the option names with dashes or underscores (``max-cloud`` or ``max_cloud``).
    Unknown keys are rejected by :func:`config_callback`, which knows the command's options.

    Raises
    ------
    UsageError
        The file is missing, unreadable, not UTF-8 or not valid TOML (the message names the
        file and, for TOML, the line and column), or its ``[command]`` entry is not a table.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UsageError(f"config file not found: {path}") from err
    except IsADirectoryError as err:
        raise UsageError(f"config file {path} is a directory") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"config file {path} cannot be read: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from err
    section = data.get(command, {k: v for k, v in data.items() if not isinstance(v, dict)})
    if not isinstance(section, dict):
        raise UsageError(f"config file {path}: '{command}' must be a table ([{command}]), "
                         f"got {type(section).__name__}")
    return {k.replace("-", "_"): v for k, v in section.items()}


def fail_usage(err: Exception, stage: str) -> None:
    """Print ``err`` as one ``error [stage] ...`` line and exit with code 2."""
    console.print(f"[bold red]error[/] {escape(f'[{stage}]')} {escape(redact(str(err)))}",
                  soft_wrap=True)
    raise typer.Exit(code=USAGE_EXIT_CODE)


def config_callback(ctx: typer.Context, _param: typer.CallbackParam,
                    value: Path | None) -> None:
    """Eager ``--config`` callback: the file's values become defaults that flags override.

    A missing or malformed file, or a key that is not an option of the command, is one line
    naming the file and the problem, exit code 2 (no traceback: ``--debug`` is not parsed
    yet when the file is read).
    """
    if value is None:
        return
    # a key is an option's long name (``json`` for ``--json``) or its parameter name
    names = {p.name: p.name for p in ctx.command.params if p.name}
    names.update({opt[2:].replace("-", "_"): p.name for p in ctx.command.params
                  for opt in p.opts if opt.startswith("--") and p.name})
    try:
        values = read_config(value, ctx.info_name or "")
        unknown = sorted(set(values) - set(names))
        if unknown:
            # as users write them: an option's name, not its parameter's when they differ
            shown = sorted(set(names) - {v for k, v in names.items() if k != v})
            raise UsageError(f"config file {value}: unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(shown)}")
    except UsageError as err:
        fail_usage(err, "config")
    values = {names[k]: v for k, v in values.items()}
    ctx.default_map = {**(ctx.default_map or {}), **values}


ConfigOption = typer.Option(
    None,
    "--config",
    help="TOML file with option values ([<command>] table); flags given on the line win.",
    is_eager=True,
    callback=config_callback,
    exists=False,
    dir_okay=False,
)

DebugOption = typer.Option(False, "--debug", help="Show full tracebacks on errors.")


def guarded(fn: Callable[[], Any], *, debug: bool, stage: str) -> Any:
    """Run ``fn``; on an expected failure print one line naming the stage and exit.

    The exit code is the error's ``exit_code`` attribute if it has one (2 for
    :class:`UsageError` and :class:`~gpp_cubes.errors.StaleStoreError`), else 1.
    """
    try:
        return fn()
    except (GppError, FileNotFoundError, OSError, ValueError) as err:
        if debug:
            console.print_exception()
        else:
            # soft_wrap: one logical line, never broken inside a path by the terminal width
            console.print(f"[bold red]error[/] {escape(f'[{stage}]')} {escape(redact(str(err)))}",
                          soft_wrap=True)
        raise typer.Exit(code=getattr(err, "exit_code", 1)) from None


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document on stdout (nothing else goes there).

    ``data`` is JSON text already (e.g. ``DataFrame.to_json``) or an object of JSON types;
    NaN is written as ``null``, so ``jq`` and every strict JSON parser read the output.
    """
    text = data if isinstance(data, str) else json.dumps(_nan_to_none(data), allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


@contextmanager
def progress_bar(transient: bool = False) -> Iterator[Progress]:
    """A rich progress display with elapsed and remaining time (stderr, so stdout stays data)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    ) as progress:
        yield progress
