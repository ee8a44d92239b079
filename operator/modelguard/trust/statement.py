"""Reading the in-toto statement inside a bundle: model_signing's v1.0 predicate, checked.

The statement (in-toto Statement v1, predicateType https://model_signing/signature/v1.0) has one
subject, the model (an informative name and the root digest), and a predicate with `serialization`
(method files or shards, hash_type, shard_size, allow_symlinks, ignore_paths) and `resources`
(name, algorithm, hex digest). Parsing refuses what verification could not trust: unsafe names,
unknown hashes, inconsistent shards, duplicates, and a root digest its resources do not produce.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import typing

from modelguard.trust import digests, paths, reasons

STATEMENT_TYPE: typing.Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: typing.Final = "https://model_signing/signature/v1.0"
# model_signing 0.2.0's predicate (file digests as subjects): deprecated, refused (OMS 11.2).
DEPRECATED_PREDICATE_TYPE: typing.Final = "https://model_signing/Digests/v0.1"
# How model_signing (1.1.1 at least) names the one file of a single-file model: the model path
# itself, relative to itself. The specification names it by its basename; both are read.
SINGLE_FILE: typing.Final = "."
METHODS: typing.Final = ("files", "shards")


@dataclasses.dataclass(frozen=True)
class Serialization:
    """How the signer serialized the model; verification must do the same."""

    method: str
    hash_type: str
    shard_size: int | None
    allow_symlinks: bool
    ignore_paths: tuple[str, ...]

    def excluded(self) -> tuple[str, ...]:
        """What enumeration leaves out: OMS's default exclusions, always (a statement from before
        model_signing 1.1.0 records none), and the signer's ignore_paths."""
        return (*paths.DEFAULT_EXCLUSIONS, *self.ignore_paths)


@dataclasses.dataclass(frozen=True)
class Statement:
    """A parsed, self-consistent model_signing statement."""

    model_name: str
    root_digest: bytes
    serialization: Serialization
    resources: tuple[digests.Resource, ...]

    def same_manifest(self, other: Statement) -> bool:
        """Whether `other` binds the same files the same way: names, digests, shards and
        serialization. The root digest alone does not bind file names."""
        return self.serialization == other.serialization and self.resources == other.resources

    def single_file(self) -> bool:
        """Whether this signs one file by model_signing's name for it, "." (the model path)."""
        return bool(self.resources) and all(r.path == SINGLE_FILE for r in self.resources)

    def file_sizes(self) -> dict[str, int | None]:
        """Every signed file; its size when the shards say it (None for files serialization)."""
        sizes: dict[str, int | None] = {}
        for resource in self.resources:
            end = resource.end
            sizes[resource.path] = None if end is None else max(sizes.get(resource.path) or 0, end)
        return sizes


def parse(payload: bytes) -> Statement:
    """The statement in a DSSE payload; VerificationError naming the field otherwise."""
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _malformed(f"payload is not a JSON statement: {error}") from None
    root = _object(document, "statement")
    if root.get("_type") != STATEMENT_TYPE:
        raise reasons.VerificationError(
            reasons.Reason.WRONG_PAYLOAD_TYPE,
            f"statement _type is {root.get('_type')!r}, not {STATEMENT_TYPE!r}",
        )
    if root.get("predicateType") == DEPRECATED_PREDICATE_TYPE:
        raise reasons.VerificationError(
            reasons.Reason.WRONG_PAYLOAD_TYPE,
            f"predicateType {DEPRECATED_PREDICATE_TYPE!r} is the deprecated predicate of "
            f"model_signing 0.2 (OMS 11.2), which ModelGuard does not verify: re-sign the model "
            f"with model_signing 1.x, which writes {PREDICATE_TYPE!r}",
        )
    if root.get("predicateType") != PREDICATE_TYPE:
        raise reasons.VerificationError(
            reasons.Reason.WRONG_PAYLOAD_TYPE,
            f"statement predicateType is {root.get('predicateType')!r}, not {PREDICATE_TYPE!r}",
        )
    subjects = root.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise _malformed("statement subject must list exactly one model")
    subject = _object(subjects[0], "subject[0]")
    model_name = subject.get("name")
    if not isinstance(model_name, str):
        raise _malformed("subject[0].name is missing or not a string")
    expected_root = _hex(
        _object(subject.get("digest"), "subject[0].digest").get("sha256"),
        "subject[0].digest.sha256",
        size=32,
    )
    predicate = _object(root.get("predicate"), "predicate")
    serialization = _serialization(_object(predicate.get("serialization"), "serialization"))
    resources = _resources(predicate.get("resources"), serialization=serialization)
    actual_root = digests.root_digest(resources)
    if actual_root != expected_root:
        raise reasons.VerificationError(
            reasons.Reason.ROOT_DIGEST_MISMATCH,
            f"subject[0].digest.sha256 is {expected_root.hex()} but the statement's resources "
            f"hash to {actual_root.hex()}",
        )
    return Statement(
        model_name=model_name,
        root_digest=expected_root,
        serialization=serialization,
        resources=resources,
    )


def _serialization(node: dict[str, typing.Any]) -> Serialization:
    method = node.get("method")
    if method not in METHODS:
        raise reasons.VerificationError(
            reasons.Reason.UNSUPPORTED_HASH,
            f"serialization.method {method!r} is not supported (supported: files, shards)",
        )
    hash_type = node.get("hash_type")
    if not isinstance(hash_type, str):
        raise _malformed("serialization.hash_type is missing or not a string")
    digests.new_hash(hash_type)  # UnsupportedHash for anything else
    shard_size = None
    if method == "shards":
        shard_size = _integer(node.get("shard_size"), "serialization.shard_size")
        if shard_size <= 0:
            raise _malformed(f"serialization.shard_size must be positive, got {shard_size}")
    allow_symlinks = node.get("allow_symlinks", False)
    if not isinstance(allow_symlinks, bool):
        raise _malformed("serialization.allow_symlinks is not a boolean")
    ignore_paths = node.get("ignore_paths", [])
    if not isinstance(ignore_paths, list) or not all(isinstance(p, str) for p in ignore_paths):
        raise _malformed("serialization.ignore_paths is not a list of strings")
    for index, ignored in enumerate(ignore_paths):
        violation = paths.check_name(ignored, field=f"serialization.ignore_paths[{index}]")
        if violation is not None:
            raise reasons.VerificationError.of(violation)
    return Serialization(
        method=method,
        hash_type=hash_type,
        shard_size=shard_size,
        allow_symlinks=allow_symlinks,
        ignore_paths=tuple(ignore_paths),
    )


def _resources(value: typing.Any, *, serialization: Serialization) -> tuple[digests.Resource, ...]:
    if not isinstance(value, list):
        raise _malformed("predicate.resources is missing or not a list")
    if not value:
        # model_signing signs an empty folder so; OMS 5.2.1 and 6.1 refuse it: nothing verified.
        raise _malformed(
            "predicate.resources is empty: a signature must cover at least one file (OMS 5.2.1); "
            "an empty model, or one of empty files only under shards, is refused"
        )
    algorithm = digests.resource_algorithm(
        serialization.hash_type, shard_size=serialization.shard_size
    )
    digest_size = digests.new_hash(serialization.hash_type).digest_size
    resources = []
    for index, item in enumerate(value):
        field = f"resources[{index}]"
        node = _object(item, field)
        name = node.get("name")
        if not isinstance(name, str):
            raise _malformed(f"{field}.name is missing or not a string")
        if node.get("algorithm") != algorithm:
            raise reasons.VerificationError(
                reasons.Reason.UNSUPPORTED_HASH,
                f"{field}.algorithm {node.get('algorithm')!r} of {name!r} differs from the "
                f"serialization's {algorithm!r}",
            )
        digest = _hex(node.get("digest"), f"{field}.digest", size=digest_size)
        path, start, end = _split_name(name, serialization=serialization, field=field)
        violation = None if path == SINGLE_FILE else paths.check_name(path, field=f"{field}.name")
        if violation is not None:
            raise reasons.VerificationError.of(violation)
        resources.append(digests.Resource(path, algorithm, digest, start=start, end=end))
    _check_single_file(resources)
    _check_unique(resources)
    if serialization.shard_size is not None:
        _check_shards(resources, shard_size=serialization.shard_size)
    return tuple(resources)


_MAX_OFFSET_DIGITS: typing.Final = 20


def _split_name(
    name: str, *, serialization: Serialization, field: str
) -> tuple[str, int | None, int | None]:
    if serialization.shard_size is None:
        return name, None, None
    parts = name.rsplit(":", 2)
    # At most 20 digits: offsets fit in 64 bits, and int() refuses (ValueError) past 4300 digits.
    if len(parts) != 3 or not all(
        part.isdigit() and part.isascii() and len(part) <= _MAX_OFFSET_DIGITS for part in parts[1:]
    ):
        raise _malformed(f"{field}.name {name!r} is not path:start:end")
    start, end = int(parts[1]), int(parts[2])
    if end <= start:
        raise _malformed(f"{field}.name {name!r}: end must be greater than start")
    return parts[0], start, end


def _check_single_file(resources: list[digests.Resource]) -> None:
    """ "." names the model path itself: a statement of one file only, never beside other names."""
    paths_named = {resource.path for resource in resources}
    if SINGLE_FILE in paths_named and len(paths_named) > 1:
        raise reasons.VerificationError(
            reasons.Reason.UNSAFE_PATH,
            "resources name '.' (a single-file model) beside other files: '.' may only be the "
            "one file of a single-file model",
        )


def _check_unique(resources: list[digests.Resource]) -> None:
    counts = collections.Counter(resource.name for resource in resources)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise _malformed(f"resources list {duplicates[0]!r} more than once")


def _check_shards(resources: list[digests.Resource], *, shard_size: int) -> None:
    """Each file's shards tile it from 0, shard_size each but the last (model_signing's split)."""
    by_path: dict[str, list[digests.Resource]] = collections.defaultdict(list)
    for resource in resources:
        by_path[resource.path].append(resource)
    for path, shards in by_path.items():
        shards.sort(key=digests.Resource.sort_key)
        expected_start = 0
        for position, shard in enumerate(shards):
            last = position == len(shards) - 1
            length = (shard.end or 0) - (shard.start or 0)
            if (
                shard.start != expected_start
                or length > shard_size
                or (not last and length != shard_size)
            ):
                raise _malformed(
                    f"shards of {path!r} do not tile the file in {shard_size}-byte pieces "
                    f"(at {shard.name!r})"
                )
            expected_start = shard.end or 0


def _integer(value: typing.Any, field: str) -> int:
    # model_signing writes the statement through protobuf's Struct, whose numbers are doubles:
    # a shard size of 1000000000 arrives as 1000000000.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(f"{field} is missing or not a number")
    if isinstance(value, float) and (not value.is_integer() or abs(value) > 2**53):
        raise _malformed(f"{field} {value!r} is not a whole number")
    return int(value)


def _hex(value: typing.Any, field: str, *, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise _malformed(f"{field} is not {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _malformed(f"{field} is not {2 * size} hex digits") from None


def _object(value: typing.Any, field: str) -> dict[str, typing.Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{field} is missing or not a JSON object")
    return value


def _malformed(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(reasons.Reason.MALFORMED_STATEMENT, message)
