"""The agent's decisions before any model byte moves: the pinned root digest, the statement that
carries it, the listing compared with the statement, and a downloaded file's digests."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

import pytest

from modelguard.agent import failures, plan
from modelguard.sources import base
from modelguard.trust import digests, reasons, statement


def resource(path: str, content: bytes) -> digests.Resource:
    return digests.Resource(path, "sha256", hashlib.sha256(content).digest())


FILES = {"config.json": b"{}", "weights/model.safetensors": b"w" * 100, "vocab.txt": b"a b"}


def signed(
    files: dict[str, bytes] = FILES, *, ignore_paths: tuple[str, ...] = (".git",)
) -> statement.Statement:
    resources = tuple(digests.manifest_order(resource(p, c) for p, c in files.items()))
    return statement.Statement(
        model_name="m",
        root_digest=digests.root_digest(resources),
        serialization=statement.Serialization(
            method="files",
            hash_type="sha256",
            shard_size=None,
            allow_symlinks=False,
            ignore_paths=ignore_paths,
        ),
        resources=resources,
    )


def sharded(files: dict[str, bytes], *, shard_size: int) -> statement.Statement:
    resources = []
    for path, content in files.items():
        hasher = digests.FileHasher(path, hash_type="sha256", shard_size=shard_size)
        hasher.update(content)
        resources += hasher.finish()
    ordered = tuple(digests.manifest_order(resources))
    return statement.Statement(
        model_name="m",
        root_digest=digests.root_digest(ordered),
        serialization=statement.Serialization("shards", "sha256", shard_size, False, ()),
        resources=ordered,
    )


def bundle_bytes(signed_statement: statement.Statement) -> bytes:
    """A sigstore bundle around the statement, as model_signing writes it (signature unchecked)."""
    payload = {
        "_type": statement.STATEMENT_TYPE,
        "predicateType": statement.PREDICATE_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": signed_statement.root_digest.hex()}}],
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [
                {"name": r.name, "algorithm": r.algorithm, "digest": r.digest.hex()}
                for r in signed_statement.resources
            ],
        },
    }
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "00"}},
            "dsseEnvelope": {
                "payloadType": "application/vnd.in-toto+json",
                "payload": base64.b64encode(json.dumps(payload).encode()).decode(),
                "signatures": [{"sig": base64.b64encode(b"sig").decode()}],
            },
        }
    ).encode()


def listing(files: dict[str, bytes]) -> list[base.ObjectInfo]:
    return [base.ObjectInfo(name, len(content)) for name, content in sorted(files.items())]


@pytest.mark.parametrize(
    "text",
    ["", "sha256:", "sha256:" + "0" * 63, "sha512:" + "0" * 64, "SHA256:" + "0" * 64, "0" * 64],
)
def test_root_digest_flag_must_be_sha256_hex(text: str) -> None:
    with pytest.raises(failures.AgentError) as caught:
        plan.parse_root_digest(text)
    assert caught.value.reason == failures.INVALID_ARGUMENT


def test_root_digest_flag() -> None:
    assert plan.parse_root_digest("sha256:" + "ab" * 32) == bytes.fromhex("ab" * 32)


def test_the_statement_with_the_pinned_digest_is_used() -> None:
    model = signed()
    found = plan.pinned_statement(bundle_bytes(model), model.root_digest)
    assert (found.root_digest, found.resources) == (model.root_digest, model.resources)


def test_another_root_digest_is_refused() -> None:
    with pytest.raises(reasons.VerificationError) as caught:
        plan.pinned_statement(bundle_bytes(signed()), b"\x01" * 32)
    assert caught.value.reason is reasons.Reason.ROOT_DIGEST_MISMATCH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", reasons.Reason.MALFORMED_BUNDLE),
        (b"\xff\xfe", reasons.Reason.MALFORMED_BUNDLE),
        (b'{"mediaType": "x"}', reasons.Reason.MALFORMED_BUNDLE),
    ],
)
def test_a_garbled_bundle_is_refused(data: bytes, reason: reasons.Reason) -> None:
    with pytest.raises(reasons.VerificationError) as caught:
        plan.pinned_statement(data, b"\x01" * 32)
    assert caught.value.reason is reason


def test_every_signed_file_is_fetched_largest_first() -> None:
    todo = plan.files_to_fetch(
        signed(),
        listing=[*listing(FILES), base.ObjectInfo("model.sig", 9)],
        also_ignored=("model.sig",),
    )
    assert [item.path for item in todo] == ["weights/model.safetensors", "vocab.txt", "config.json"]
    assert [item.size for item in todo] == [100, 3, 2]


def test_ignored_paths_may_be_present() -> None:
    extra = [base.ObjectInfo(".git/HEAD", 4), base.ObjectInfo(".git", 1)]
    assert len(plan.files_to_fetch(signed(), listing=listing(FILES) + extra)) == 3


def test_git_files_may_be_present_when_the_statement_records_no_ignore_paths() -> None:
    # Bundles of model_signing before 1.1.0 record no ignore_paths; OMS 11.2.3: the default
    # exclusions (.git, .gitattributes, .github, .gitignore, top level only) still apply.
    extra = [
        base.ObjectInfo(".git/HEAD", 4),
        base.ObjectInfo(".gitignore", 1),
        base.ObjectInfo(".gitattributes", 1),
        base.ObjectInfo(".github/workflows/ci.yml", 1),
    ]
    todo = plan.files_to_fetch(signed(ignore_paths=()), listing=listing(FILES) + extra)
    assert {item.path for item in todo} == set(FILES)
    with pytest.raises(reasons.VerificationError) as caught:
        plan.files_to_fetch(
            signed(ignore_paths=()),
            listing=[*listing(FILES), base.ObjectInfo("weights/.git/HEAD", 1)],
        )
    assert caught.value.reason is reasons.Reason.UNEXPECTED_FILE


def test_a_signed_git_file_is_fetched_like_any_other() -> None:
    files = FILES | {".gitattributes": b"*.bin lfs"}
    todo = plan.files_to_fetch(signed(files, ignore_paths=()), listing=listing(files))
    assert ".gitattributes" in {item.path for item in todo}


def test_a_single_file_statement_is_refused_saying_what_to_sign() -> None:
    model = signed({"model.safetensors": b"w"})
    single = dataclasses.replace(
        model,
        resources=tuple(
            dataclasses.replace(r, path=statement.SINGLE_FILE) for r in model.resources
        ),
    )
    for found in (None, listing({"model.safetensors": b"w"})):
        with pytest.raises(reasons.VerificationError) as caught:
            plan.files_to_fetch(single, listing=found)
        assert caught.value.reason is reasons.Reason.MISSING_FILE
        assert "single-file model" in caught.value.message
        assert "sign the folder" in caught.value.message


REFUSED = {
    "file added": (
        [*listing(FILES), base.ObjectInfo("hook.py", 1)],
        reasons.Reason.UNEXPECTED_FILE,
        "'hook.py'",
    ),
    "file removed": (
        listing({k: v for k, v in FILES.items() if k != "vocab.txt"}),
        reasons.Reason.MISSING_FILE,
        "'vocab.txt'",
    ),
    "signature outside the ignored names": (
        [*listing(FILES), base.ObjectInfo("model.sig", 1)],
        reasons.Reason.UNEXPECTED_FILE,
        "'model.sig'",
    ),
}


@pytest.mark.parametrize(("found", "reason", "named"), REFUSED.values(), ids=REFUSED.keys())
def test_a_listing_that_differs_is_refused(
    found: list[base.ObjectInfo], reason: reasons.Reason, named: str
) -> None:
    with pytest.raises(reasons.VerificationError) as caught:
        plan.files_to_fetch(signed(), listing=found)
    assert caught.value.reason is reason
    assert named in caught.value.message


def test_a_source_that_cannot_list_fetches_the_signed_files() -> None:
    assert {item.path for item in plan.files_to_fetch(signed(), listing=None)} == set(FILES)


def test_shards_give_sizes_and_a_wrong_size_is_refused_before_download() -> None:
    files = {"big.bin": b"x" * 25, "empty.txt": b""}
    model = sharded(files, shard_size=10)
    todo = plan.files_to_fetch(model, listing=listing(files))
    # model_signing signs no shard of an empty file: it is neither fetched nor refused.
    assert [(item.path, item.size, len(item.resources)) for item in todo] == [("big.bin", 25, 3)]
    with pytest.raises(reasons.VerificationError) as caught:
        plan.files_to_fetch(model, listing=[base.ObjectInfo("big.bin", 26)])
    assert caught.value.reason is reasons.Reason.DIGEST_MISMATCH


def test_check_file_names_the_changed_file() -> None:
    item = plan.files_to_fetch(signed(), listing=None)[0]
    plan.check_file(item, [resource(item.path, FILES[item.path])])
    with pytest.raises(reasons.VerificationError) as caught:
        plan.check_file(item, [resource(item.path, b"tampered")])
    assert caught.value.reason is reasons.Reason.DIGEST_MISMATCH
    assert repr(item.path) in caught.value.message


def test_check_file_refuses_a_sharded_file_of_another_length() -> None:
    model = sharded({"big.bin": b"x" * 25}, shard_size=10)
    item = plan.files_to_fetch(model, listing=None)[0]
    hasher = digests.FileHasher("big.bin", hash_type="sha256", shard_size=10)
    hasher.update(b"x" * 31)
    with pytest.raises(reasons.VerificationError) as caught:
        plan.check_file(item, hasher.finish())
    assert caught.value.reason is reasons.Reason.DIGEST_MISMATCH


@pytest.mark.parametrize(
    ("source", "signature", "expected"),
    [
        ("s3://b/m/1/", "s3://b/m/1/", "model.sig"),
        ("s3://b/m/1/", "s3://b/m/1/sigs/", "sigs/model.sig"),
        ("s3://b/m/1/", "s3://b/m/", None),
        ("s3://b/m/1/", "s3://c/m/1/", None),
    ],
)
def test_signature_name_inside_the_source(
    source: str, signature: str, expected: str | None
) -> None:
    assert (
        plan.signature_name(source_folder=source, signature_folder=signature, name="model.sig")
        == expected
    )


def test_a_renamed_statement_keeps_its_root_digest_so_the_bundle_digest_is_pinned() -> None:
    """Why --signature-digest exists: names are not part of the root digest."""
    original = signed({"a.json": b"1", "b.json": b"2"})
    renamed = dataclasses.replace(
        original,
        resources=tuple(
            dataclasses.replace(item, path=f"evil/{item.path}") for item in original.resources
        ),
    )
    assert digests.root_digest(renamed.resources) == original.root_digest
    data = bundle_bytes(original)
    plan.check_signature_digest(data, hashlib.sha256(data).digest())
    with pytest.raises(failures.AgentError) as caught:
        plan.check_signature_digest(bundle_bytes(renamed), hashlib.sha256(data).digest())
    assert caught.value.reason == reasons.Reason.SIGNATURE_CHANGED


def _names_swapped(model: statement.Statement) -> statement.Statement:
    """The same digests in the same order, so the same root digest, under swapped names."""
    first, second, *rest = model.resources
    resources = (
        dataclasses.replace(first, path=second.path),
        dataclasses.replace(second, path=first.path),
        *rest,
    )
    return dataclasses.replace(model, resources=resources)


def test_bundles_that_disagree_on_the_names_are_refused() -> None:
    # The agent cannot tell which bundle the operator verified: an unsigned one added beside the
    # signed one must not put one file's bytes under another's name.
    model = signed()
    forged = _names_swapped(model)
    assert forged.root_digest == digests.root_digest(forged.resources)
    for first, second in ((forged, model), (model, forged)):
        jsonl = bundle_bytes(first) + b"\n" + bundle_bytes(second) + b"\n"
        with pytest.raises(reasons.VerificationError) as refused:
            plan.pinned_statement(jsonl, model.root_digest)
        assert refused.value.reason is reasons.Reason.MALFORMED_BUNDLE
        assert "different file names" in refused.value.message


def test_bundles_of_several_signers_of_one_manifest_are_one_statement() -> None:
    model = signed()
    jsonl = bundle_bytes(model) + b"\n" + bundle_bytes(model) + b"\n"
    assert plan.pinned_statement(jsonl, model.root_digest).resources == model.resources
