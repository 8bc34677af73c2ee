"""One output object that knows human vs JSON mode; everything but the JSON document goes to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from xaibench.core.distributed import launched_rank


class Output:
    """Human output (rich, stdout) or exactly one JSON document on stdout; progress on stderr. Under
    torchrun only rank 0 prints: the others compute their share silently.

    Markup is off on both consoles: printed texts carry paths and names from the user and from files
    (``--out 'runs/[/]x'``, a class named "[red]"), which must print as they are and never fail after a
    run is committed; styles are given as ``rich.text.Text`` or ``style=``."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.silent = launched_rank() not in (None, "0")
        self.out = Console(highlight=False, soft_wrap=True, markup=False)
        self.err = Console(stderr=True, highlight=False, markup=False)

    def result(self, data: dict[str, Any] | list[Any], human: Callable[[Console], None]) -> None:
        """Print ``data`` as JSON in JSON mode, else call ``human`` with the stdout console."""
        if self.silent:
            return
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        else:
            human(self.out)

    def note(self, text: str) -> None:
        """One line of progress news on stderr (rank 0 only)."""
        if not self.silent:
            self.err.print(text, style="dim")

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[None]:
        """A progress bar on stderr fed by ``xaibench.core.progress.advance`` inside the block."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from xaibench.core.progress import reporting

        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.err, transient=True, disable=self.silent or not self.err.is_terminal,
        )
        with bar:
            task = bar.add_task(description, total=total)
            with reporting(lambda done: bar.advance(task, done)):
                yield
