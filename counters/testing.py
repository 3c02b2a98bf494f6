"""`counters serve` as a real child process, for tests and the soak script.

Everything here targets loopback only: the service listens on 127.0.0.1 on free ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
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

    def __init__(
        self,
        storage_dir: Path,
        *flags: str,
        dashboard: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.storage_dir = storage_dir
        self.port = free_port()
        self.dashboard_port = free_port() if dashboard else 0
        self.flags = flags
        self.env = env or {}
        self.log = storage_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: list[psutil.Process] = []

    def start(self, timeout: float = 90) -> Service:
        # With --database the counters are in PostgreSQL, and a storage dir is refused.
        storage = [] if "--database" in self.flags else ["--storage-dir", str(self.storage_dir)]
        command = [
            sys.executable, "-m", "counters", "serve",
            "--port", str(self.port),
            *storage,
            "--dashboard-port", str(self.dashboard_port),
            *self.flags,
        ]  # fmt: skip
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.env}
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

    def post(self, path: str, key: str) -> tuple[int, str]:
        """A change with an `Idempotency-Key`: send it again after a 503 and it applies once."""
        return self.get(path, "POST", {"Idempotency-Key": key})

    def get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method, headers=headers or {}
        )
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


def hosts_of(
    storage_dir: Path | None = None, database_port: int | None = None
) -> list[psutil.Process]:
    """One service's host actor processes: those holding a file of `storage_dir` open, or
    connected to the PostgreSQL server on `database_port`."""
    storage = str(storage_dir.resolve()) if storage_dir is not None else None
    found = []
    for process in host_processes():
        with contextlib.suppress(psutil.Error):
            if storage is not None:
                uses = any(f.path.startswith(storage) for f in process.open_files())
            else:
                uses = any(
                    c.raddr and c.raddr.port == database_port
                    for c in process.net_connections("tcp")
                )
            if uses:
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


def postgres_binaries() -> Path:
    """The folder of PostgreSQL's server programs (Debian's `postgresql`, `.ci/run` installs it)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if versions:
        return versions[-1].parent
    raise FileNotFoundError(
        "PostgreSQL's server is not installed: apt-get install postgresql (as .ci/run does)"
    )


class PostgresServer:
    """A real PostgreSQL server of our own, in a temporary folder, on a loopback port.

    The server refuses to run as root, so as root it runs as the `postgres` user that Debian's
    package makes. `stop` and `start` again keep its data: a database that goes away and comes
    back, for fault tests.
    """

    def __init__(self) -> None:
        self.bin = postgres_binaries()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="counters-pg-"))
        self.data = self.dir / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.dir, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` rolls back what is in flight; `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL. It sorts text as people read it (ICU's en-US: a, b,
        B, é, Z), as most databases do, so that nothing here may assume code point order."""
        import psycopg

        name = f"counters_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(
                f'CREATE DATABASE "{name}" TEMPLATE template0 '
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            )
        return self.dsn(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            user=self._user,
            timeout=120,
        )
