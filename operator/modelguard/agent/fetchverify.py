"""`modelguard agent fetch-verify`: the init container that fills a model pod's volume.

The operator verified the signature bundle against the TrustPolicy and pinned the root digest in
the pod spec. The agent reads the bundle, takes the statement with that digest (plan.py), checks
the source's listing against it, then streams every signed file into DEST, several at once, hashing
each in the same pass that writes it: the network read of the next chunk overlaps the hashing and
writing of the previous one, which run in worker threads, one per core at most (hashlib releases
the GIL). Once a file's digest matches, the whole file on disk is classified as `modelguard
verify` does (trust.formats: every member of an archive), before any model server can start. A
file whose digest differs, a code-capable format the policy does not allow (--allow-format), or
any source failure stops everything, and DEST is emptied again. Success leaves read-only files and
one summary line, in the termination log too (the operator's metrics read it); under a
TrustPolicy in Audit mode (--audit-formats) a code-capable file is admitted, and each one is
reported on an `audit UnsafeFormat: ...` line, in the termination log too, for the operator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import sys
import time
import typing
from pathlib import Path

from modelguard import sources
from modelguard.agent import destination, failures, plan
from modelguard.api import endpoints
from modelguard.sources import base, credentials, errors, locations, pvc
from modelguard.trust import bundle, folder, formats, policy, reasons, statement

DEFAULT_TERMINATION_LOG: typing.Final = Path("/dev/termination-log")
DEFAULT_PARALLEL: typing.Final = 4
# The most bytes written in all when --max-bytes is not given: the files serialization signs
# digests only, so without a bound a source could fill the volume before a digest says no.
DEFAULT_MAX_BYTES: typing.Final = 16 << 30
# Chunks are gathered to about this size before a worker thread hashes and writes them: fewer
# thread hand-offs, and hashlib releases the GIL for the whole batch.
BATCH_BYTES: typing.Final = 4 << 20
# Kubernetes keeps at most 4096 bytes of a termination message.
_MAX_MESSAGE: typing.Final = 4000


@dataclasses.dataclass(frozen=True)
class Options:
    source: str
    signature: str
    root_digest: str
    dest: Path
    credentials_dir: Path | None = None
    allow_formats: frozenset[str] = frozenset()
    """Code-capable format families admitted (formats.Family values): spec.formats.allow."""
    audit_formats: bool = False
    """Admit code-capable files the policy does not allow but report each one: the TrustPolicy's
    enforcement is Audit."""
    # sha256:HEX of the signature file the operator verified; None: only the root digest binds.
    signature_digest: str | None = None
    parallel: int = DEFAULT_PARALLEL
    chunk_size: int = base.DEFAULT_CHUNK_SIZE
    # Where pvc:// sources are mounted (the pod spec mounts each claim below it).
    mount_root: Path = pvc.DEFAULT_MOUNT_ROOT
    # The most bytes written in all (the model volume's bound): the operator passes the signed
    # total for shards, spec.model.maxBytes for the files serialization, whose manifest has no
    # sizes. Each file is bounded on its own by its signed (or else listed) size.
    max_bytes: int = DEFAULT_MAX_BYTES
    # The S3 endpoints the TrustPolicy binds the source and the signature to (None: AWS S3); a
    # credentials Secret naming another is refused.
    source_endpoint: str | None = None
    signature_endpoint: str | None = None
    # Host names may resolve to private addresses: the TrustPolicy source allows it.
    source_private_addresses: bool = False
    signature_private_addresses: bool = False


@dataclasses.dataclass(frozen=True)
class Summary:
    root_digest: bytes
    files: int
    bytes: int
    seconds: float
    audit: tuple[reasons.Violation, ...] = ()
    """Violations admitted because the TrustPolicy's enforcement is Audit."""

    def line(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        return (
            f"fetched and verified root sha256:{self.root_digest.hex()} files {self.files} "
            f"bytes {self.bytes} seconds {self.seconds:.2f} MB/s {rate:.1f}"
        )


Failure = reasons.VerificationError | errors.SourceError | failures.AgentError


def run(options: Options, *, termination_log: Path = DEFAULT_TERMINATION_LOG) -> int:
    """The command: 0 and a summary line on stdout, or 1 and `REASON: message` on stderr and in
    the termination log."""
    try:
        summary = asyncio.run(fetch_verify(options))
    except (reasons.VerificationError, errors.SourceError, failures.AgentError) as error:
        line = reason_line(error)
        print(line, file=sys.stderr)
        _write_termination_log(termination_log, line)
        return 1
    for violation in summary.audit:
        print(f"audit {violation}", file=sys.stderr)
    # The kubelet keeps it as the container's termination message, exit 0 or not: the operator
    # reports what was admitted from there, and counts the run in its metrics (bytes, seconds)
    # from the summary line, which comes first so that a long audit list cannot cut it.
    _write_termination_log(
        termination_log,
        "\n".join([summary.line(), *(f"audit {v}" for v in summary.audit)])[:_MAX_MESSAGE],
    )
    print(summary.line())
    return 0


def reason_line(error: Failure) -> str:
    """One line, `REASON: message`, short enough for a termination message."""
    message = " ".join(str(error.message).split())
    return f"{error.reason}: {message}"[:_MAX_MESSAGE]


def _write_termination_log(path: Path, line: str) -> None:
    # Outside a pod there is no such file (or it is not ours): stderr has said it already.
    with contextlib.suppress(OSError):
        path.write_text(line + "\n")


async def fetch_verify(options: Options) -> Summary:
    """Fills `options.dest` with the verified model, or raises with DEST left empty."""
    started = time.monotonic()
    if options.parallel < 1:
        raise failures.AgentError(failures.INVALID_ARGUMENT, "--parallel must be at least 1")
    if options.max_bytes < 1:
        raise failures.AgentError(failures.INVALID_ARGUMENT, "--max-bytes must be at least 1")
    pinned = plan.parse_root_digest(options.root_digest)
    pinned_signature = (
        None
        if options.signature_digest is None
        else plan.parse_root_digest(options.signature_digest, flag="--signature-digest")
    )
    dest = destination.Destination(options.dest)
    # Emptied before anything is read: whatever refuses the model from here on (the bundle, the
    # listing, a byte), the volume is left holding nothing, not what an earlier run wrote.
    await asyncio.to_thread(dest.prepare)
    try:
        return await _fetch_into(
            dest, options, pinned=pinned, pinned_signature=pinned_signature, started=started
        )
    except BaseException:
        # A DEST that cannot be cleared has already said so; the first failure is the news.
        with contextlib.suppress(failures.AgentError):
            await asyncio.to_thread(dest.clear)
        raise


async def _fetch_into(
    dest: destination.Destination,
    options: Options,
    *,
    pinned: bytes,
    pinned_signature: bytes | None,
    started: float,
) -> Summary:
    settings = _settings(options)
    signature_settings = credentials.with_private_addresses(
        _bound(
            settings, uri=options.signature, endpoint=options.signature_endpoint, which="signature"
        ),
        allowed=options.signature_private_addresses,
    )
    source_settings = credentials.with_private_addresses(
        _bound(settings, uri=options.source, endpoint=options.source_endpoint, which="source"),
        allowed=options.source_private_addresses,
    )
    signature_source, signature_name = sources.open_file(
        options.signature,
        s3_settings=signature_settings.s3,
        transport_settings=signature_settings.transport,
        mount_root=options.mount_root,
    )
    async with signature_source:
        signature = await signature_source.read_small(
            signature_name, max_bytes=bundle.MAX_SIGNATURE_FILE_BYTES
        )
    if pinned_signature is not None:
        plan.check_signature_digest(signature, pinned_signature)
    signed = plan.pinned_statement(signature, pinned)
    source = sources.open_source(
        options.source,
        s3_settings=source_settings.s3,
        transport_settings=source_settings.transport,
        mount_root=options.mount_root,
    )
    async with source:
        listing = await source.list_files() if source.can_list else None
        inside = plan.signature_name(
            source_folder=str(locations.parse(options.source)),
            signature_folder=str(locations.parse_file(options.signature)[0]),
            name=signature_name,
        )
        todo = plan.files_to_fetch(
            signed, listing=listing, also_ignored=() if inside is None else (inside,)
        )
        plan.check_bound(todo, max_bytes=options.max_bytes)
        # Hashing threads beyond the cores only take turns with the event loop that receives:
        # with 4 files on 2 cores, 2 threads fetch faster than 4.
        workers = min(options.parallel, folder.available_cores())
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="fetch-verify"
        ) as pool:
            fetcher = _Fetcher(source=source, dest=dest, pool=pool, options=options, signed=signed)
            try:
                total = await fetcher.fetch_all(todo)
                # Keras loads a folder as a model: judged once all its files are there.
                await fetcher.run_blocking(fetcher.check_folders)
                await fetcher.run_blocking(dest.seal)
            except BaseException:
                # Threads still writing must finish before their files are removed.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return Summary(
        root_digest=signed.root_digest,
        files=len(todo),
        bytes=total,
        seconds=time.monotonic() - started,
        audit=tuple(sorted(fetcher.audit, key=lambda violation: violation.message)),
    )


def _bound(
    settings: credentials.SourceSettings, *, uri: str, endpoint: str | None, which: str
) -> credentials.SourceSettings:
    """The settings reading `uri`: for S3, from the endpoint the pod spec binds it to."""
    if not uri.lower().startswith("s3://"):
        return settings
    flag = f"--{which}-endpoint"
    try:
        normal = endpoints.normal(endpoint) if endpoint is not None else None
    except ValueError as error:
        raise failures.AgentError(failures.INVALID_ARGUMENT, f"{flag} {error}") from None
    return credentials.bind_endpoint(settings, endpoint=normal, bound_by=flag)


def _settings(options: Options) -> credentials.SourceSettings:
    if options.credentials_dir is not None:
        settings = credentials.from_directory(options.credentials_dir)
    else:
        settings = credentials.from_secret_data({})
    # One connection per file in flight, plus the listing's.
    connections = max(settings.transport.max_connections, options.parallel + 1)
    return dataclasses.replace(
        settings, transport=dataclasses.replace(settings.transport, max_connections=connections)
    )


class _Fetcher:
    def __init__(
        self,
        *,
        source: base.Source,
        dest: destination.Destination,
        pool: concurrent.futures.ThreadPoolExecutor,
        options: Options,
        signed: statement.Statement,
    ) -> None:
        self._source = source
        self._dest = dest
        self._pool = pool
        self._options = options
        self._serialization = signed.serialization
        self._names: list[str] = []
        """Every file of the model: an unpickler could import one by its name."""
        self._slots = asyncio.Semaphore(options.parallel)
        # Bytes received over all files: the event loop alone counts, so no lock is needed.
        self._received = 0
        self.audit: list[reasons.Violation] = []
        """Code-capable files admitted under --audit-formats."""

    async def run_blocking(self, call: typing.Callable[[], typing.Any]) -> typing.Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def fetch_all(self, todo: list[plan.FileToFetch]) -> int:
        self._names = [item.path for item in todo]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._fetch(item)) for item in todo]
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None
        return sum(task.result() for task in tasks)

    async def _fetch(self, item: plan.FileToFetch) -> int:
        async with self._slots:
            serialization = self._serialization
            out: destination.OutputFile = await self.run_blocking(
                lambda: self._dest.create(
                    item.path,
                    hash_type=serialization.hash_type,
                    shard_size=serialization.shard_size,
                )
            )
            try:
                await self._stream_into(item, out)
                actual = await self.run_blocking(out.finish)
            finally:
                out.close()
            plan.check_file(item, actual)
            if not self._options.allow_formats >= formats.EVERY_FAMILY:
                await self.run_blocking(lambda: self._check_format(item.path, size=out.size))
            return out.size

    async def _stream_into(self, item: plan.FileToFetch, out: destination.OutputFile) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        received = 0
        stream = self._source.stream(item.path, chunk_size=self._options.chunk_size)
        try:
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    received += len(chunk)
                    self._received += len(chunk)
                    if item.size is not None and received > item.size:
                        # A source that sends more than it listed (or than was signed) would
                        # fill the volume before the digest could say no.
                        raise reasons.VerificationError(
                            reasons.Reason.DIGEST_MISMATCH,
                            f"file {item.path!r} is longer than the {item.size} bytes the "
                            "source listed or the signature holds",
                        )
                    if self._received > self._options.max_bytes:
                        # A source that cannot list, or lists what it likes, meets the bound here.
                        raise reasons.VerificationError(
                            reasons.Reason.MODEL_TOO_LARGE,
                            f"the model's files exceed the {self._options.max_bytes} bytes the "
                            "volume is bounded to (--max-bytes, from spec.model.maxBytes or the "
                            f"signed sizes); stopped in file {item.path!r}",
                        )
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched < BATCH_BYTES:
                        continue
                    # At most one batch in a thread and one being gathered: bounded memory.
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(self._pool, out.write, batch)
                    batch, batched = [], 0
            if pending is not None:
                await pending
                pending = None
            if batch:
                await loop.run_in_executor(self._pool, out.write, batch)
        finally:
            if pending is not None:
                # The thread must be done with the file before it is closed.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)

    def _check_format(self, name: str, *, size: int) -> None:
        # The file is complete on disk and matches its digest: every member can be read.
        found = folder.sniff(
            self._dest.root, folder.LocalFile(path=name, size=size), model_files=self._names
        )
        self._admit({name: found})

    def check_folders(self) -> None:
        if not self._options.allow_formats >= formats.EVERY_FAMILY:
            self._admit(folder.keras_folders(self._dest.root, self._names))

    def _admit(self, found: dict[str, formats.Finding]) -> None:
        violation = policy.check_formats(found, allowed=self._options.allow_formats)
        if violation is None:
            return
        if self._options.audit_formats:
            self.audit.append(
                dataclasses.replace(
                    violation,
                    message=f"{violation.message}; admitted because the TrustPolicy's "
                    "enforcement is Audit",
                )
            )
            return
        raise reasons.VerificationError.of(violation)


def _first(group_error: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that stopped the downloads, not the cancellations it caused."""
    for error in group_error.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group_error
