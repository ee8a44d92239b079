"""What the audit log writes, checked by code that is not ours: Go's golang.org/x/mod/sumdb/note
opens the checkpoints, golang.org/x/mod/sumdb/tlog computes the tree over the record lines and
checks our inclusion and consistency proofs (and makes its own, which must be ours byte for
byte), and crypto/ed25519 checks the records' signatures (tests/tlogcheck)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import typing
from pathlib import Path

import pytest

import localcluster
from modelguard.audit import checkpoints, keys, merkle, records, sink

SOURCE = Path(__file__).resolve().parents[1] / "tlogcheck"
T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def tlogcheck() -> Path:
    """The Go verifier, built once per (sources, Go version) into the binary cache."""
    go = shutil.which("go")
    assert go is not None, "Go builds the independent verifier (tests/tlogcheck)"
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    version = subprocess.run(
        [go, "env", "GOVERSION"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    digest = hashlib.sha256(version.encode() + b"\0")
    for source in sorted(SOURCE.iterdir()):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    destination = localcluster.cache_root() / f"tlogcheck-{digest.hexdigest()[:16]}"
    binary = destination / "tlogcheck"
    if binary.is_file():
        return binary
    partial = destination.with_name(f"{destination.name}.partial.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(
        [go, "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
        cwd=SOURCE,
        env=env,
        check=True,
    )
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return binary


def _check(binary: Path, task: dict[str, typing.Any]) -> dict[str, typing.Any]:
    done = subprocess.run(
        [str(binary)],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, typing.Any] = json.loads(done.stdout)
    return answer


def _segment(
    signer: keys.Signer, count: int, *, every: int
) -> tuple[list[str], list[checkpoints.Signed]]:
    """A segment as the operator writes it, with a checkpoint every `every` records and at the
    start and the stop."""
    out = io.StringIO()
    audit = sink.Sink(
        out,
        signer=signer,
        origin=checkpoints.origin(signer.name, "20300102-030405-0a1b2c3d"),
        cadence=sink.Cadence(records=every, seconds=3600),
        clock=lambda: T0,
    )
    audit.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="start")
    made = [audit.checkpoint(force=True)]
    for number in range(1, count - 1):
        audit.record(
            records.Decision.VERIFIED,
            reason="SignatureVerified",
            message=f"decision {number} \u00e9\u2028",
            details={"version": f"1.{number}.0"},
        )
        made.append(audit.checkpoint())
    made.append(audit.close(reason="OperatorStopped", message="stop"))
    return out.getvalue().splitlines(), [c for c in made if c is not None]


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


def test_go_verifies_our_checkpoints_roots_proofs_and_signatures(tlogcheck: Path) -> None:
    signer = keys.generate("modelguard-system/modelguard")
    lines, made = _segment(signer, 37, every=5)
    leaves = [merkle.leaf_hash(line.encode()) for line in lines]
    sizes = range(1, len(lines) + 1)
    inclusion = [(i, n) for n in sizes for i in range(n)]
    consistency = [(m, n) for n in sizes for m in range(1, n + 1)]
    answer = _check(
        tlogcheck,
        {
            "vkeys": [signer.verifier.vkey],
            "notes": [c.note for c in made],
            "leaves": lines,
            "inclusion": [
                {
                    "index": i,
                    "size": n,
                    "proof": _b64(merkle.prove(merkle.inclusion_ranges(i, n), leaves)),
                }
                for i, n in inclusion
            ],
            "consistency": [
                {
                    "old": m,
                    "new": n,
                    "proof": _b64(merkle.prove(merkle.consistency_ranges(m, n), leaves)),
                }
                for m, n in consistency
            ],
            "records": lines,
        },
    )
    # The tree: Go's root at every size is ours.
    assert answer["roots"] == _b64([merkle.root(leaves[:n]) for n in sizes])
    # The checkpoints: Go opens every note with our verifier key, reads our key ID, and finds
    # the root it computes itself from the log's lines.
    assert [c.checkpoint.size for c in made] == [1, 6, 11, 16, 21, 26, 31, 36, 37]
    for note, checkpoint in zip(answer["notes"], made, strict=True):
        assert note == {
            "ok": True,
            "origin": checkpoint.checkpoint.origin,
            "size": checkpoint.checkpoint.size,
            "root": checkpoint.checkpoint.root_base64,
            "keyHash": signer.verifier.id,
            "rootMatches": True,
        }
    # The proofs: every one of ours verifies in Go, and Go's own are the same hashes.
    assert all(v["ok"] for v in answer["inclusion"]), answer["inclusion"]
    assert all(v["ok"] for v in answer["consistency"]), answer["consistency"]
    assert answer["proveRecord"] == [
        _b64(merkle.prove(merkle.inclusion_ranges(i, n), leaves)) for i, n in inclusion
    ]
    assert answer["proveTree"] == [
        _b64(merkle.prove(merkle.consistency_ranges(m, n), leaves)) for m, n in consistency
    ]
    # The records: each one's signature of its hash, under the log's name.
    assert answer["records"] == [{"ok": True}] * len(lines)


def test_go_refuses_what_was_changed(tlogcheck: Path) -> None:
    # The same checks fail on altered input: the test above can fail.
    signer = keys.generate("modelguard-system/modelguard")
    lines, made = _segment(signer, 9, every=4)
    leaves = [merkle.leaf_hash(line.encode()) for line in lines]
    other = keys.generate("modelguard-system/modelguard")
    forged_root = checkpoints.sign(
        checkpoints.Checkpoint(
            origin=made[-1].checkpoint.origin, size=9, root=merkle.leaf_hash(b"forged")
        ),
        other,
    )
    altered = made[-1].note.replace(
        made[-1].checkpoint.root_base64, forged_root.checkpoint.root_base64
    )
    edited = [*lines[:3], lines[3].replace("decision 3", "decision 4"), *lines[4:]]
    proof = merkle.prove(merkle.inclusion_ranges(3, 9), leaves)
    answer = _check(
        tlogcheck,
        {
            "vkeys": [signer.verifier.vkey],
            "notes": [altered, forged_root.note],
            "leaves": edited,
            # Record 3 as the log now holds it, against the root the checkpoint signed.
            "inclusion": [
                {
                    "index": 3,
                    "size": 9,
                    "proof": _b64(proof),
                    "root": made[-1].checkpoint.root_base64,
                }
            ],
            # Between the two checkpoints' signed roots: the proof of the history as it was
            # holds, the one the edited log gives does not.
            "consistency": [
                {
                    "old": 5,
                    "new": 9,
                    "proof": _b64(merkle.prove(merkle.consistency_ranges(5, 9), proof_leaves)),
                    "oldRoot": made[1].checkpoint.root_base64,
                    "newRoot": made[2].checkpoint.root_base64,
                }
                for proof_leaves in (leaves, [merkle.leaf_hash(line.encode()) for line in edited])
            ],
            "records": [lines[3], records.line({**json.loads(lines[3]), "message": "edited"})],
        },
    )
    assert (
        answer["notes"][0]["error"]
        == f"invalid signature for key {signer.name}+{signer.verifier.id}"
    )
    assert answer["notes"][1]["error"] == "note has no verifiable signatures"
    assert not answer["inclusion"][0]["ok"]
    assert [made[1].checkpoint.size, made[2].checkpoint.size] == [5, 9]
    assert [v["ok"] for v in answer["consistency"]] == [True, False]
    # The signature covers the hash: an edited message under the old hash still carries a valid
    # signature, which is why `audit verify` also recomputes each record's hash.
    assert answer["records"] == [{"ok": True}, {"ok": True}]
    resigned = records.line(
        {**json.loads(lines[3]), "sig": base64.b64encode(other.sign(b"x")).decode()}
    )
    second = _check(
        tlogcheck,
        {"vkeys": [signer.verifier.vkey], "notes": [], "leaves": [], "records": [resigned]},
    )
    assert second["records"] == [{"ok": False, "error": "the signature does not verify"}]
