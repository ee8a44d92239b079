"""What the agent fetches, decided before any model byte moves; pure.

The operator verified the signature bundle against the TrustPolicy and pinned the root digest it
verified in the pod spec. The agent finds the statement with that root digest in the bundle (a
statement's own resources must hash to it, so every file digest is bound to it), then checks the
source's listing against it: a signed file missing, an unsigned file present, or a shard-signed
file of the wrong size is refused here, before the download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import typing

from modelguard.agent import failures
from modelguard.sources import base
from modelguard.trust import digests, paths, reasons, statement, verify

_ROOT_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


@dataclasses.dataclass(frozen=True)
class FileToFetch:
    """A signed file: its name, its resources (one, or one per shard), its size when known."""

    path: str
    resources: tuple[digests.Resource, ...]
    size: int | None


def parse_root_digest(text: str, *, flag: str = "--root-digest") -> bytes:
    """The raw digest of `sha256:<64 lowercase hex>`; InvalidArgument naming `flag` otherwise."""
    match = _ROOT_DIGEST.fullmatch(text.strip())
    if match is None:
        raise failures.AgentError(
            failures.INVALID_ARGUMENT, f"{flag} must be sha256: and 64 lowercase hex digits"
        )
    return bytes.fromhex(match.group(1))


def check_signature_digest(signature_file: bytes, pinned: bytes) -> None:
    """SignatureChanged unless the signature file hashes to `pinned` (SHA-256).

    The root digest binds every file's digest but not the names: a statement rewritten with the
    same digests under other names hashes to the same root. Pinning the bundle's own digest closes
    that gap without re-checking the signature here."""
    actual = hashlib.sha256(signature_file).digest()
    if actual != pinned:
        raise failures.AgentError(
            str(reasons.Reason.SIGNATURE_CHANGED),
            f"the signature file hashes to sha256:{actual.hex()}, the pod pins "
            f"sha256:{pinned.hex()} (it changed since the operator verified it)",
        )


def pinned_statement(signature_file: bytes, root_digest: bytes) -> statement.Statement:
    """The statement of `signature_file` whose root digest is `root_digest`.

    The agent holds no keys, so it cannot tell which bundle's signature the operator verified. The
    root digest binds the file digests but not their names: a bundle added unsigned, with the same
    digests under swapped names, would put one file's bytes under another's name. So every bundle
    signing the pinned digest must bind the same manifest; then whichever is used, it is the one
    the operator verified.
    """
    found: list[bytes] = []
    matching: list[tuple[str, statement.Statement]] = []
    first_error: reasons.VerificationError | None = None
    for signed in verify.bundles_of(signature_file):
        try:
            parsed = statement.parse(signed.payload)
        except reasons.VerificationError as error:
            first_error = first_error or error
            continue
        if parsed.root_digest == root_digest:
            matching.append((signed.label, parsed))
        else:
            found.append(parsed.root_digest)
    if matching:
        first_label, first = matching[0]
        for label, other in matching[1:]:
            if not other.same_manifest(first):
                raise reasons.VerificationError(
                    reasons.Reason.MALFORMED_BUNDLE,
                    f"{label} and {first_label} sign the pinned root digest with different file "
                    "names or serialization: which one the operator verified cannot be told",
                )
        return first
    if not found and first_error is not None:
        raise first_error
    raise reasons.VerificationError(
        reasons.Reason.ROOT_DIGEST_MISMATCH,
        f"the signature signs root digest sha256:{found[0].hex()}, the pod pins "
        f"sha256:{root_digest.hex()} (the bundle changed since the operator verified it)",
    )


def signature_name(*, source_folder: str, signature_folder: str, name: str) -> str | None:
    """The signature file's name inside the source folder, or None when it lies elsewhere.

    `source_folder` and `signature_folder` are the parsed folders' canonical URIs."""
    if not signature_folder.startswith(source_folder):
        return None
    return signature_folder[len(source_folder) :] + name


def files_to_fetch(
    signed: statement.Statement,
    *,
    listing: typing.Sequence[base.ObjectInfo] | None,
    also_ignored: typing.Collection[str] = (),
) -> list[FileToFetch]:
    """Every signed file, largest first (so parallel downloads finish together); refused when the
    listing (None: the source cannot list) has a file too many or too few, or a wrong size."""
    if signed.single_file():
        raise _refusal(
            reasons.Reason.MISSING_FILE,
            "the statement signs a single-file model (its one resource is named '.'), which "
            "names no file in a source folder: sign the folder that holds the file",
        )
    by_path: dict[str, list[digests.Resource]] = {}
    for resource in signed.resources:
        by_path.setdefault(resource.path, []).append(resource)
    sizes = signed.file_sizes()
    if listing is not None:
        ignored = (*signed.serialization.excluded(), *also_ignored)
        listed = {
            item.name: item.size
            for item in listing
            if item.name in sizes or not _unsigned_but_expected(signed, item, ignored)
        }
        missing = sorted(set(sizes) - set(listed))
        if missing:
            raise _refusal(
                reasons.Reason.MISSING_FILE, verify_listing("signed", missing, "missing")
            )
        extra = sorted(set(listed) - set(sizes))
        if extra:
            raise _refusal(
                reasons.Reason.UNEXPECTED_FILE, verify_listing("unsigned", extra, "present")
            )
        for name, size in sorted(sizes.items()):
            if size is not None and listed[name] != size:
                raise _refusal(
                    reasons.Reason.DIGEST_MISMATCH,
                    f"file {name!r} is {listed[name]} bytes, signed {size}",
                )
        known = {name: sizes[name] if sizes[name] is not None else listed[name] for name in sizes}
    else:
        known = sizes
    plan = [
        FileToFetch(path=path, resources=tuple(by_path[path]), size=known[path]) for path in by_path
    ]
    return sorted(plan, key=lambda item: (-(item.size or 0), item.path))


def check_bound(todo: typing.Sequence[FileToFetch], *, max_bytes: int) -> None:
    """ModelTooLarge when the sizes known before the download (signed shards, or the source's
    listing) already add up to more than `max_bytes`: refused before a byte is written."""
    known = sum(item.size or 0 for item in todo)
    if known > max_bytes:
        raise _refusal(
            reasons.Reason.MODEL_TOO_LARGE,
            f"the model's {len(todo)} files take {known} bytes, more than the {max_bytes} bytes "
            "the volume is bounded to (--max-bytes, from spec.model.maxBytes or the signed sizes)",
        )


def check_file(item: FileToFetch, actual: typing.Sequence[digests.Resource]) -> None:
    """DigestMismatch (or MissingFile for a shard the bytes did not reach) naming the file."""
    difference = verify.compare(item.resources, actual)
    if difference is None:
        return
    if difference.reason is reasons.Reason.DIGEST_MISMATCH:
        raise reasons.VerificationError.of(difference)
    # A shard too many or too few: the file's length differs from what was signed.
    got = max((resource.end or 0 for resource in actual), default=0)
    raise _refusal(
        reasons.Reason.DIGEST_MISMATCH,
        f"file {item.path!r} is {got} bytes, signed {item.size}",
    )


def _unsigned_but_expected(
    signed: statement.Statement, item: base.ObjectInfo, ignored: typing.Sequence[str]
) -> bool:
    """Whether a file the statement does not name is one it leaves out on purpose."""
    if paths.is_ignored(item.name, ignored):
        return True
    # model_signing gives an empty file no shard, so no resource: there is nothing to fetch.
    return signed.serialization.shard_size is not None and item.size == 0


def verify_listing(kind: str, names: list[str], state: str) -> str:
    shown = ", ".join(repr(name) for name in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    noun = "file" if len(names) == 1 else "files"
    return f"{kind} {noun} {shown}{more} {state} in the source"


def _refusal(reason: reasons.Reason, message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reason, message)
