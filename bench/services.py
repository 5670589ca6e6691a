"""Seconds to ready for a job's private postgres, redis and mariadb, cold and warm.

Run: ``.venv/bin/python bench/services.py [--warm N]``. For each server: *cold* is the first start
on a fresh job-environment directory (the template is built: initdb / mariadb-install-db); *warm*
is a start once the template exists (take a ready copy from the pool, start, apply the declared
credentials), repeated N times (median, min-max); *copy* is the same with no pool, the data
directory copied at start. Teardown (which also waits for the pool's refill) is printed beside.
Goal: warm well under a second for postgres and redis. Prints, never asserts. The machine's load
average is printed first: on a busy machine every column grows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bot.jobenv.services import ServiceHost, ServiceSpec

SERVICES = {
    "postgres": ServiceSpec(
        "postgres",
        "postgres:16",
        {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "appdb"},
        ((5432, 5432),),
    ),
    "redis": ServiceSpec("redis", "redis:7", {}, ((6379, 6379),)),
    "mariadb": ServiceSpec(
        "mysql",
        "mysql:8.0",
        {
            "MYSQL_ROOT_PASSWORD": "r",
            "MYSQL_DATABASE": "shop",
            "MYSQL_USER": "u",
            "MYSQL_PASSWORD": "p",
        },
        ((3306, 3306),),
    ),
}


async def start_once(host: ServiceHost, spec: ServiceSpec) -> tuple[float, float, str]:
    """Seconds to ready, seconds to tear down, the server that ran."""
    started = time.perf_counter()
    async with host.start([spec]) as running:
        ready = time.perf_counter() - started
        server = running.services[0].server
        stopping = time.perf_counter()
    return ready, time.perf_counter() - stopping, server


async def warm_starts(
    host: ServiceHost, spec: ServiceSpec, runs: int
) -> tuple[list[float], list[float]]:
    ready, down = [], []
    for _ in range(runs):
        seconds, teardown, _ = await start_once(host, spec)
        ready.append(seconds)
        down.append(teardown)
    return ready, down


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


async def main(runs: int) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs")
    print(
        f"{'server':<19} {'cold s':>7} {'warm s':>20} {'copy s':>20} {'cold/warm':>9} {'down s':>7}"
    )
    for name, spec in SERVICES.items():
        root = Path(tempfile.mkdtemp(prefix="svc-bench-", dir="/tmp"))
        try:
            host = ServiceHost(root / "jobenv")
            cold, _, server = await start_once(host, spec)
            warm, down = await warm_starts(host, spec, runs)
            host.pool_size = 0
            for pool in host.templates.glob("*.pool"):
                shutil.rmtree(pool)
            copy, _ = await warm_starts(host, spec, runs)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        label = f"{name} ({server.split()[-1]})"
        print(
            f"{label:<19} {cold:>7.3f} {spread(warm):>20} {spread(copy):>20} "
            f"{cold / statistics.median(warm):>8.0f}x {statistics.median(down):>7.3f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=10, help="warm starts per server")
    asyncio.run(main(parser.parse_args().warm))
