"""The README's code blocks, run as written against a real `counters serve`: they cannot go stale.

Blocks run in README order on one fresh service, so counts carry over from block to block: the
first console session starts from a fresh counter A, and each Python block continues from there.

- ```console: each ``$ `` line is a curl command against http://127.0.0.1:8787, run on the
  service's own port, or a `counters` command, run with ``COUNTERS_URL`` set to that port; the
  lines under it are its output (of a stream, what it printed within its ``--max-time``). For
  ``curl -i``, the headers shown must appear in that order among the real ones (curl also
  prints Date, Content-Length, ...), and the body must match exactly.
- ```python: each block is its own ``python -c`` in a user's fresh shell (RAY_ADDRESS and
  RAY_AUTH_MODE as the service logs them, another working directory); it must exit 0, and its
  printed lines must be the values written after ``print(...)  # ``, in order.
- ```sh: `./dev serve` and `./dev test`, skipped there; `./dev test` is what runs this suite, and
  `./dev serve` gets its own test below.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from counters.testing import Service, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8787"
# `print(...)  # VALUE`: VALUE is the line the print writes.
PRINTED = re.compile(r"^\s*print\(.*\)  # (?P<value>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    language: str
    line: int  # of the opening fence, 1-based
    lines: tuple[str, ...]

    def __str__(self) -> str:
        return f"README.md:{self.line} (```{self.language})"


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if opened is None:
            if line.startswith("```"):
                opened, body = (line[3:].strip(), number), []
        elif line.strip() == "```":
            blocks.append(Block(opened[0], opened[1], tuple(body)))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"README.md:{opened[1]}: a code block is never closed"
    return blocks


def console_commands(block: Block) -> Iterator[tuple[str, list[str]]]:
    """Each ``$ `` command of a console block with the output lines shown under it."""
    command: str | None = None
    shown: list[str] = []
    for line in block.lines:
        if line.startswith("$ "):
            if command is not None:
                yield command, shown
            command, shown = line[2:], []
        else:
            assert command is not None, f"{block}: output {line!r} before any `$ ` command"
            shown.append(line)
    assert command is not None, f"{block}: no `$ ` command"
    yield command, shown


def is_subsequence(shown: list[str], real: list[str]) -> bool:
    remaining = iter(real)
    return all(line in remaining for line in shown)


def run_counters(block: Block, command: str, shown: list[str], port: int) -> None:
    """A `counters` command, as installed with the package, against the service."""
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / "counters")
    env = user_environment() | {"COUNTERS_URL": f"http://127.0.0.1:{port}"}
    result = subprocess.run(argv, capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, f"{block}: `{command}` failed: {result.stderr.decode()}"
    output = result.stdout.decode()
    assert output == "".join(line + "\n" for line in shown), (
        f"{block}: `{command}` printed:\n{output}"
    )


def run_console(block: Block, port: int) -> None:
    for command, shown in console_commands(block):
        if command.startswith("counters "):
            run_counters(block, command, shown, port)
            continue
        assert README_URL in command, f"{block}: `{command}` is not against {README_URL}"
        argv = shlex.split(command.replace(README_URL, f"http://127.0.0.1:{port}"))
        result = subprocess.run(argv, capture_output=True, timeout=60)
        # A stream shown for a while (`curl --max-time`) ends by curl's timeout, 28.
        ok = (0, 28) if "--max-time" in argv else (0,)
        assert result.returncode in ok, f"{block}: `{command}` failed: {result.stderr.decode()}"
        output = result.stdout.decode()
        where = f"{block}: `{command}` printed:\n{output}"
        if output.startswith("HTTP/"):  # curl -i: status line and headers, a blank line, the body
            assert "" in shown, f"{block}: `{command}` shows headers without a blank line and body"
            blank = shown.index("")
            head, _, body = output.partition("\r\n\r\n")
            assert is_subsequence(shown[:blank], head.split("\r\n")), where
            assert body == "\n".join(shown[blank + 1 :]), where
        elif "--max-time" in argv:  # events end in a blank line, not shown at the end
            assert output.rstrip("\n") == "\n".join(shown), where
        else:
            assert output == "\n".join(shown), where


def user_environment() -> dict[str, str]:
    """A user's fresh shell: nothing of Ray's or ours inherited from the test run."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RAY_", "COUNTERS_"))
    } | {"RAY_USAGE_STATS_ENABLED": "0"}


def run_python(block: Block, ray_address: str, cwd: Path) -> None:
    # RAY_ADDRESS and RAY_AUTH_MODE as the service's log tells a user to set them.
    env = user_environment() | {"RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "token"}
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(block.lines)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, f"{block} failed:\n{result.stderr}"
    expected = [found["value"] for line in block.lines if (found := PRINTED.match(line))]
    assert result.stdout.splitlines() == expected, f"{block} printed:\n{result.stdout}"


@pytest.mark.timeout(300)
def test_the_readme_blocks_run_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text())
    languages = {block.language for block in blocks}
    assert {"console", "python"} <= languages, f"README.md has no console or python block: {blocks}"
    elsewhere = tmp_path / "user"  # a user's own directory, not the service's
    elsewhere.mkdir()
    with Service(tmp_path / "storage") as service:
        for block in blocks:
            if block.language == "console":
                run_console(block, service.port)
            elif block.language == "python":
                run_python(block, service.ray_address(), elsewhere)
            elif block.language == "sh":
                # `./dev serve` and `./dev test`: `./dev test` is what runs this suite (CI runs
                # it), and `./dev serve` runs in the test below, on a free port.
                continue
            else:
                pytest.fail(f"{block}: no way to run ```{block.language} blocks; add one here")


@pytest.mark.timeout(180)
def test_dev_serve_serves_and_ctrl_c_stops_it_and_its_ray(tmp_path: Path) -> None:
    # `./dev serve` would set .venv up first (pip, a minute); CI's `./dev test` has done it.
    if not (ROOT / ".venv" / "bin" / "counters").exists():
        pytest.fail(".venv is not set up: run `./dev test`, which sets it up and runs the tests")
    if (ROOT / "pyproject.toml").stat().st_mtime > (ROOT / ".venv" / ".installed").stat().st_mtime:
        pytest.fail("pyproject.toml changed since .venv was set up: run `./dev test`")
    port = free_port()
    command = [
        str(ROOT / "dev"), "serve",
        "--port", str(port),
        "--storage-dir", str(tmp_path / "storage"),
        "--dashboard-port", "0",
    ]  # fmt: skip
    log = tmp_path / "dev-serve.log"
    with log.open("ab") as out:
        # Its own process group, as a terminal's foreground job: Ctrl-C signals the whole group.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            env=user_environment(),
            start_new_session=True,
        )
    tree: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while curl(f"{url}/healthz") != "ok":
            assert process.poll() is None, f"./dev serve exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"./dev serve never answered:\n{log.read_text()}"
            time.sleep(0.2)
        assert curl(f"{url}/increment?name=A") == "Durable Object 'A' count: 1"
        tree = psutil.Process(process.pid).children(recursive=True)
        assert tree, "serve started no local Ray"
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        assert process.wait(60) == 0, log.read_text()
        _, alive = psutil.wait_procs(tree, timeout=20)
        assert alive == [], f"Ray processes outlived ./dev serve: {alive}"
    finally:
        if process.poll() is None:
            tree += psutil.Process(process.pid).children(recursive=True)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for leftover in tree:
            with contextlib.suppress(psutil.Error):
                leftover.kill()


def curl(url: str) -> str | None:
    """The body at `url` as curl prints it, or None if nothing answers."""
    result = subprocess.run(["curl", "-s", url], capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else None
