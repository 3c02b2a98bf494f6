"""A progress bar on a terminal, nothing when piped: a real pseudo-terminal and a real pipe."""

from __future__ import annotations

import io
import os
import select

from counters.cli.progress import progress_bar, quiet


def test_a_terminal_gets_a_bar_with_the_count_done() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, progress_bar("restoring", 40, terminal) as done:
        assert done is not quiet
        for _ in range(40):
            done(1)
    shown = b""
    while chunk := _read_ready(leader):
        shown += chunk
    os.close(leader)
    assert b"restoring" in shown
    assert b"40/40" in shown


def test_a_pipe_or_file_gets_nothing() -> None:
    reader, writer = os.pipe()
    with os.fdopen(writer, "w") as pipe, progress_bar("restoring", 40, pipe) as done:
        assert done is quiet
        done(40)
    with os.fdopen(reader, "rb") as piped:
        assert piped.read() == b""
    text = io.StringIO()
    with progress_bar("backing up", None, text) as done:
        assert done is quiet


def _read_ready(fd: int) -> bytes:
    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end is closed: all was read
        return b""
