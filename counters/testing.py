"""`counters serve` as a real child process, for tests and the soak script.

Everything here targets loopback only: the service listens on 127.0.0.1 on free ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """One `counters serve` process with its own local Ray, on loopback ports."""

    def __init__(self, storage_dir: Path, *flags: str, dashboard: bool = False) -> None:
        self.storage_dir = storage_dir
        self.port = free_port()
        self.dashboard_port = free_port() if dashboard else 0
        self.flags = flags
        self.log = storage_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: list[psutil.Process] = []

    def start(self, timeout: float = 90) -> Service:
        command = [
            sys.executable, "-m", "counters", "serve",
            "--port", str(self.port),
            "--storage-dir", str(self.storage_dir),
            "--dashboard-port", str(self.dashboard_port),
            *self.flags,
        ]  # fmt: skip
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.log.read_text()}")
            try:
                if self.get("/healthz") == (200, "ok"):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"serve did not answer within {timeout}s:\n{self.log.read_text()}")

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def ray_address(self) -> str:
        """The GCS address of the service's Ray, as its log announces it."""
        found = re.search(r"Ray at ([\w.-]+:\d+): clients join", self.log.read_text())
        if found:
            return found.group(1)
        raise LookupError("the service did not log its Ray address")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `signum`, wait for the exit, and return the exit code."""
        assert self.process is not None
        # Everything serve started (Ray's processes and the host actors) is in its tree now.
        self.tree = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill_everything(self) -> None:
        """SIGKILL the service and every process it started, Ray included: a crash."""
        assert self.process is not None
        tree = [psutil.Process(self.process.pid), *self.descendants()]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)
        self.process.wait(10)
        self.process = None

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def host_processes(self) -> list[psutil.Process]:
        """The service's host actor processes (Ray titles them ``ray::CounterHost...``)."""
        return host_processes(self.descendants())

    def leftovers(self, timeout: float = 20) -> list[psutil.Process]:
        """Processes of the stopped service still alive after `timeout` seconds."""
        _, alive = psutil.wait_procs(self.tree, timeout=timeout)
        return alive

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.stop(signal.SIGKILL)
            for process in self.leftovers(timeout=5):
                process.kill()


def hosts_of(storage_dir: Path) -> list[psutil.Process]:
    """The host actor processes that hold a file of `storage_dir` open: one service's own."""
    storage = str(storage_dir.resolve())
    found = []
    for process in host_processes():
        with contextlib.suppress(psutil.Error):
            if any(f.path.startswith(storage) for f in process.open_files()):
                found.append(process)
    return found


def host_processes(candidates: list[psutil.Process] | None = None) -> list[psutil.Process]:
    """Processes running a host actor, among `candidates` (default: all on this machine)."""
    found = []
    for process in candidates if candidates is not None else psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if "CounterHost" in " ".join(process.cmdline()[:1]):
                found.append(process)
    return found
