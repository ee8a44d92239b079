"""Throughput of `modelguard agent fetch-verify` from a local MinIO, next to a plain download of the
same bytes in the same run: curl fetching the same objects at the same parallelism, and a bare
aiohttp GET per file writing to disk. The model: a few large shards plus small files, signed with
model_signing. The cases run interleaved, --runs times each; figures are medians with their range,
printed, never asserted; the target is >= 90 % of the plain download. The last line puts the
agent's extra CPU next to what SHA-256 alone costs over the same bytes, and the best ratio a machine
allows where the plain download already keeps every core busy (as here, with MinIO beside it).

Run: PYTHONPATH=hack .venv/bin/python benchmarks/fetch_verify_throughput.py [--mib 512] [--runs 3]
[--diagnose]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

import s3server
import signedmodel
from modelguard.agent import fetchverify, plan
from modelguard.trust import bundle, digests, statement

MIB = 1 << 20
PREFIX = "bench/1"
PUBLIC_READ = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},'
    '"Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::bench/*",'
    '"arn:aws:s3:::bench"]}]}'
)


def make_model(directory: Path, *, mib: int) -> dict[str, int]:
    """Four large shards sharing `mib` MiB, plus a config, a tokenizer and a few small files."""
    sizes: dict[str, int] = {}
    large = mib * MIB // 4
    for index in range(4):
        name = f"model-{index + 1:05d}-of-00004.safetensors"
        path = directory / name
        with path.open("wb") as handle:
            handle.write(signedmodel.safetensors({"w": [0.0]}))
            left = large - handle.tell()
            while left > 0:
                handle.write(os.urandom(min(left, 8 * MIB)))
                left -= min(left, 8 * MIB)
        sizes[name] = large
    small = {
        "config.json": b'{"model_type": "bench"}',
        "tokenizer/tokenizer.json": os.urandom(2 * MIB).hex().encode()[: 3 * MIB],
        "tokenizer/special_tokens_map.json": b"{}",
        "generation_config.json": b'{"max_new_tokens": 64}',
    }
    for name, data in small.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
        sizes[name] = len(data)
    return sizes


async def plain_aiohttp(base_url: str, names: list[str], dest: Path, *, parallel: int) -> None:
    """The reference: GET each file and write it, `parallel` at a time, no hashing."""
    slots = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=parallel), auto_decompress=False
    ) as session:

        async def one(name: str) -> None:
            async with slots, session.get(f"{base_url}/{name}") as response:
                response.raise_for_status()
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    async for chunk in response.content.iter_chunked(MIB):
                        handle.write(chunk)

        await asyncio.gather(*(one(name) for name in names))


def plain_curl(curl: str, base_url: str, names: list[str], dest: Path, *, parallel: int) -> None:
    arguments = [
        curl,
        "-sSf",
        "--no-progress-meter",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "--create-dirs",
    ]
    for name in names:
        arguments += ["-o", str(dest / name), f"{base_url}/{name}"]
    subprocess.run(arguments, check=True)


@dataclasses.dataclass
class Figures:
    """Per run: wall seconds, and the client's and the server's CPU seconds."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    client_cpu: list[float] = dataclasses.field(default_factory=list)
    server_cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed_once(run: Callable[[], object], *, dest: Path, server_pid: int, into: Figures) -> None:
    _empty(dest)
    client_before, server_before = _client_cpu(), _process_cpu(server_pid)
    started = time.perf_counter()
    result = run()
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    into.seconds.append(time.perf_counter() - started)
    into.client_cpu.append(_client_cpu() - client_before)
    into.server_cpu.append(_process_cpu(server_pid) - server_before)


async def _without_hashing(run: Awaitable[object]) -> None:
    """`run` with every digest update a no-op and the digest check skipped: a diagnostic only."""

    def count_only(self: digests.FileHasher, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)

    with contextlib.ExitStack() as stack:
        stack.callback(setattr, digests.FileHasher, "update", digests.FileHasher.update)
        stack.callback(setattr, plan, "check_file", plan.check_file)
        digests.FileHasher.update = count_only  # type: ignore[method-assign]
        plan.check_file = lambda *_: None
        await run


def sha256_cpu(total: int) -> float:
    """CPU seconds SHA-256 takes over `total` bytes on one core: the agent's share of work that a
    plain download does not have, whatever the code around it."""
    block = os.urandom(4 * MIB)
    digest = hashlib.sha256()
    before = time.process_time()
    for _ in range(0, total, len(block)):
        digest.update(block)
    return time.process_time() - before


def _client_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _empty(dest: Path) -> None:
    if dest.exists():
        for directory, _, _ in os.walk(dest):
            Path(directory).chmod(0o755)
        shutil.rmtree(dest)
    dest.mkdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=fetchverify.DEFAULT_PARALLEL)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="add the agent with SHA-256 stubbed out: what its pipeline costs beyond hashing",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, s3server.running(Path(tmp) / "s3") as server:
        work = Path(tmp)
        model = work / "model"
        model.mkdir()
        sizes = make_model(model, mib=args.mib)
        key, _ = signedmodel.generate_key(work)
        signature = signedmodel.sign(model, private_key=key, signature=work / "model.sig")
        root = statement.parse(bundle.parse(signature).payload).root_digest
        server.create_bucket("bench")
        for name in sizes:
            server.put_object("bench", f"{PREFIX}/{name}", model / name)
        server.put_object("bench", f"{PREFIX}/model.sig", signature)
        shutil.rmtree(model)
        # Anonymous reads on both sides: the comparison is of the transfer, not of signing.
        server.request("PUT", "/bench", query={"policy": ""}, body=PUBLIC_READ.encode())
        base_url = f"{server.endpoint}/bench/{PREFIX}"
        credentials = signedmodel_credentials(work, server)
        names = sorted(sizes, key=lambda name: -sizes[name])
        total = sum(sizes.values())
        dest = work / "dest"
        options = fetchverify.Options(
            source=f"s3://bench/{PREFIX}/",
            signature=f"s3://bench/{PREFIX}/model.sig",
            root_digest=f"sha256:{root.hex()}",
            dest=dest,
            credentials_dir=credentials,
            parallel=args.parallel,
            # As the operator starts it: bound to the server the TrustPolicy names.
            source_endpoint=server.endpoint,
            signature_endpoint=server.endpoint,
        )
        cases: list[tuple[str, Callable[[], object]]] = []
        if curl := shutil.which("curl"):
            cases.append(
                (
                    f"reference: curl --parallel {args.parallel}, to files",
                    lambda: plain_curl(curl, base_url, names, dest, parallel=args.parallel),
                )
            )
        aiohttp_case = f"reference: aiohttp GET x{args.parallel}, to files"
        agent_case = f"agent fetch-verify --parallel {args.parallel} (SigV4)"
        cases += [
            (aiohttp_case, lambda: plain_aiohttp(base_url, names, dest, parallel=args.parallel)),
            (agent_case, lambda: fetchverify.fetch_verify(options)),
        ]
        if args.diagnose:
            cases.append(
                (
                    "  diagnostic: the agent, SHA-256 stubbed out",
                    lambda: _without_hashing(fetchverify.fetch_verify(options)),
                )
            )
        results = {name: Figures() for name, _ in cases}
        assert server.pid is not None
        # Interleaved, so that a busy moment of a shared machine does not favour one case.
        for _ in range(args.runs):
            for name, run in cases:
                timed_once(run, dest=dest, server_pid=server.pid, into=results[name])
        hashing = statistics.median(sha256_cpu(total) for _ in range(args.runs))
    print(
        f"model: {len(sizes)} files, {total / MIB:.0f} MiB; {args.runs} runs, median [min-max]; "
        f"{os.cpu_count()} CPUs (MinIO on the same machine)"
    )
    print(
        f"{'what':<44} {'MiB/s':>6} {'s':>5} {'[min-max]':>11} {'vs aiohttp':>10} "
        f"{'client CPU s':>12} {'MinIO CPU s':>11}"
    )
    reference = results[aiohttp_case]
    for name, figures in results.items():
        seconds = figures.median
        print(
            f"{name:<44} {total / MIB / seconds:>6.0f} {seconds:>5.2f} "
            f"{f'[{min(figures.seconds):.2f}-{max(figures.seconds):.2f}]':>11} "
            f"{reference.median / seconds:>10.0%} {statistics.median(figures.client_cpu):>12.2f} "
            f"{statistics.median(figures.server_cpu):>11.2f}"
        )
    agent = results[agent_case]
    plain_cpu = statistics.median(reference.client_cpu) + statistics.median(reference.server_cpu)
    extra = statistics.median(agent.client_cpu) - statistics.median(reference.client_cpu)
    # When the download already keeps every core busy (client plus MinIO), hashing's CPU can only
    # add wall time: this is the best ratio such a machine allows.
    ceiling = plain_cpu / (plain_cpu + hashing)
    print(
        f"sha256 of {total / MIB:.0f} MiB on one core: {hashing:.2f} CPU s; the agent's client "
        f"CPU over the plain download's: {extra:.2f} s. Where the plain download is CPU-bound, "
        f"the agent can reach at most (client + MinIO) / (client + MinIO + sha256) = {ceiling:.0%}"
    )


def signedmodel_credentials(work: Path, server: s3server.S3Server) -> Path:
    """The server's credentials as a mounted Secret would hold them (one file per key)."""
    directory = work / "credentials"
    directory.mkdir()
    data = {
        "AWS_ACCESS_KEY_ID": server.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": server.credentials.secret_key,
        "AWS_REGION": server.region,
        "AWS_ENDPOINT_URL": server.endpoint,
    }
    for key, value in data.items():
        (directory / key).write_text(value)
    return directory


if __name__ == "__main__":
    main()
