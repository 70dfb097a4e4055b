"""Console output: rich progress bars and messages, printed by the main process only."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)


def is_main_process() -> bool:
    """True on the process that prints (rank 0 under torchrun / accelerate, or a single process)."""
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def print0(*args, **kwargs) -> None:
    """Print on the main process only."""
    if is_main_process():
        console.print(*args, **kwargs)


def error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    if is_main_process():
        console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def progress(**kwargs) -> Progress:
    """A progress bar with count, rate-derived ETA and elapsed time (disabled off the main process
    and when output is not a terminal and VIDEOTHINKER_PROGRESS=0)."""
    disable = not is_main_process() or os.environ.get("VIDEOTHINKER_PROGRESS") == "0"
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
        refresh_per_second=2 if not sys.stderr.isatty() else 10,
        **kwargs,
    )
