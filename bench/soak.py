"""Soak: mixed load on a real `counters serve`, with crashes, then check every count exactly.

    .venv/bin/python bench/soak.py --seconds 60 --kill-every 0.5 --restart-every 20

Starts the service on loopback (its own local Ray, a temporary storage dir), runs `--clients`
HTTP clients that increment and decrement random counters with an Idempotency-Key each and
retry every failure with the same key until it is acknowledged, and reads in between. Meanwhile
it SIGKILLs a random host actor process every `--kill-every` seconds, and crashes the whole
service (Ray included, every process SIGKILLed) and starts it again every `--restart-every`
seconds. Then it stops the load and checks that every counter equals the sum of the changes
acknowledged to the clients: nothing lost, nothing applied twice. Exits 1 if not.

Bounded: the load stops after `--seconds`, or once `--min-kills` hosts were killed if that
takes longer (a slow machine spends more of the time restarting), but by 4 x `--seconds` in any
case; an operation still unacknowledged 60 s later fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from counters.testing import Service

GIVE_UP_AFTER = 60.0


@dataclass
class Load:
    """How long the load runs: past `until` while fewer than `min_kills` hosts were killed,
    but never past `stop`."""

    until: float
    stop: float
    min_kills: int

    def running(self, report: Report) -> bool:
        now = time.monotonic()
        return now < self.until or (report.host_kills < self.min_kills and now < self.stop)


@dataclass
class Report:
    acknowledged: int = 0
    reads: int = 0
    retries: int = 0
    host_kills: int = 0
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    expected: Tally[str] = field(default_factory=Tally)


async def client(
    base: str, names: list[str], load: Load, report: Report, rng: random.Random
) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while load.running(report):
            name = rng.choice(names)
            if rng.random() < 0.2:
                await read(session, base, name, report)
                continue
            path, sign = rng.choice([("/increment", 1), ("/increment", 1), ("/decrement", -1)])
            amount = rng.randint(1, 5)
            key = uuid.uuid4().hex
            if await change(session, f"{base}{path}", name, amount, key, report):
                report.expected[name] += sign * amount
                report.acknowledged += 1


async def change(
    session: aiohttp.ClientSession, url: str, name: str, amount: int, key: str, report: Report
) -> bool:
    give_up = time.monotonic() + GIVE_UP_AFTER
    params = {"name": name, "amount": str(amount)}
    while time.monotonic() < give_up:
        try:
            async with session.post(url, params=params, headers={"Idempotency-Key": key}) as r:
                body = await r.text()
                if r.status == 200:
                    return True
                if r.status < 500:
                    report.failures.append(f"{url} {params} answered {r.status}: {body}")
                    return False
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # the service is down or restarting: same key, again
        report.retries += 1
        await asyncio.sleep(0.05)
    report.failures.append(f"{url} {params} key {key} not acknowledged in {GIVE_UP_AFTER:g} s")
    return False


async def read(session: aiohttp.ClientSession, base: str, name: str, report: Report) -> None:
    try:
        async with session.get(f"{base}/", params={"name": name}) as response:
            if response.status == 200:
                report.reads += 1
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass


async def chaos(
    service: Service, arguments: argparse.Namespace, load: Load, report: Report
) -> None:
    rng = random.Random(arguments.seed)
    next_restart = time.monotonic() + (arguments.restart_every or float("inf"))
    while load.running(report):
        await asyncio.sleep(arguments.kill_every or 0.5)
        if time.monotonic() >= next_restart:
            await asyncio.to_thread(service.kill_everything)
            await asyncio.to_thread(service.start)
            report.restarts += 1
            next_restart = time.monotonic() + arguments.restart_every
        elif arguments.kill_every:
            hosts = service.host_processes()
            if hosts:
                try:
                    rng.choice(hosts).send_signal(signal.SIGKILL)
                    report.host_kills += 1
                except psutil.Error:
                    pass


async def verify(base: str, report: Report) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        wrong = 0
        for name, expected in sorted(report.expected.items()):
            async with session.get(f"{base}/", params={"name": name}) as response:
                body = await response.text()
            if body != f"Durable Object '{name}' count: {expected}":
                wrong += 1
                report.failures.append(f"{name}: expected {expected}, service says {body!r}")
        return wrong


async def soak(arguments: argparse.Namespace, storage: Path) -> Report:
    report = Report()
    flags = ["--placement", arguments.placement]
    with Service(storage, *flags) as service:
        base = f"http://127.0.0.1:{service.port}"
        names = [f"soak-{i}" for i in range(arguments.names)]
        now = time.monotonic()
        load = Load(now + arguments.seconds, now + 4 * arguments.seconds, arguments.min_kills)
        rng = random.Random(arguments.seed)
        await asyncio.gather(
            chaos(service, arguments, load, report),
            *(
                client(base, names, load, report, random.Random(rng.random()))
                for _ in range(arguments.clients)
            ),
        )
        await verify(base, report)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--names", type=int, default=40)
    parser.add_argument("--placement", choices=["sharded", "per-name"], default="sharded")
    parser.add_argument("--kill-every", type=float, default=0.5, help="0: never kill hosts")
    parser.add_argument("--restart-every", type=float, default=0.0, help="0: never restart")
    parser.add_argument(
        "--min-kills", type=int, default=0, help="hosts to kill before the load may stop"
    )
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="counters-soak-") as tmp:
        report = asyncio.run(soak(arguments, Path(tmp) / "storage"))
    took = time.monotonic() - started
    print(
        f"soak: {arguments.seconds:g} s of load, {arguments.clients} clients, "
        f"{arguments.names} counters, {arguments.placement} placement ({took:.0f} s in all)"
    )
    print(f"  acknowledged changes {report.acknowledged}, reads {report.reads}")
    print(
        f"  retries {report.retries}, host kills {report.host_kills}, "
        f"service crashes and restarts {report.restarts}"
    )
    for failure in report.failures[:20]:
        print(f"  FAILED: {failure}")
    verified = len(report.expected)
    if report.failures:
        print(f"soak: FAILED, {len(report.failures)} problems")
        return 1
    print(f"soak: OK, all {verified} counters equal the sum of their acknowledged changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
