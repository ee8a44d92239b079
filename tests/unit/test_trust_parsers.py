"""The bundle and statement parsers, paths, formats and policy checks: table cases and
property-based tests (no input crashes a parser; every rejection carries a reason)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import pickle
import struct
import typing
import zipfile
import zlib

import hypothesis
import pytest
from hypothesis import strategies

from modelguard.trust import bundle, digests, formats, paths, policy, reasons, statement

Reason = reasons.Reason


def _statement(**changes: typing.Any) -> dict[str, typing.Any]:
    resources = [{"name": "a.txt", "algorithm": "sha256", "digest": "11" * 32}]
    root = digests.root_digest([digests.Resource("a.txt", "sha256", b"\x11" * 32)]).hex()
    document = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": resources,
        },
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("../secret", "'..'", id="dotdot"),
        pytest.param("a/../../b", "'..'", id="inner-dotdot"),
        pytest.param("a\\b", "backslash", id="backslash"),
        pytest.param("a\x00b", "control character", id="nul"),
        pytest.param("a//b", "normalised", id="empty-component"),
        pytest.param("./a", "normalised", id="dot-component"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_unsafe_names_are_refused(name: str, problem: str) -> None:
    violation = paths.check_name(name, field="resources[0].name")
    assert violation is not None
    assert violation.reason is Reason.UNSAFE_PATH
    assert problem in violation.message
    assert "resources[0].name" in violation.message


@pytest.mark.parametrize("name", ["a", "a/b.c", "tokenizer/vocab.json", "é/ü"])
def test_safe_names_pass(name: str) -> None:
    assert paths.check_name(name) is None


def _torch_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1], protocol=2))
    return buffer.getvalue()


def _npy(descr: str) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}".encode()
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 16


@pytest.mark.parametrize(
    ("content", "expected", "code_capable"),
    [
        pytest.param(pickle.dumps({"a": 1}, protocol=2), "PICKLE", True, id="pickle-2"),
        pytest.param(pickle.dumps({"a": 1}, protocol=5), "PICKLE", True, id="pickle-5"),
        pytest.param(b"cos\nsystem\n(S'id'\ntR.", "PICKLE", True, id="pickle-global"),
        pytest.param(_torch_zip(), "PYTORCH_ZIP", True, id="pytorch-zip"),
        pytest.param(zlib.compress(pickle.dumps([1], 4)), "COMPRESSED", True, id="joblib-zlib"),
        pytest.param(gzip.compress(pickle.dumps([1], 4)), "COMPRESSED", True, id="joblib-gzip"),
        pytest.param(_npy("|O"), "NUMPY_OBJECT", True, id="npy-object"),
        pytest.param(_npy("<f4"), "NUMPY", False, id="npy-float"),
        pytest.param(
            struct.pack("<Q", 2) + b"{}" + b"\x00" * 8, "SAFETENSORS", False, id="safetensors"
        ),
        pytest.param(b"GGUF\x03\x00\x00\x00" + b"\x00" * 16, "GGUF", False, id="gguf"),
        pytest.param(b'{"vocab_size": 32000}\n', "TEXT", False, id="json-config"),
        pytest.param(b"\x08\x07\x12\x04onnx" + bytes(range(256)), "BINARY", False, id="onnx"),
        pytest.param(b"", "EMPTY", False, id="empty"),
    ],
)
def test_formats_are_judged_by_content(content: bytes, expected: str, code_capable: bool) -> None:
    found = formats.sniff(content)
    assert found.format is formats.Format[expected]
    assert found.code_capable is code_capable


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        pytest.param("s3://models/team-a/bert/", True, id="under-prefix"),
        pytest.param("s3://models/team-a", True, id="the-prefix-itself"),
        pytest.param("s3://models/team-ab/bert/", False, id="longer-segment"),
        pytest.param("https://models.example/x", False, id="other-scheme"),
        pytest.param("pvc://store/m", True, id="pvc"),
    ],
)
def test_source_prefixes_match_whole_segments(uri: str, allowed: bool) -> None:
    violation = policy.check_source(
        uri,
        sources=[
            policy.SourceRule(uri="s3://models/team-a/"),
            policy.SourceRule(uri="pvc://store", namespace="team-a"),
        ],
        namespace="team-a",
    )
    assert (violation is None) is allowed
    if violation is not None:
        assert violation.reason is Reason.SOURCE_NOT_ALLOWED


@pytest.mark.parametrize(
    ("document", "reason", "named"),
    [
        pytest.param(_statement(), None, "", id="valid"),
        pytest.param(_statement(_type="x"), Reason.WRONG_PAYLOAD_TYPE, "_type", id="type"),
        pytest.param(
            _statement(predicateType="https://model_signing/Digests/v0.1"),
            Reason.WRONG_PAYLOAD_TYPE,
            "predicateType",
            id="old-predicate",
        ),
        pytest.param(_statement(subject=[]), Reason.MALFORMED_STATEMENT, "subject", id="subjects"),
        pytest.param(
            _statement(
                subject=[{"name": "m", "digest": {"sha256": hashlib.sha256().hexdigest()}}],
                predicate={
                    "serialization": {
                        "method": "files",
                        "hash_type": "sha256",
                        "allow_symlinks": False,
                    },
                    "resources": [],
                },
            ),
            Reason.MALFORMED_STATEMENT,
            "predicate.resources is empty",
            id="no-resources",
        ),
        pytest.param(
            _statement(subject=[{"name": "m", "digest": {"sha256": "00" * 32}}]),
            Reason.ROOT_DIGEST_MISMATCH,
            "subject[0].digest.sha256",
            id="root-digest",
        ),
    ],
)
def test_statement_table(
    document: dict[str, typing.Any], reason: Reason | None, named: str
) -> None:
    payload = json.dumps(document).encode()
    if reason is None:
        assert statement.parse(payload).resources[0].path == "a.txt"
        return
    with pytest.raises(reasons.VerificationError) as refused:
        statement.parse(payload)
    assert refused.value.reason is reason
    assert named in refused.value.message


def _one_shard(name: str, *, shard_size: float) -> dict[str, typing.Any]:
    """A statement of one shard of file `a`, [0, 3), written under `name`."""
    resource = digests.Resource("a", "sha256-sharded-4", b"\x01" * 32, start=0, end=3)
    return _statement(
        subject=[{"name": "m", "digest": {"sha256": digests.root_digest([resource]).hex()}}],
        predicate={
            "serialization": {
                "method": "shards",
                "hash_type": "sha256",
                "shard_size": shard_size,
                "allow_symlinks": False,
            },
            "resources": [{"name": name, "algorithm": "sha256-sharded-4", "digest": "01" * 32}],
        },
    )


def test_shard_size_written_as_a_double_is_read() -> None:
    document = _one_shard("a:0:3", shard_size=4.0)
    parsed = statement.parse(json.dumps(document).encode())
    assert parsed.serialization.shard_size == 4
    assert parsed.file_sizes() == {"a": 3}


def test_a_shard_offset_of_thousands_of_digits_is_refused_not_a_crash() -> None:
    # int() refuses more than 4300 digits with a ValueError: the name must be refused first.
    document = _one_shard("a:0:" + "9" * 5000, shard_size=4)
    with pytest.raises(reasons.VerificationError) as refused:
        statement.parse(json.dumps(document).encode())
    assert refused.value.reason is Reason.MALFORMED_STATEMENT
    assert "is not path:start:end" in refused.value.message


def _check_rejection(error: reasons.VerificationError) -> None:
    assert isinstance(error.reason, Reason)
    assert error.message


json_values = strategies.recursive(
    strategies.none()
    | strategies.booleans()
    | strategies.floats(allow_nan=False)
    | strategies.integers()
    | strategies.text(max_size=20),
    lambda children: (
        strategies.lists(children, max_size=4)
        | strategies.dictionaries(strategies.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    strategies.binary(max_size=512) | json_values.map(lambda v: json.dumps(v).encode())
)
def test_bundle_parser_never_crashes(data: bytes) -> None:
    try:
        bundle.parse_signature_file(data)
    except reasons.VerificationError as error:
        _check_rejection(error)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    envelope=strategies.fixed_dictionaries(
        {},
        optional={
            "payload": strategies.text(max_size=40)
            | strategies.just(base64.b64encode(b"{}").decode()),
            "payloadType": strategies.sampled_from(["application/vnd.in-toto+json", "x"])
            | json_values,
            "signatures": strategies.lists(json_values, max_size=2)
            | strategies.just([{"sig": "AAAA"}]),
        },
    ),
    material=json_values | strategies.just({"publicKey": {"hint": "ab"}}),
)
def test_bundle_parser_never_crashes_on_near_bundles(
    envelope: typing.Any, material: typing.Any
) -> None:
    document = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": material,
        "dsseEnvelope": envelope,
    }
    try:
        bundle.parse_signature_file(json.dumps(document).encode())
    except reasons.VerificationError as error:
        _check_rejection(error)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    path=strategies.lists(
        strategies.sampled_from(
            [
                "_type",
                "subject",
                "predicateType",
                "predicate",
                "serialization",
                "resources",
                0,
                "name",
                "digest",
                "sha256",
                "method",
                "hash_type",
                "shard_size",
                "algorithm",
                "ignore_paths",
                "allow_symlinks",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    value=json_values,
)
def test_statement_parser_never_crashes_on_mutations(
    path: list[typing.Any], value: typing.Any
) -> None:
    document: typing.Any = _statement()
    target = document
    for step in path[:-1]:
        found = isinstance(target, dict) and step in target
        if found or (isinstance(target, list) and isinstance(step, int) and step < len(target)):
            target = target[step]
    if isinstance(target, dict) and isinstance(path[-1], str):
        target[path[-1]] = value
    elif isinstance(target, list) and target:
        target[0] = value
    try:
        statement.parse(json.dumps(document).encode())
    except reasons.VerificationError as error:
        _check_rejection(error)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(strategies.binary(max_size=256))
def test_statement_parser_and_sniffer_never_crash_on_bytes(data: bytes) -> None:
    formats.sniff(data)
    try:
        statement.parse(data)
    except reasons.VerificationError as error:
        _check_rejection(error)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(
            b"[" + b"{}," * (bundle.MAX_STRUCTURE_BYTES // 3) + b"{}]",
            f"more than {bundle.MAX_STRUCTURE_BYTES} bytes of JSON outside its base64 strings",
            id="a-flood-of-tiny-objects",
        ),
        pytest.param(
            (b"[" + b"{}," * (bundle.MAX_STRUCTURE_BYTES // 5) + b"{}]\n") * 2,
            f"more than {bundle.MAX_STRUCTURE_BYTES} bytes of JSON outside its base64 strings",
            id="the-flood-split-over-jsonl-lines",
        ),
        pytest.param(
            b'"' + b"a" * bundle.MAX_SIGNATURE_FILE_BYTES + b'"',
            f"larger than {bundle.MAX_SIGNATURE_FILE_BYTES} bytes",
            id="too-large",
        ),
    ],
)
def test_a_hostile_signature_file_is_refused_before_it_is_parsed(data: bytes, problem: str) -> None:
    # It is read before any signature is checked, by the operator: parsing it must not cost
    # memory out of proportion with a bundle.
    with pytest.raises(reasons.VerificationError) as refused:
        bundle.parse_signature_file(data)
    assert refused.value.reason is reasons.Reason.MALFORMED_BUNDLE
    assert problem in refused.value.message
