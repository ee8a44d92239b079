"""Streaming throughput of the S3 source from a local MinIO, next to plain downloads of the same
object in the same run: curl (signed with its --aws-sigv4) and a bare aiohttp GET. Figures are
printed, never asserted. Run: .venv/bin/python benchmarks/fetch_throughput.py [--mib 512]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

import s3server
from modelguard import sources
from modelguard.sources import base, s3

MIB = 1 << 20


async def _source_stream(server: s3server.S3Server, *, hashing: bool) -> None:
    source = sources.open_source(
        "s3://bench/m/",
        s3_settings=s3.S3Settings(
            credentials=server.credentials, region=server.region, endpoint=server.endpoint
        ),
        transport_settings=base.Transport(),
    )
    digest = hashlib.sha256()
    async with source:
        async for chunk in source.stream("blob.bin"):
            if hashing:
                digest.update(chunk)


async def _bare_aiohttp(url: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        response.raise_for_status()
        async for _ in response.content.iter_chunked(MIB):
            pass


def _timed(run: Callable[[], Awaitable[None]] | Callable[[], None], *, runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        figures.append(time.perf_counter() - started)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, s3server.running(Path(tmp) / "s3") as server:
        blob = Path(tmp) / "blob.bin"
        with blob.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        server.create_bucket("bench")
        server.put_object("bench", "m/blob.bin", blob)
        blob.unlink()
        # Anonymous reads for the plain downloads: no signing cost on their side.
        policy = (
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},'
            '"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::bench/*"]}]}'
        )
        server.request("PUT", "/bench", query={"policy": ""}, body=policy.encode())
        url = f"{server.endpoint}/bench/m/blob.bin"
        cases: list[tuple[str, Callable[[], object]]] = []
        if curl := shutil.which("curl"):
            cases.append(
                (
                    "reference: curl -o /dev/null",
                    lambda: subprocess.run([curl, "-sSf", "-o", "/dev/null", url], check=True),
                )
            )
        cases += [
            ("reference: bare aiohttp GET, 1 MiB reads", lambda: _bare_aiohttp(url, {})),
            ("sources.S3Source.stream (SigV4)", lambda: _source_stream(server, hashing=False)),
            ("sources.S3Source.stream + sha256", lambda: _source_stream(server, hashing=True)),
        ]
        print(f"{args.mib} MiB object, {args.runs} runs, median")
        print(f"{'what':<44} {'MiB/s':>8} {'s':>7}")
        for name, run in cases:
            figures = _timed(run, runs=args.runs)  # type: ignore[arg-type]
            median = statistics.median(figures)
            print(f"{name:<44} {args.mib / median:>8.0f} {median:>7.2f}")


if __name__ == "__main__":
    main()
