"""Shared CLI plumbing: TOML config files, one-line errors, progress bars."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
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


def read_config(path: Path, command: str) -> dict[str, Any]:
    """Read the ``[command]`` table (or the top level) of a TOML config file.

    Keys use the option names with dashes or underscores (``max-cloud`` or ``max_cloud``).
    Unknown keys are rejected by :func:`config_callback`, which knows the command's options.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    section = data.get(command, {k: v for k, v in data.items() if not isinstance(v, dict)})
    return {k.replace("-", "_"): v for k, v in section.items()}


def config_callback(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """Eager ``--config`` callback: the file's values become defaults that flags override."""
    if value is None:
        return
    values = read_config(value, ctx.info_name or "")
    known = {p.name for p in ctx.command.params}
    unknown = sorted(set(values) - known)
    if unknown:
        raise typer.BadParameter(
            f"unknown key(s) {', '.join(unknown)} in {value}; known: {', '.join(sorted(known))}"
        )
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
    :class:`~gpp_cubes.errors.StaleStoreError`), else 1.
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
