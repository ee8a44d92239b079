"""Backup and restore throughput against a local MinIO with object lock, next to a plain S3 copy
of the same bytes in the same run (the same client, the same files in flight, no verification,
no read-back, no lock): the backup re-hashes every file against its signature while copying,
reads every object back and verifies it, and signs a manifest; the restore verifies the manifest,
the model's signature and every file as it streams into the model's bucket. Also: the operator's
event loop while a backup runs on the backup worker's thread, and the process's peak memory.
Figures are printed, never asserted; the target is a backup (and a restore) at 80 % of the copy.

Run: PYTHONPATH=hack .venv/bin/python benchmarks/backup_throughput.py [--size-gib 2] [--files 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import hashlib
import os
import resource
import statistics
import tempfile
import time
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

import s3server
import signedmodel
from modelguard import sources
from modelguard.backup import copy, layout, manifest, restore, stores, worker
from modelguard.sources import credentials, s3objects
from modelguard.trust import policy, signatures

MIB = 1 << 20
PARALLEL = copy.DEFAULT_PARALLEL


def _settings(server: s3server.S3Server) -> credentials.SourceSettings:
    found = credentials.from_secret_data(
        {
            "AWS_ACCESS_KEY_ID": server.access_key.encode(),
            "AWS_SECRET_ACCESS_KEY": server.secret_key.encode(),
        }
    )
    return credentials.bind_endpoint(found, endpoint=server.endpoint, bound_by="the benchmark")


async def _plain_copy(
    server: s3server.S3Server,
    *,
    source_uri: str,
    names: list[tuple[str, int]],
    bucket: str,
    prefix: str,
) -> None:
    """GET each file and PUT it elsewhere as it arrives, PARALLEL at once: `aws s3 cp`'s work."""
    settings = _settings(server)
    source = sources.open_source(
        source_uri, s3_settings=settings.s3, transport_settings=settings.transport
    )
    target = s3objects.S3Bucket(bucket, settings=settings.s3, transport_settings=settings.transport)
    slots = asyncio.Semaphore(PARALLEL)

    async def one(name: str, size: int) -> None:
        async with slots:
            await target.put(
                f"{prefix}{name}",
                lambda: source.stream(name),
                size=size,
                sha256=None,
                retention=None,
                create_only=False,
            )

    async with source, target:
        await asyncio.gather(*(one(name, size) for name, size in names))


def _store(server: s3server.S3Server, prefix: str) -> stores.Store:
    return stores.open_s3(
        bucket="vault",
        prefix=prefix,
        settings=_settings(server),
        mode="COMPLIANCE",
        description=f"vault/{prefix}",
    )


async def _backup(server: s3server.S3Server, request: copy.Request, prefix: str) -> copy.Result:
    store = _store(server, prefix)
    try:
        return await copy.back_up(store, request)
    finally:
        await store.aclose()


async def _restore(
    server: s3server.S3Server,
    *,
    prefix: str,
    backup: str,
    key: manifest.BackupKey,
    rules: policy.Rules,
    into: str,
) -> restore.Restored:
    store = _store(server, prefix)
    settings = _settings(server)
    target = restore.S3Destination(
        s3objects.S3Bucket("models", settings=settings.s3, transport_settings=settings.transport),
        prefix=into,
    )
    try:
        opened = await restore.open_backup(
            store, namespace="bench", name="m", backup=backup, keys=[key.public]
        )
        return await restore.restore(
            store,
            opened,
            rules=rules,
            destination=target,
            approvals_policy=None,
            now=datetime.datetime.now(datetime.UTC),
        )
    finally:
        await target.aclose()
        await store.aclose()


CPU: dict[str, list[float]] = {}
"""CPU seconds each case cost this process and MinIO together: on a shared machine wall time
depends on the neighbours, the work done does not."""


def _own_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _cpu(server: s3server.S3Server) -> float:
    fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return _own_cpu() + (int(fields[11]) + int(fields[12])) / ticks


def _timed(
    run: Callable[[], Awaitable[typing.Any]], *, server: s3server.S3Server, case: str
) -> float:
    cpu, own = _cpu(server), _own_cpu()
    started = time.perf_counter()
    asyncio.run(run())  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    CPU.setdefault(case, []).append(_cpu(server) - cpu)
    CPU.setdefault(f"{case}, client", []).append(_own_cpu() - own)
    return seconds


async def _loop_lag(
    during: Callable[[], Awaitable[typing.Any]] | None, *, seconds: float
) -> list[float]:
    """How late a 10 ms timer of this loop fires, in ms, while `during` runs elsewhere."""
    lags: list[float] = []
    task = asyncio.ensure_future(during()) if during is not None else None
    deadline = time.perf_counter() + seconds
    while (task is not None and not task.done()) or (
        task is None and time.perf_counter() < deadline
    ):
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - started - 0.01) * 1000)
    if task is not None:
        await task
    return lags


@dataclasses.dataclass(frozen=True)
class Bench:
    """The model published in MinIO, and what backing it up needs."""

    server: s3server.S3Server
    names: list[tuple[str, int]]
    signature: bytes
    root_digest: str
    key: manifest.BackupKey
    rules: policy.Rules
    mib: float

    def request(self, number: int) -> copy.Request:
        at = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(minutes=number)
        settings = _settings(self.server)
        return copy.Request(
            backup=layout.backup_id(at=at, root_digest=self.root_digest),
            namespace="bench",
            name="m",
            source=copy.Source(
                uri="s3://models/m/",
                signature_uri="s3://models/m/model.sig",
                settings=settings,
                signature_settings=settings,
                root_digest=self.root_digest,
                signature_digest=f"sha256:{hashlib.sha256(self.signature).hexdigest()}",
            ),
            documents={
                layout.CONTEXT: layout.document(_context(self.root_digest)),
                layout.MODEL_DEPLOYMENT: layout.document({"kind": "ModelDeployment"}),
            },
            retain_until=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            key=self.key,
        )


def _prepare(server: s3server.S3Server, root: Path, *, total: int, files: int) -> Bench:
    """A model of `files` random files, signed with model_signing, published to MinIO."""
    per_file = total // files
    model = root / "model"
    model.mkdir()
    for number in range(files):
        with (model / f"shard-{number:02d}.bin").open("wb") as out:
            for _ in range(per_file // MIB):
                out.write(os.urandom(MIB))
    key_path, public_pem = signedmodel.generate_key(root)
    signature = signedmodel.sign(model, private_key=key_path, signature=root / "model.sig")
    server.create_bucket("models")
    server.create_bucket("vault", object_lock=True)
    for path in sorted(model.iterdir()):
        server.put_object("models", f"m/{path.name}", path)
        path.unlink()
    server.put_object("models", "m/model.sig", signature)
    signer = signatures.load_public_key(public_pem.encode(), field="bench")
    return Bench(
        server=server,
        names=[(f"shard-{n:02d}.bin", per_file) for n in range(files)],
        signature=signature,
        root_digest=signedmodel.root_digest(signature),
        key=manifest.BackupKey(ec.generate_private_key(ec.SECP256R1())),
        rules=policy.Rules(signers=(signatures.KeySigner("release", signer),)),
        mib=total / MIB,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = int(args.size_gib * 1024) * MIB
    with tempfile.TemporaryDirectory() as tmp, s3server.running(Path(tmp) / "s3") as server:
        bench = _prepare(server, Path(tmp), total=total, files=args.files)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        copies, backups = [], []
        last: copy.Result | None = None
        for run in range(args.runs):
            copies.append(
                _timed(
                    functools.partial(
                        _plain_copy,
                        server,
                        source_uri="s3://models/m/",
                        names=bench.names,
                        bucket="vault",
                        prefix=f"copy-{run}/",
                    ),
                    server=server,
                    case="copy",
                )
            )
            spent, own = _cpu(server), _own_cpu()
            started = time.perf_counter()
            last = asyncio.run(_backup(server, bench.request(run), f"backup-{run}/"))
            backups.append(time.perf_counter() - started)
            CPU.setdefault("backup", []).append(_cpu(server) - spent)
            CPU.setdefault("backup, client", []).append(_own_cpu() - own)
        assert last is not None
        rss_backup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stored = f"backup-{args.runs - 1}/"
        objects = [
            (f"objects/sha256/{_digest_of(bench.signature, name)}", name, size)
            for name, size in bench.names
        ]
        plain_restores, restores = [], []
        for run in range(args.runs):
            plain_restores.append(
                _timed(
                    functools.partial(
                        _plain_copy_objects,
                        server,
                        objects=objects,
                        prefix=stored,
                        into=f"plain-{run}/",
                    ),
                    server=server,
                    case="plain restore",
                )
            )
            restores.append(
                _timed(
                    functools.partial(
                        _restore,
                        server,
                        prefix=stored,
                        backup=last.backup,
                        key=bench.key,
                        rules=bench.rules,
                        into=f"restored-{run}/",
                    ),
                    server=server,
                    case="restore",
                )
            )
        # A second backup of the same files: nothing is written again, every object is read back.
        spent = _cpu(server)
        started = time.perf_counter()
        again = asyncio.run(_backup(server, bench.request(args.runs), stored))
        again_seconds = time.perf_counter() - started
        read_back_cpu = _cpu(server) - spent
        hash_cpu = _sha256_cpu(total)
        idle, busy = _lags(bench, number=args.runs + 1)
        print(
            f"{bench.mib:.0f} MiB model in {args.files} files, {PARALLEL} files in flight, "
            f"{args.runs} runs each, best of them; MinIO on loopback, object lock (Compliance)"
        )
        print(f"{'what':<62} {'MiB/s':>8} {'s':>7} {'of ref':>7}")
        _row("reference: plain S3 copy, models -> vault (GET, PUT)", bench.mib, min(copies), None)
        _row(
            "backup: re-hashed, read back, verified, manifest signed",
            bench.mib,
            min(backups),
            min(copies),
        )
        _row(
            "reference: plain S3 copy, vault -> models (GET, PUT)",
            bench.mib,
            min(plain_restores),
            None,
        )
        _row(
            "restore: manifest, signature, every file verified, into S3",
            bench.mib,
            min(restores),
            min(plain_restores),
        )
        _pairs("backup", copies, backups)
        _pairs("restore", plain_restores, restores)
        _row(
            f"second backup of the same files (wrote {again.written_bytes} bytes)",
            bench.mib,
            again_seconds,
            min(copies),
        )
        cpu = {case: statistics.median(seconds) for case, seconds in CPU.items()}
        print(
            "CPU seconds (this process and MinIO), median: copy "
            f"{cpu['copy']:.1f}, backup {cpu['backup']:.1f} "
            f"({cpu['copy'] / cpu['backup'] * 100:.0f}% of the work per byte); plain restore "
            f"{cpu['plain restore']:.1f}, restore {cpu['restore']:.1f} "
            f"({cpu['plain restore'] / cpu['restore'] * 100:.0f}%)"
        )
        # What the guarantees alone cost on this machine, measured in this run: every byte read
        # back and hashed (the second backup is that, and a few small documents), and hashed
        # once more while copying. The copy plus that work is what a backup that wasted nothing
        # would cost; the backup's own figure next to it shows what is left to save.
        floor = cpu["copy"] + read_back_cpu + hash_cpu
        print(
            f"  the guarantees' own work: reading back and hashing every byte {read_back_cpu:.1f} "
            f"(the second backup), one SHA-256 pass {hash_cpu:.1f}; the copy plus that work is "
            f"{cpu['copy'] / floor * 100:.0f}% of the copy's work per byte, the backup "
            f"{cpu['copy'] / cpu['backup'] * 100:.0f}%"
        )
        print(
            "  of which the client (what an operator pays, the store elsewhere): copy "
            f"{cpu['copy, client']:.1f}, backup {cpu['backup, client']:.1f}; plain restore "
            f"{cpu['plain restore, client']:.1f}, restore {cpu['restore, client']:.1f}"
        )
        print(
            f"event loop 10 ms timer, late by: idle p50 {statistics.median(idle):.2f} ms, p99 "
            f"{_p99(idle):.2f} ms; during a backup on the worker thread p50 "
            f"{statistics.median(busy):.2f} ms, p99 {_p99(busy):.2f} ms, max {max(busy):.1f} ms"
        )
        print(
            f"peak RSS of this process: {rss_before / 1024:.0f} MiB before the backups, "
            f"{rss_backup / 1024:.0f} MiB after"
        )


def _sha256_cpu(total: int) -> float:
    """CPU seconds of one SHA-256 pass over `total` bytes, in the backup's 4 MiB batches of
    network-sized pieces (hashlib, as the backup's hashing threads run it)."""
    pieces = [os.urandom(64 << 10) for _ in range(64)]
    batch = sum(len(piece) for piece in pieces)
    digest = hashlib.sha256()
    own = _own_cpu()
    for _ in range(total // batch):
        for piece in pieces:
            digest.update(piece)
    return _own_cpu() - own


def _lags(bench: Bench, *, number: int) -> tuple[list[float], list[float]]:
    """How late the event loop's timers fire, idle and while a backup runs on the worker."""
    runner = worker.Worker()
    try:
        idle = asyncio.run(_loop_lag(None, seconds=5))
        busy = asyncio.run(
            _loop_lag(
                lambda: runner.submit(
                    functools.partial(_backup, bench.server, bench.request(number), "backup-lag/")
                ),
                seconds=0,
            )
        )
    finally:
        runner.close()
    return idle, busy


def _context(root_digest: str) -> dict[str, typing.Any]:
    return {
        "apiVersion": layout.API_VERSION,
        "kind": "BackupContext",
        "model": {"name": "m", "version": "1", "rootDigest": root_digest},
        "modelDeployment": {"namespace": "bench", "name": "m"},
    }


def _digest_of(signature: bytes, name: str) -> str:
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415

    envelope = json.loads(signature)["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    for resource_ in statement["predicate"]["resources"]:
        if resource_["name"] == name:
            return str(resource_["digest"])
    raise KeyError(name)


async def _plain_copy_objects(
    server: s3server.S3Server,
    *,
    objects: list[tuple[str, str, int]],
    prefix: str,
    into: str,
) -> None:
    settings = _settings(server)
    vault = s3objects.S3Bucket("vault", settings=settings.s3, transport_settings=settings.transport)
    target = s3objects.S3Bucket(
        "models", settings=settings.s3, transport_settings=settings.transport
    )
    slots = asyncio.Semaphore(PARALLEL)

    async def one(key: str, name: str, size: int) -> None:
        async with slots:
            await target.put(
                f"{into}{name}",
                lambda: vault.stream(prefix + key),
                size=size,
                sha256=None,
                retention=None,
                create_only=False,
            )

    async with vault, target:
        await asyncio.gather(*(one(*item) for item in objects))


def _row(name: str, mib: float, seconds: float, reference: float | None) -> None:
    share = f"{reference / seconds * 100:>6.0f}%" if reference is not None else f"{'':>7}"
    print(f"{name:<62} {mib / seconds:>8.0f} {seconds:>7.2f} {share}")


def _pairs(name: str, references: list[float], measured: list[float]) -> None:
    """Each run's figure next to the reference measured just before it: on a shared machine the
    ratio of neighbours says more than the best of each."""
    ratios = [
        reference / seconds * 100 for reference, seconds in zip(references, measured, strict=True)
    ]
    shown = ", ".join(f"{ratio:.0f}%" for ratio in ratios)
    median = statistics.median(ratios)
    print(f"  {name} per run, of the copy just before it: {shown} (median {median:.0f}%)")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


if __name__ == "__main__":
    main()
