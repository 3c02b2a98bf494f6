"""Progress of long work (a backup, a restore, an import): a bar on a terminal, nothing when
the output is piped or redirected, so that scripts and logs get no control characters."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["Progress", "progress_bar"]

Progress = Callable[[int], None]  # told how many more items are done


def quiet(done: int) -> None:
    """Progress that shows nothing."""


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None = None, stream: TextIO | None = None
) -> Iterator[Progress]:
    """A `Progress` drawn on `stream` (stderr) if it is a terminal, else one that does nothing."""
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        yield quiet
        return
    from rich import progress
    from rich.console import Console  # loaded only for a terminal

    with progress.Progress(
        "[progress.description]{task.description}",
        progress.BarColumn(),
        progress.MofNCompleteColumn(),
        progress.TimeElapsedColumn(),
        console=Console(file=stream),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)
