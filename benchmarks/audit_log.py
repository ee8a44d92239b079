"""What the audit log costs to write and to verify, next to references measured in the same run on
the same records, and that both stay bounded in memory as the log grows.

Writing: records per second through the sink (canonical JSON, SHA-256, the Ed25519 signature,
the tree's frontier, a checkpoint every 1,000 records), next to the chain of 0006 (canonical
JSON and SHA-256 only) and the HMAC seal of 0014 on the same fields. The writer's state: the
frontier's hash count at each size (one per set bit, at most 64).

Verifying: records per second of `audit verify` (signature, hash, chain, tree, every checkpoint)
over logs of --records and 4x --records records, next to json.loads of every line (the least any
verifier of JSON lines does), and the verifier's peak Python allocation (tracemalloc) for each:
it must not grow with the log beyond the checkpoints it holds. Figures are printed, never asserted.

    python benchmarks/audit_log.py [--records 20000]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import hmac
import io
import json
import time
import tracemalloc
import typing

from modelguard.audit import chain, checkpoints, keys, merkle, records, sink

T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
SUBJECT = records.Subject(
    api_version="modelguard.dev/v1alpha1",
    kind="ModelDeployment",
    namespace="team-nlp",
    name="sentiment",
    uid="0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b",
    generation=3,
)


def _write(signer: keys.Signer, count: int) -> tuple[list[str], list[checkpoints.Signed], float]:
    out = io.StringIO()
    started = time.perf_counter()
    audit = sink.start(
        out,
        instance="modelguard-0",
        signer=signer,
        cadence=sink.Cadence(records=1000, seconds=10**9),
        clock=lambda: T0,
    )
    made = [audit.checkpoint(force=True)]
    for number in range(1, count):
        audit.record(
            records.Decision.VERIFIED,
            reason="SignatureVerified",
            message=f"model sentiment version 1.{number}.0 verified: signed by ml-release",
            subject=SUBJECT,
            details={"version": f"1.{number}.0", "digest": "sha256:" + "ab" * 32},
        )
        made.append(audit.checkpoint())
    made.append(audit.close(reason="OperatorStopped", message="stop"))
    elapsed = time.perf_counter() - started
    return out.getvalue().splitlines(), [c for c in made if c is not None], elapsed


def _reference_seals(lines: list[str]) -> tuple[float, float]:
    """Seconds to hash (0006) and to hash and HMAC (0014) the same records' fields."""
    fields = [
        {k: v for k, v in json.loads(line).items() if k not in {"hash", "sig"}} for line in lines
    ]
    secret = b"k" * 32
    started = time.perf_counter()
    for record in fields:
        record["hash"] = records.digest(record)
        records.line(record)
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    for record in fields:
        record["hash"] = records.digest(record)
        record["mac"] = hmac.new(secret, record["hash"].encode(), hashlib.sha256).hexdigest()
        records.line(record)
    return hashed, time.perf_counter() - started


def _verify(
    lines: list[str], made: list[checkpoints.Signed], keyring: keys.Keyring
) -> tuple[chain.Result, float]:
    started = time.perf_counter()
    anchors = chain.load_anchors(((str(n), c.note) for n, c in enumerate(made)), keyring=keyring)
    result = chain.verify(iter(lines), keyring=keyring, anchors=anchors)
    return result, time.perf_counter() - started


def _peak(function: typing.Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _parse_only(lines: list[str]) -> float:
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    signer = keys.generate("modelguard-system/modelguard")
    keyring = keys.Keyring.of([signer.verifier])
    print(f"audit log: write and verify, {args.records} and {4 * args.records} records")
    for count in (args.records, 4 * args.records):
        lines, made, wrote = _write(signer, count)
        hashed, sealed = _reference_seals(lines)
        size = sum(len(line) + 1 for line in lines)
        print(
            f"  write {count:>7} records: {count / wrote:>8.0f}/s signed and checkpointed"
            f" ({len(made)} checkpoints, {size / count:.0f} bytes a record)"
            f" | reference: {count / hashed:>8.0f}/s hash chain (0006),"
            f" {count / sealed:>8.0f}/s hash chain + HMAC (0014)"
        )
        result, verified = _verify(lines, made, keyring)
        assert result.intact, result.summary()
        parsed = _parse_only(lines)
        # A fresh iterator over lines already in memory: what the verifier itself allocates.
        peak = _peak(functools.partial(_verify, lines, made, keyring))
        print(
            f"  verify {count:>6} records: {count / verified:>8.0f}/s, peak allocation"
            f" {peak / 1024:>7.0f} KiB ({len(made)} checkpoints held)"
            f" | reference: {count / parsed:>8.0f}/s json.loads of every line"
        )
    frontier = merkle.Frontier()
    widest = 0
    for _ in range(4 * args.records):
        frontier.append(b"\x00" * 32)
        widest = max(widest, frontier.hashes)
    print(
        f"  the writer's tree state: at most {widest} hashes over {4 * args.records} records"
        f" (one per set bit of the size; 64 at most for any log)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
