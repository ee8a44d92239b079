"""Where OMS v1.0 (sections 5, 6.1, 6.2, 8 and 11.2) says what a verifier must do, against real
model_signing 1.1.1 signatures: each case is one row of docs/oms-conformance.md."""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import typing

import model_signing
import pytest
import test_trust_verify as helpers
from model_signing import hashing

from modelguard.trust import reasons, statement, verify

Reason = reasons.Reason
Keys = dict[str, tuple[pathlib.Path, pathlib.Path]]

MODEL = {
    "config.json": b'{"k": 1}',
    "weights/model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"w" * 3000,
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    return {"trusted": helpers._key(directory, "trusted")}


def _signed(
    tmp_path: pathlib.Path, keys: Keys, files: dict[str, bytes] = MODEL, **sign: typing.Any
) -> tuple[pathlib.Path, pathlib.Path]:
    model = helpers._write(tmp_path / "model", files)
    signature = tmp_path / "model.sig"
    helpers._sign(model, signature, keys["trusted"][0], **sign)
    return model, signature


def _resigned(
    signature: pathlib.Path, keys: Keys, change: typing.Callable[[dict[str, typing.Any]], None]
) -> bytes:
    """The signature's statement changed by `change`, signed again with the trusted key."""
    document = helpers._statement(signature)
    change(document)
    return helpers._craft(document, keys["trusted"][0])


def _verify(model: pathlib.Path, signature: bytes, keys: Keys, **options: typing.Any) -> str:
    return verify.verify_folder(
        model, signature, helpers._policy(keys["trusted"][1]), **options
    ).summary()


def _refusal(model: pathlib.Path, signature: bytes, keys: Keys, **options: typing.Any) -> str:
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, signature, helpers._policy(keys["trusted"][1]), **options)
    return str(refused.value)


def _cli(*argv: str) -> tuple[int, str, str]:
    return helpers.run_cli(*argv)


# --- 11.2.3 / 6.2: the default exclusions, with and without serialization.ignore_paths -----------


def _drop_ignore_paths(document: dict[str, typing.Any]) -> None:
    del document["predicate"]["serialization"]["ignore_paths"]


def _git_files(model: pathlib.Path) -> None:
    helpers._write(
        model,
        {
            ".git/HEAD": b"ref: refs/heads/main\n",
            ".git/objects/ab/cdef": b"\x78\x01",
            ".gitignore": b"*.tmp\n",
            ".gitattributes": b"*.safetensors filter=lfs\n",
            ".github/workflows/ci.yml": b"on: push\n",
        },
    )


@pytest.mark.parametrize("recorded", [True, False], ids=["ignore-paths-recorded", "before-1.1.0"])
def test_git_files_are_excluded_by_default_whether_or_not_the_statement_records_them(
    tmp_path: pathlib.Path, keys: Keys, recorded: bool
) -> None:
    model, signature = _signed(tmp_path, keys)
    signed = signature.read_bytes() if recorded else _resigned(signature, keys, _drop_ignore_paths)
    _git_files(model)
    assert "files 2 " in _verify(model, signed, keys)


def test_the_default_exclusions_are_top_level_only(tmp_path: pathlib.Path, keys: Keys) -> None:
    model, signature = _signed(tmp_path, keys)
    signed = _resigned(signature, keys, _drop_ignore_paths)
    helpers._write(model, {"weights/.git/HEAD": b"x"})
    assert _refusal(model, signed, keys).startswith(
        "UnexpectedFile: unsigned file 'weights/.git/HEAD' present"
    )


def test_an_exclusion_never_hides_a_signed_file(tmp_path: pathlib.Path, keys: Keys) -> None:
    # A signer that kept .gitignore (model_signing's ignore_git_paths=False) signs it: it is
    # verified like any other file, default exclusion or not.
    files = MODEL | {".gitignore": b"*.tmp\n"}
    model = helpers._write(tmp_path / "model", files)
    signature = tmp_path / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=keys["trusted"][0]
    ).set_hashing_config(hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)).sign(
        model, signature
    )
    assert ".gitignore" in {
        r["name"] for r in helpers._statement(signature)["predicate"]["resources"]
    }
    # Then model_signing records no ignore_paths at all, as before 1.1.0.
    assert "ignore_paths" not in helpers._statement(signature)["predicate"]["serialization"]
    signed = signature.read_bytes()
    assert "files 3 " in _verify(model, signed, keys)
    (model / ".gitignore").write_bytes(b"changed\n")
    assert _refusal(model, signed, keys).startswith("DigestMismatch: file '.gitignore' changed")
    (model / ".gitignore").unlink()
    assert _refusal(model, signed, keys).startswith("MissingFile: signed file '.gitignore'")


# --- 5.2.1 / 6.1: at least one resource ----------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "shard_size"),
    [
        pytest.param({}, None, id="empty-folder"),
        pytest.param({"empty.bin": b"", "also-empty": b""}, 1024, id="shards-of-empty-files-only"),
    ],
)
def test_a_statement_that_signs_no_file_is_refused(
    tmp_path: pathlib.Path, keys: Keys, files: dict[str, bytes], shard_size: int | None
) -> None:
    # model_signing 1.1.1 signs these with "resources": []: there is nothing to verify, and an
    # empty model verifying would let any folder of ignored or empty files pass.
    (tmp_path / "model").mkdir()
    model, signature = _signed(tmp_path, keys, files, shard_size=shard_size)
    assert helpers._statement(signature)["predicate"]["resources"] == []
    message = _refusal(model, signature.read_bytes(), keys)
    assert message.startswith("MalformedStatement: predicate.resources is empty")
    assert "at least one file" in message


# --- 8.5 and 6.2: --ignore-unsigned-files, verification-time ignore paths ------------------------


def _cli_verify(
    model: pathlib.Path, signature: pathlib.Path, keys: Keys, *extra: str
) -> tuple[int, str, str]:
    return _cli(
        "verify",
        str(model),
        "--signature",
        str(signature),
        "--public-key",
        str(keys["trusted"][1]),
        *extra,
    )


def test_ignore_unsigned_files_admits_extra_files_but_still_verifies_every_signed_one(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    helpers._write(model, {"notes/README.md": b"# extra", "extra.bin": b"\x00" * 10})
    code, _, err = _cli_verify(model, signature, keys)
    assert (code, err.split(":")[0]) == (1, "UnexpectedFile")
    code, out, err = _cli_verify(model, signature, keys, "--ignore-unsigned-files")
    assert (code, err) == (0, "")
    # Only the signed files are counted: the extra ones were not verified.
    assert out.strip().endswith(f"files 2 bytes {sum(len(c) for c in MODEL.values())}")
    (model / "config.json").write_bytes(b'{"k": 2}')
    code, _, err = _cli_verify(model, signature, keys, "--ignore-unsigned-files")
    assert (code, err.split(":")[0]) == (1, "DigestMismatch")
    (model / "config.json").unlink()
    code, _, err = _cli_verify(model, signature, keys, "--ignore-unsigned-files")
    assert (code, err.split(":")[0]) == (1, "MissingFile")


def test_ignore_paths_at_verification_exclude_exact_paths_from_the_root(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    helpers._write(model, {"cache/a.tmp": b"1", "cache/b/c.tmp": b"2", "logs.txt": b"3"})
    code, _, err = _cli_verify(model, signature, keys, "--ignore-paths", "cache")
    assert (code, err.split(":")[0]) == (1, "UnexpectedFile")
    assert "'logs.txt'" in err
    code, out, err = _cli_verify(
        model, signature, keys, "--ignore-paths", "cache/", "--ignore-paths", "logs.txt"
    )
    assert (code, err) == (0, "")
    assert "files 2 " in out
    # An entry names a path from the root, not a name anywhere below it.
    helpers._write(model, {"weights/cache/x": b"4"})
    code, _, err = _cli_verify(
        model, signature, keys, "--ignore-paths", "cache", "--ignore-paths", "logs.txt"
    )
    assert (code, err.split(":")[0]) == (1, "UnexpectedFile")


def test_an_ignore_path_over_a_signed_file_does_not_skip_its_check(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    path = model / "weights" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    code, _, err = _cli_verify(model, signature, keys, "--ignore-paths", "weights")
    assert (code, err.split(":")[0]) == (1, "DigestMismatch")
    assert "'weights/model.safetensors'" in err


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        pytest.param("../x", "contains '..'", id="parent"),
        pytest.param("/etc", "is absolute", id="absolute"),
        pytest.param("*.bin", "glob character", id="glob-star"),
        pytest.param("shard-?", "glob character", id="glob-question"),
        pytest.param("[ab]", "glob character", id="glob-bracket"),
        pytest.param("a/./b", "not normalised", id="dot"),
    ],
)
def test_bad_ignore_paths_are_refused_naming_the_flag(
    tmp_path: pathlib.Path, keys: Keys, entry: str, problem: str
) -> None:
    model, signature = _signed(tmp_path, keys)
    code, out, err = _cli_verify(model, signature, keys, "--ignore-paths", entry)
    assert (code, out) == (1, "")
    assert err.startswith(f"UnsafePath: --ignore-paths {entry!r}"), err
    assert problem in err


# --- 6.1.2.5: single-file models ----------------------------------------------------------------


@pytest.mark.parametrize("shard_size", [None, 1024], ids=["files", "shards"])
def test_a_single_file_model_verifies_as_model_signing_signs_it(
    tmp_path: pathlib.Path, keys: Keys, shard_size: int | None
) -> None:
    folder = helpers._write(
        tmp_path / "dir", {"model.safetensors": MODEL["weights/model.safetensors"]}
    )
    model = folder / "model.safetensors"
    signature = tmp_path / "model.sig"
    helpers._sign(model, signature, keys["trusted"][0], shard_size=shard_size)
    # model_signing 1.1.1 names the one resource "." (the model path itself).
    names = {r["name"] for r in helpers._statement(signature)["predicate"]["resources"]}
    assert {name.split(":")[0] for name in names} == {"."}
    # Files beside it are not part of a single-file model.
    helpers._write(folder, {"other.bin": b"not signed"})
    code, out, err = _cli_verify(model, signature, keys)
    assert (code, err) == (0, "")
    assert out.strip().endswith(f"files 1 bytes {model.stat().st_size}")
    model.write_bytes(model.read_bytes()[:-1] + b"X")
    code, _, err = _cli_verify(model, signature, keys)
    assert (code, err.split(":")[0]) == (1, "DigestMismatch")


def test_a_single_file_model_named_by_its_basename_verifies(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    # The specification's form: the resource is named by the file's basename.
    folder = helpers._write(
        tmp_path / "dir", {"model.safetensors": MODEL["weights/model.safetensors"]}
    )
    model = folder / "model.safetensors"
    signature = tmp_path / "model.sig"
    helpers._sign(model, signature, keys["trusted"][0])

    def basename(document: dict[str, typing.Any]) -> None:
        document["predicate"]["resources"][0]["name"] = "model.safetensors"

    signed = _resigned(signature, keys, basename)
    assert "files 1 " in _verify(model, signed, keys)
    other = shutil.copy(model, folder / "renamed.safetensors")
    assert _refusal(pathlib.Path(other), signed, keys).startswith(
        "MissingFile: signed file 'model.safetensors' missing"
    )


def test_a_single_file_model_that_is_a_symlink_is_refused(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    folder = helpers._write(
        tmp_path / "dir", {"model.safetensors": MODEL["weights/model.safetensors"]}
    )
    signature = tmp_path / "model.sig"
    helpers._sign(folder / "model.safetensors", signature, keys["trusted"][0])
    (folder / "link.safetensors").symlink_to("model.safetensors")
    message = _refusal(folder / "link.safetensors", signature.read_bytes(), keys)
    assert message.startswith("UnsafePath: 'link.safetensors' is a symlink")


def test_a_statement_mixing_the_single_file_name_with_others_is_refused(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    _, signature = _signed(tmp_path, keys)

    def mixed(document: dict[str, typing.Any]) -> None:
        resources = document["predicate"]["resources"]
        resources.insert(0, dict(resources[0], name="."))

    with pytest.raises(reasons.VerificationError) as refused:
        statement.parse(
            base64.b64decode(
                json.loads(_resigned(signature, keys, mixed))["dsseEnvelope"]["payload"]
            )
        )
    assert refused.value.reason is Reason.UNSAFE_PATH


# --- 6.1.1: serialization.allow_symlinks as the signer recorded it -------------------------------


def _signed_with_symlinks(tmp_path: pathlib.Path, keys: Keys) -> tuple[pathlib.Path, pathlib.Path]:
    model = helpers._write(tmp_path / "model", MODEL)
    (model / "alias.safetensors").symlink_to("weights/model.safetensors")
    signature = tmp_path / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=keys["trusted"][0]
    ).set_hashing_config(hashing.Config().use_file_serialization().set_allow_symlinks(True)).sign(
        model, signature
    )
    assert helpers._statement(signature)["predicate"]["serialization"]["allow_symlinks"] is True
    return model, signature


def test_a_symlink_signed_with_allow_symlinks_is_refused_saying_why(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed_with_symlinks(tmp_path, keys)
    message = _refusal(model, signature.read_bytes(), keys)
    assert message.startswith("UnsafePath: 'alias.safetensors' is a symlink")
    assert "serialization.allow_symlinks is true" in message
    assert "never follows symlinks" in message


def test_allow_symlinks_verifies_once_the_link_is_the_file_it_pointed_to(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    # The signed digest is of the target's bytes: a regular file with those bytes verifies.
    model, signature = _signed_with_symlinks(tmp_path, keys)
    (model / "alias.safetensors").unlink()
    shutil.copy(model / "weights/model.safetensors", model / "alias.safetensors")
    assert "files 3 " in _verify(model, signature.read_bytes(), keys)


def test_a_symlink_without_allow_symlinks_names_the_statement_field(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    (model / "link").symlink_to("config.json")
    message = _refusal(model, signature.read_bytes(), keys)
    assert message.startswith("UnsafePath: 'link' is a symlink")
    assert "serialization.allow_symlinks is false" in message


# --- 5.1 / 11.2.4: the deprecated v0.1 predicate -------------------------------------------------


def test_the_deprecated_v0_1_predicate_is_refused_with_what_to_do(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    current = helpers._statement(signature)
    # model_signing 0.2.0's layout: one subject per file, no predicate.resources.
    legacy = {
        "_type": statement.STATEMENT_TYPE,
        "predicateType": "https://model_signing/Digests/v0.1",
        "subject": [
            {"name": r["name"], "digest": {"sha256": r["digest"]}}
            for r in current["predicate"]["resources"]
        ],
        "predicate": {"unused": "Unused"},
    }
    message = _refusal(model, helpers._craft(legacy, keys["trusted"][0]), keys)
    assert message.startswith(
        "WrongPayloadType: predicateType 'https://model_signing/Digests/v0.1'"
    )
    assert "deprecated" in message
    assert "re-sign" in message


# --- 8.1 and 11.1 / 11.2.1-2: bundle fields as older model_signing versions write them ----------


def _public_key_raw_bytes(bundle: dict[str, typing.Any], keys: Keys) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    public = serialization.load_pem_public_key(keys["trusted"][1].read_bytes())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bundle["verificationMaterial"]["publicKey"] = {
        "rawBytes": base64.b64encode(der).decode(),
        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
    }


def _keyid(value: object) -> typing.Callable[[dict[str, typing.Any], Keys], None]:
    def change(bundle: dict[str, typing.Any], keys: Keys) -> None:
        if value is _ABSENT:
            del bundle["dsseEnvelope"]["signatures"][0]["keyid"]
        else:
            bundle["dsseEnvelope"]["signatures"][0]["keyid"] = value

    return change


def _no_tlog_entries(bundle: dict[str, typing.Any], keys: Keys) -> None:
    del bundle["verificationMaterial"]["tlogEntries"]


_ABSENT = object()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_public_key_raw_bytes, id="publicKey-rawBytes-instead-of-hint"),
        pytest.param(_keyid(None), id="keyid-null"),
        pytest.param(_keyid(_ABSENT), id="keyid-absent"),
        pytest.param(_keyid(""), id="keyid-empty"),
        pytest.param(_no_tlog_entries, id="tlogEntries-absent-for-key"),
    ],
)
def test_bundle_fields_of_older_signers_are_accepted(
    tmp_path: pathlib.Path, keys: Keys, change: typing.Callable[[dict[str, typing.Any], Keys], None]
) -> None:
    # None of these fields is signed: the DSSE signature over the statement still verifies.
    model, signature = _signed(tmp_path, keys)
    bundle = json.loads(signature.read_bytes())
    change(bundle, keys)
    assert "files 2 " in _verify(model, json.dumps(bundle).encode(), keys)


def test_any_subject_name_is_accepted(tmp_path: pathlib.Path, keys: Keys) -> None:
    model, signature = _signed(tmp_path, keys)

    def hard_coded(document: dict[str, typing.Any]) -> None:
        document["subject"][0]["name"] = "model"

    assert "files 2 " in _verify(model, _resigned(signature, keys, hard_coded), keys)


def test_a_bundle_of_another_media_type_is_refused(tmp_path: pathlib.Path, keys: Keys) -> None:
    model, signature = _signed(tmp_path, keys)
    bundle = json.loads(signature.read_bytes())
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
    message = _refusal(model, json.dumps(bundle).encode(), keys)
    assert message.startswith("MalformedBundle: ")
    assert "mediaType" in message


def test_a_sigstore_keyless_bundle_is_refused_as_unverifiable_offline(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)
    _, leaf = helpers._certificate(tmp_path, "fulcio-leaf", ca=True)
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    bundle = json.loads(signature.read_bytes())
    bundle["verificationMaterial"] = {
        "certificate": {
            "rawBytes": base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
        },
        "tlogEntries": [{"logIndex": "1"}],
    }
    rules = helpers._rules(
        {"signers": [{"name": "ci", "keyless": {"issuer": "https://issuer", "identity": "ci@x"}}]}
    )
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_folder(model, json.dumps(bundle).encode(), rules)
    assert refused.value.reason is Reason.KEYLESS_UNAVAILABLE


@pytest.mark.parametrize(
    ("serialization", "named"),
    [
        pytest.param({"method": "tree"}, "serialization.method", id="unknown-method"),
        pytest.param({"hash_type": "md5"}, "serialization.hash_type", id="unknown-hash"),
        pytest.param(
            {"method": "shards", "shard_size": 0}, "serialization.shard_size", id="shard-size-zero"
        ),
    ],
)
def test_a_serialization_the_verifier_cannot_reproduce_is_refused(
    tmp_path: pathlib.Path, keys: Keys, serialization: dict[str, typing.Any], named: str
) -> None:
    model, signature = _signed(tmp_path, keys)

    def change(document: dict[str, typing.Any]) -> None:
        document["predicate"]["serialization"].update(serialization)

    assert named in _refusal(model, _resigned(signature, keys, change), keys)


def test_unrecognised_resource_descriptor_fields_are_ignored(
    tmp_path: pathlib.Path, keys: Keys
) -> None:
    model, signature = _signed(tmp_path, keys)

    def annotate(document: dict[str, typing.Any]) -> None:
        for resource in document["predicate"]["resources"]:
            resource["annotations"] = {"team": "nlp"}
            resource["uri"] = "https://example.invalid/" + resource["name"]

    assert "files 2 " in _verify(model, _resigned(signature, keys, annotate), keys)
