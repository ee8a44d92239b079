"""Verification end to end: signature file + a TrustPolicy's rules (+ a local model folder) -> a
result.

`verify_signatures` is the control plane's check, pure on bytes: bundles verified against the
policy's signers, k-of-n, statements consistent, hash types allowed. `compare` is the manifest
comparison, pure. `verify_folder` is what `modelguard verify` runs: the same checks, then the
folder listed, hashed and sniffed, and refused on any missing, extra or changed file.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import typing

from modelguard.trust import bundle, digests, folder, policy, reasons, signatures, statement

# Names listed in a message at most; the count says how many more there are.
_LISTED: typing.Final = 3
# The bundles a signature file may hold: bundle.MAX_BUNDLES, counted before any is parsed.
MAX_BUNDLES: typing.Final = bundle.MAX_BUNDLES


@dataclasses.dataclass(frozen=True)
class SignedModel:
    """What the signatures establish, before any file is read."""

    statement: statement.Statement
    signers: tuple[signatures.Verified, ...]
    audit: tuple[reasons.Violation, ...]
    """Violations admitted because the policy's enforcement is Audit."""
    payload: bytes = b""
    """The signed statement as its first verified bundle carries it."""


@dataclasses.dataclass(frozen=True)
class Result:
    """A verified model: what status.verification records."""

    root_digest: bytes
    hash_type: str
    model_name: str
    signers: tuple[signatures.Verified, ...]
    files: int
    bytes: int
    audit: tuple[reasons.Violation, ...]

    def summary(self) -> str:
        names = ",".join(sorted({item.signer for item in self.signers}))
        return (
            f"verified root sha256:{self.root_digest.hex()} signer {names} "
            f"files {self.files} bytes {self.bytes}"
        )


def bundles_of(signature_file: bytes) -> list[bundle.Bundle]:
    """The bundles of a signature file, MalformedBundle when it holds more than MAX_BUNDLES."""
    return bundle.parse_signature_file(signature_file)


def verify_signatures(
    signature_file: bytes,
    rules: policy.Rules,
    *,
    source_uri: str | None = None,
    signature_uri: str | None = None,
    namespace: str | None = None,
    at: datetime.datetime | None = None,
    bundles: typing.Sequence[bundle.Bundle] | None = None,
) -> SignedModel:
    """The signed statement of a .sig/.jsonl file, checked against the policy's rules
    (`bundles`: the file's, parsed already)."""
    verified: list[signatures.Verified] = []
    statements: list[tuple[str, statement.Statement]] = []
    payloads: list[bytes] = []
    failures: list[reasons.VerificationError] = []
    if bundles is None:
        bundles = bundles_of(signature_file)
    # Audit admits too few signers but not none: one bundle that verifies is what it needs.
    needed = 1 if rules.audit else rules.min_signers
    for tried, signed in enumerate(bundles, 1):
        try:
            who = signatures.verify(signed, rules.signers, at=at)
        except reasons.VerificationError as error:
            # Kept without its traceback, which holds this frame and with it the whole file: the
            # cycle would last until the garbage collector ran.
            failures.append(error.with_traceback(None))
            # Each bundle adds one signer at most: once those left cannot make up the number
            # needed, checking them is work for an attacker's file, not for the verdict.
            if len({item.signer for item in verified}) + len(bundles) - tried < needed:
                break
            continue
        # Parsed only once its signature verified: until then its content is anyone's.
        statements.append((signed.label, statement.parse(signed.payload)))
        payloads.append(signed.payload)
        verified.append(who)
    if not statements:
        # A new one: raised, a kept one would refer to this frame, which refers to it.
        raise reasons.VerificationError.of(failures[0].violation)
    first_label, first = statements[0]
    for label, other in statements[1:]:
        if other.root_digest != first.root_digest:
            raise reasons.VerificationError(
                reasons.Reason.MALFORMED_BUNDLE,
                f"{label} signs root digest {other.root_digest.hex()}, {first_label} signs "
                f"{first.root_digest.hex()}: the bundles are for different models",
            )
        if not other.same_manifest(first):
            raise reasons.VerificationError(
                reasons.Reason.MALFORMED_BUNDLE,
                f"{label} and {first_label} sign the same root digest with different file "
                "names or serialization: the bundles disagree on what the files are",
            )
    checks: list[policy.Check] = [
        lambda: policy.check_min_signers(verified, min_signers=rules.min_signers),
        lambda: policy.check_hash_algorithm(first, allowed=rules.hash_algorithms),
    ]
    if source_uri is not None:
        checks.append(
            lambda: policy.check_source(source_uri, sources=rules.sources, namespace=namespace)
        )
    if signature_uri is not None:
        checks.append(
            lambda: policy.check_source(signature_uri, sources=rules.sources, namespace=namespace)
        )
    violations = policy.evaluate(checks)
    if violations and failures and violations[0].reason is reasons.Reason.TOO_FEW_SIGNERS:
        # Say why a signature did not count, not only that one is missing.
        first_failure = failures[0]
        violations[0] = reasons.Violation(
            violations[0].reason, f"{violations[0].message}; {first_failure}"
        )
    admitted = policy.enforce(violations, audit=rules.audit)
    return SignedModel(first, tuple(verified), tuple(admitted), payloads[0])


def compare(
    expected: typing.Sequence[digests.Resource], actual: typing.Sequence[digests.Resource]
) -> reasons.Violation | None:
    """The first difference between two manifests: a missing, extra or changed resource."""
    want = {resource.name: resource for resource in expected}
    have = {resource.name: resource for resource in actual}
    missing = sorted(set(want) - set(have))
    if missing:
        return reasons.Violation(
            reasons.Reason.MISSING_FILE, _listing("signed", missing, "missing")
        )
    extra = sorted(set(have) - set(want))
    if extra:
        return reasons.Violation(
            reasons.Reason.UNEXPECTED_FILE, _listing("unsigned", extra, "present")
        )
    changed = sorted(name for name in want if want[name].digest != have[name].digest)
    if changed:
        first = changed[0]
        return reasons.Violation(
            reasons.Reason.DIGEST_MISMATCH,
            f"{_listing('', changed, 'changed').strip()}: {first!r} hashes to "
            f"{have[first].digest.hex()}, signed {want[first].digest.hex()}",
        )
    return None


def verify_folder(
    root: pathlib.Path,
    signature_file: bytes,
    rules: policy.Rules,
    *,
    signature_path: pathlib.Path | None = None,
    source_uri: str | None = None,
    at: datetime.datetime | None = None,
    workers: int | None = None,
    ignore_paths: typing.Collection[str] = (),
    ignore_unsigned_files: bool = False,
) -> Result:
    """Verify the model in `root` (a folder, or the one file of a single-file model) against
    `signature_file` and the rules; VerificationError.

    `ignore_paths` (exact paths from the root) add to the signer's and OMS's default exclusions;
    `ignore_unsigned_files` admits files the signature does not list (OMS 8.5). Neither ever
    skips a signed file: each is still required, and hashed."""
    signed = verify_signatures(signature_file, rules, source_uri=source_uri, at=at)
    serialization = signed.statement.serialization
    expected_sizes = signed.statement.file_sizes()
    base, local = _enumerate(
        root,
        signed.statement,
        also_ignored=(*ignore_paths, *_inside(root, signature_path)),
    )
    if serialization.shard_size is not None:
        # Shards serialization has no resource for an empty file: model_signing skips them.
        local = [item for item in local if item.size or item.path in expected_sizes]
    if ignore_unsigned_files:
        local = [item for item in local if item.path in expected_sizes]
    by_path = {item.path: item for item in local}
    name_violation = _compare_names(expected_sizes, by_path)
    if name_violation is not None:
        raise reasons.VerificationError.of(name_violation)
    on_disk = [_on_disk(item, root=root, base=base) for item in local]
    actual = folder.hash_files(
        base,
        on_disk,
        hash_type=serialization.hash_type,
        shard_size=serialization.shard_size,
        workers=workers,
    )
    if base != root:
        # A single-file model: its resources carry the statement's name for the file.
        actual = [dataclasses.replace(resource, path=local[0].path) for resource in actual]
    difference = compare(signed.statement.resources, actual)
    if difference is not None:
        raise reasons.VerificationError.of(difference)
    # The loader opens the folder, not the manifest: every file in it is judged, those the
    # signature leaves out (ignored, unsigned) too.
    if base == root:
        found = folder.sniff_model(root, folder.present(root))
    else:
        found = {local[0].path: folder.sniff(base, on_disk[0])}
    admitted = policy.enforce(
        policy.evaluate([lambda: policy.check_formats(found, allowed=rules.allow_formats)]),
        audit=rules.audit,
    )
    return Result(
        root_digest=signed.statement.root_digest,
        hash_type=serialization.hash_type,
        model_name=signed.statement.model_name,
        signers=signed.signers,
        files=len(local),
        bytes=sum(item.size for item in local),
        audit=signed.audit + tuple(admitted),
    )


def _enumerate(
    root: pathlib.Path, signed: statement.Statement, *, also_ignored: typing.Iterable[str]
) -> tuple[pathlib.Path, list[folder.LocalFile]]:
    """The folder files hash from, and the model's files named as the statement names them."""
    serialization = signed.serialization
    if folder.is_file(root):
        # A single-file model (OMS 6.1): the file alone, whatever lies beside it.
        item = folder.scan_file(root, allow_symlinks=serialization.allow_symlinks)
        if signed.single_file():
            item = dataclasses.replace(item, path=statement.SINGLE_FILE)
        return root.parent, [item]
    ignored = {*serialization.excluded(), *also_ignored}
    local = folder.scan(
        root,
        ignore_paths=ignored,
        signed=signed.file_sizes().keys(),
        allow_symlinks=serialization.allow_symlinks,
    )
    return root, local


def _on_disk(item: folder.LocalFile, *, root: pathlib.Path, base: pathlib.Path) -> folder.LocalFile:
    """Where `item` is below `base`: a single-file model's "." is the file's own name."""
    if base == root:
        return item
    return dataclasses.replace(item, path=root.name)


def _compare_names(
    expected: typing.Mapping[str, int | None], local: typing.Mapping[str, folder.LocalFile]
) -> reasons.Violation | None:
    """Missing and extra files, and shard sizes, before any byte is hashed."""
    missing = sorted(set(expected) - set(local))
    if missing:
        return reasons.Violation(
            reasons.Reason.MISSING_FILE, _listing("signed", missing, "missing")
        )
    extra = sorted(set(local) - set(expected))
    if extra:
        return reasons.Violation(
            reasons.Reason.UNEXPECTED_FILE, _listing("unsigned", extra, "present")
        )
    for name, size in sorted(expected.items()):
        if size is not None and local[name].size != size:
            return reasons.Violation(
                reasons.Reason.DIGEST_MISMATCH,
                f"file {name!r} is {local[name].size} bytes, signed {size}",
            )
    return None


def _listing(kind: str, names: list[str], state: str) -> str:
    shown = ", ".join(repr(name) for name in names[:_LISTED])
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    noun = "file" if len(names) == 1 else "files"
    return f"{kind} {noun} {shown}{more} {state}".strip()


def _inside(root: pathlib.Path, signature_path: pathlib.Path | None) -> tuple[str, ...]:
    """The signature file's name relative to `root` when it lies inside (it is never signed)."""
    if signature_path is None:
        return ()
    try:
        return (signature_path.resolve().relative_to(root.resolve()).as_posix(),)
    except (ValueError, OSError):
        return ()
