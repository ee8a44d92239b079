"""What reading a signature file may cost: hostile files within the limits stay within a memory
bound set by the limits, never by what the file holds; each limit is refused naming the file or
field and the limit; real bundles of large models still verify.

Memory is measured with tracemalloc (allocations, not time), in the process, around the very call
the operator makes: verify.verify_signatures.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gc
import json
import pathlib
import string
import tracemalloc
import typing

import hypothesis
import model_signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import strategies
from model_signing import hashing

from modelguard.api import trustpolicy
from modelguard.trust import bundle, digests, policy, reasons, signatures, statement, verify

Reason = reasons.Reason
MiB = 1024 * 1024
# Within the limits of every version of the parser, so that each case reaches the parser.
SIZE = 12 * MiB
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.rules = policy.rules_of(
            trustpolicy.TrustPolicySpec.model_validate(
                {"signers": [{"name": "team", "publicKey": pem.decode()}]}
            )
        )

    def bundle(
        self,
        payload: bytes,
        *,
        signed: bool = True,
        payload_text: str | None = None,
        material: dict[str, typing.Any] | None = None,
        sig: bytes | None = None,
    ) -> dict[str, typing.Any]:
        """A bundle as model_signing's key method writes it; its signature a valid one over
        `payload` unless `signed` is False."""
        if sig is None:
            sig = (
                self.key.sign(signatures.pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
                if signed
                else bytes(70)
            )
        return {
            "mediaType": bundle.MEDIA_TYPE,
            "verificationMaterial": material
            or {"publicKey": {"hint": signatures.key_hint(self.key.public_key())}},
            "dsseEnvelope": {
                "payload": payload_text or base64.b64encode(payload).decode(),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        }

    def file(self, payload: bytes, **options: typing.Any) -> bytes:
        return json.dumps(self.bundle(payload, **options)).encode()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def _fill(unit: bytes, size: int, *, head: bytes = b"[", tail: bytes = b"]") -> bytes:
    """`head`, then `unit` as often as fits in `size` bytes, then `tail`."""
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def _peak(signer: Signer, data: bytes) -> tuple[int, reasons.VerificationError | None]:
    """Traced peak memory of verifying `data` (beyond the bytes themselves), and its refusal."""
    gc.collect()
    tracemalloc.start()
    refusal = None
    try:
        verify.verify_signatures(data, signer.rules)
    except reasons.VerificationError as error:
        refusal = error
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, refusal


# --- unsigned hostile files: what anyone who can write to an allowed source can make ----------


def _short_strings(signer: Signer, size: int) -> bytes:
    # Python holds "ab" in some 60 bytes: twelve times its five bytes of JSON.
    return _fill(b'"ab",', size, tail=b'"ab"]')


def _floats(signer: Signer, size: int) -> bytes:
    return _fill(b"1.5,", size, tail=b"1.5]")


def _small_objects(signer: Signer, size: int) -> bytes:
    return _fill(b'{"a":1},', size, tail=b"{}]")


def _statement_of_tiny_objects(signer: Signer, size: int) -> bytes:
    # A bundle around a payload only a parse of the statement would expand; not signed.
    return signer.file(_fill(b"{},", size * 3 // 4 - 1024, tail=b"{}]"), signed=False)


def _payload_widened(signer: Signer, size: int) -> bytes:
    # One escape makes Python hold the whole payload string at four bytes a character.
    text = base64.b64encode(bytes(size * 3 // 4 - 1024)).decode()
    document = json.dumps(signer.bundle(b"", payload_text=text[:-12] + "@@@@@@@@@@@@"))
    return document.replace("@@@@@@@@@@@@", "\\ud83d\\ude00").encode()


def _non_ascii_file(signer: Signer, size: int) -> bytes:
    # One raw four-byte character makes the file's text four bytes a character.
    return b'{"a": "\xf0\x9f\x98\x80", "b": "' + b"a b" * ((size - 32) // 3) + b'"}'


def _many_jsonl_lines(signer: Signer, size: int) -> bytes:
    line = signer.file(b"{}", signed=False) + b"\n"
    return line * (size // len(line))


def _deep_nesting(signer: Signer, size: int) -> bytes:
    return b"[" * (size // 2) + b"]" * (size // 2)


def _long_number(signer: Signer, size: int) -> bytes:
    return b"[1." + b"1" * (size - 4) + b"]"


def _unterminated_strings(signer: Signer, size: int) -> bytes:
    # Every quote but the first is escaped: a naive scan would start over at each one.
    return b'["' + b'\\"' * ((size - 2) // 2)


UNSIGNED: dict[str, typing.Callable[[Signer, int], bytes]] = {
    "short-strings": _short_strings,
    "floats": _floats,
    "small-objects": _small_objects,
    "statement-of-tiny-objects": _statement_of_tiny_objects,
    "payload-widened-by-an-escape": _payload_widened,
    "non-ascii-file": _non_ascii_file,
    "many-jsonl-lines": _many_jsonl_lines,
    "deep-nesting": _deep_nesting,
    "long-number": _long_number,
    "unterminated-strings": _unterminated_strings,
}


@pytest.mark.parametrize("size", [SIZE, bundle.MAX_SIGNATURE_FILE_BYTES], ids=["12MiB", "limit"])
@pytest.mark.parametrize("make", UNSIGNED.values(), ids=UNSIGNED.keys())
def test_a_hostile_signature_file_costs_at_most_its_size_again(
    signer: Signer, make: typing.Callable[[Signer, int], bytes], size: int
) -> None:
    # Read by the operator before any signature is checked: without a bound, a few at once
    # get it OOM-killed, and its fail-closed webhooks then block writes cluster-wide.
    data = make(signer, size)
    assert len(data) <= bundle.MAX_SIGNATURE_FILE_BYTES
    peak, refusal = _peak(signer, data)
    assert refusal is not None
    # At most the payload decoded (three quarters of the file) and the JSON around it.
    assert peak < len(data), f"{peak / MiB:.1f} MiB for a {len(data) / MiB:.1f} MiB file"


def _self_signed(name: str) -> tuple[x509.Certificate, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, certificate.public_bytes(serialization.Encoding.DER)


def _rules_and_file(signer: Signer, method: str) -> tuple[policy.Rules, bytes]:
    payload = b"[" + b"{}," * (SIZE // 4) + b"{}]"
    if method == "key":
        return signer.rules, signer.file(payload, signed=False)
    # A chain that reaches none of the policy's roots: each root's refusal is kept, then judged.
    root, _ = _self_signed("root")
    _, leaf = _self_signed("leaf")
    rules = dataclasses.replace(
        signer.rules, signers=(signatures.CertificateSigner("ca", roots=(root,)),)
    )
    material = {"x509CertificateChain": {"certificates": [{"rawBytes": _b64(leaf)}]}}
    return rules, signer.file(payload, signed=False, material=material)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("method", ["key", "certificate"])
def test_a_refused_file_is_released_at_once(signer: Signer, method: str) -> None:
    # Nothing of a refused file may outlive its refusal: kept until the garbage collector next
    # ran (a refusal kept beside the frame that holds the file is a cycle), a burst of them adds
    # up whatever bounds each.
    rules, data = _rules_and_file(signer, method)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    refused = None
    try:
        try:
            verify.verify_signatures(data, rules)
        except reasons.VerificationError as error:
            refused = error.reason  # the error itself is let go, as the operator does
        left, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert refused in (Reason.BAD_SIGNATURE, Reason.UNTRUSTED_SIGNER)
    assert left < MiB, f"{left / MiB:.1f} MiB left after refusing a {len(data) / MiB:.1f} MiB file"


# --- statements signed by a trusted key: a signer's key stolen, or a signer who misbehaves -----

# What parsing any statement the limits admit may cost at most, beyond the file itself: the
# decoded payload (24 MiB), its text (24 MiB) and the parsed document, bounded by the value count
# (statement.MAX_VALUES values of some 60 bytes). The largest real statement, 100,000 files, takes
# about 80 MiB (docs/decisions/0009-bounded-signature-files.md).
STATEMENT_CEILING = 160 * MiB


def _signed_tiny_objects(signer: Signer, size: int) -> bytes:
    return signer.file(_fill(b"{},", size * 3 // 4 - 1024, tail=b"{}]"))


# Values just under the bound (statement.MAX_VALUES), in as few bytes as they can be written.
VALUES = 1_000_000


def _signed_short_strings(signer: Signer, size: int) -> bytes:
    count = min((size * 3 // 4 - 1024) // 5, VALUES)
    return signer.file(b"[" + b'"ab",' * count + b'"ab"]')


def _signed_floats(signer: Signer, size: int) -> bytes:
    count = min((size * 3 // 4 - 1024) // 5, VALUES)
    return signer.file(b"[" + b"1.25," * count + b"1.0]")


def _signed_widened_name(signer: Signer, size: int) -> bytes:
    # One name as long as the payload allows, held at four bytes a character by one escape.
    name = b"a" * (size * 3 // 4 - 2048)
    return signer.file(b'{"resources": [{"name": "' + name + b'\\ud83d\\ude00"}]}')


def _signed_raw_wide_text(signer: Signer, size: int) -> bytes:
    return signer.file(b'{"a": "' + "😀".encode() * ((size * 3 // 4 - 2048) // 4) + b'"}')


def _signed_values_and_text(signer: Signer, size: int) -> bytes:
    # Both bounds reached at once: the most values, and one string filling the rest.
    room = size * 3 // 4 - 2048
    count = min(room // 5, VALUES)
    return signer.file(b'["' + b"a" * (room - 5 * count) + b'",' + b'"ab",' * count + b'"ab"]')


SIGNED: dict[str, typing.Callable[[Signer, int], bytes]] = {
    "tiny-objects": _signed_tiny_objects,
    "short-strings": _signed_short_strings,
    "floats": _signed_floats,
    "a-name-widened-by-an-escape": _signed_widened_name,
    "raw-wide-text": _signed_raw_wide_text,
    "values-and-text-at-the-limits": _signed_values_and_text,
}


@pytest.mark.parametrize("size", [SIZE, bundle.MAX_SIGNATURE_FILE_BYTES], ids=["12MiB", "limit"])
@pytest.mark.parametrize("make", SIGNED.values(), ids=SIGNED.keys())
def test_a_hostile_statement_signed_by_a_trusted_key_costs_a_bounded_amount(
    signer: Signer, make: typing.Callable[[Signer, int], bytes], size: int
) -> None:
    data = make(signer, size)
    assert len(data) <= bundle.MAX_SIGNATURE_FILE_BYTES
    peak, refusal = _peak(signer, data)
    assert refusal is not None
    assert refusal.reason is Reason.MALFORMED_STATEMENT, refusal
    assert peak < STATEMENT_CEILING, f"{peak / MiB:.1f} MiB for a {len(data) / MiB:.1f} MiB file"


def _largest_statement(signer: Signer, size: int) -> bytes:
    """A valid statement as model_signing writes it, of as many files as the limits allow, with
    names as long as the payload then allows."""
    count = 100_000
    name_length = (size * 3 // 4 - 4096) // count - 160
    resources = [
        digests.Resource(f"{index:06d}-" + "n" * (name_length - 7), "sha256", bytes(32))
        for index in range(count)
    ]
    document = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": digests.root_digest(resources).hex()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"hash_type": "sha256", "allow_symlinks": False, "method": "files"},
            "resources": [
                {"digest": r.digest.hex(), "algorithm": "sha256", "name": r.path} for r in resources
            ],
        },
    }
    return signer.file(json.dumps(document, indent=2).encode())


def test_the_largest_statement_the_limits_admit_verifies_within_the_ceiling(
    signer: Signer,
) -> None:
    data = _largest_statement(signer, bundle.MAX_SIGNATURE_FILE_BYTES)
    assert len(data) <= bundle.MAX_SIGNATURE_FILE_BYTES
    peak, refusal = _peak(signer, data)
    assert refusal is None
    assert peak < STATEMENT_CEILING, f"{peak / MiB:.1f} MiB for a {len(data) / MiB:.1f} MiB file"


# --- each limit, refused with its reason, naming the file or field and the limit -------------


def _certificate_chain(count: int, *, raw: bytes = b"\x30" * 1200) -> dict[str, typing.Any]:
    encoded = base64.b64encode(raw).decode()
    return {"x509CertificateChain": {"certificates": [{"rawBytes": encoded}] * count}}


def _refused_file(signer: Signer, case: str) -> bytes:
    statement_with = signer.file
    files: dict[str, typing.Callable[[], bytes]] = {
        "too-large": lambda: b" " * (bundle.MAX_SIGNATURE_FILE_BYTES + 1),
        "structure": lambda: _fill(b"0,", bundle.MAX_STRUCTURE_BYTES + 2, tail=b"0]"),
        "lines": lambda: (signer.file(b"{}") + b"\n") * (bundle.MAX_BUNDLES + 1),
        "certificates": lambda: signer.file(
            b"{}", material=_certificate_chain(bundle.MAX_CERTIFICATES + 1)
        ),
        "certificate-size": lambda: signer.file(
            b"{}", material=_certificate_chain(1, raw=bytes(bundle.MAX_CERTIFICATE_BYTES + 3))
        ),
        "signature-size": lambda: signer.file(b"{}", sig=bytes(bundle.MAX_SIGNATURE_BYTES + 3)),
        "hint": lambda: signer.file(
            b"{}", material={"publicKey": {"hint": "ab" * bundle.MAX_HINT_CHARS}}
        ),
        "unterminated": lambda: b'{"mediaType": "' + b"a" * 2000,
        "resources": lambda: statement_with(
            b'{"resources": [' + b"{}," * statement.MAX_OBJECTS + b"{}]}"
        ),
        "values": lambda: statement_with(b"[" + b"0," * statement.MAX_VALUES + b"0]"),
        "text": lambda: statement_with(
            b'"' + "😀".encode() * (statement.MAX_TEXT_BYTES // 16 + 1) + b'"'
        ),
    }
    return files[case]()


@pytest.mark.parametrize(
    ("case", "reason", "message"),
    [
        pytest.param(
            "too-large",
            Reason.MALFORMED_BUNDLE,
            f"signature file is larger than {bundle.MAX_SIGNATURE_FILE_BYTES} bytes",
            id="file-size",
        ),
        pytest.param(
            "structure",
            Reason.MALFORMED_BUNDLE,
            f"signature file has more than {bundle.MAX_STRUCTURE_BYTES} bytes of JSON outside "
            "its base64 strings",
            id="json-outside-base64",
        ),
        pytest.param(
            "lines",
            Reason.MALFORMED_BUNDLE,
            f"signature file holds {bundle.MAX_BUNDLES + 1} bundles (lines); at most "
            f"{bundle.MAX_BUNDLES} are read",
            id="jsonl-lines",
        ),
        pytest.param(
            "certificates",
            Reason.MALFORMED_BUNDLE,
            f"bundle: verificationMaterial.x509CertificateChain.certificates holds "
            f"{bundle.MAX_CERTIFICATES + 1} certificates; at most {bundle.MAX_CERTIFICATES}",
            id="certificate-count",
        ),
        pytest.param(
            "certificate-size",
            Reason.MALFORMED_BUNDLE,
            "bundle: verificationMaterial.x509CertificateChain.certificates[0].rawBytes is larger "
            f"than {bundle.MAX_CERTIFICATE_BYTES} bytes",
            id="certificate-size",
        ),
        pytest.param(
            "signature-size",
            Reason.MALFORMED_BUNDLE,
            f"bundle: dsseEnvelope.signatures[0].sig is larger than {bundle.MAX_SIGNATURE_BYTES} "
            "bytes",
            id="signature-size",
        ),
        pytest.param(
            "hint",
            Reason.MALFORMED_BUNDLE,
            "bundle: verificationMaterial.publicKey.hint is longer than "
            f"{bundle.MAX_HINT_CHARS} characters",
            id="key-hint",
        ),
        pytest.param(
            "unterminated",
            Reason.MALFORMED_BUNDLE,
            "signature file is not JSON: a string is not terminated",
            id="unterminated-string",
        ),
        pytest.param(
            "resources",
            Reason.MALFORMED_STATEMENT,
            f"statement has more than {statement.MAX_OBJECTS} JSON objects; at most "
            f"{statement.MAX_RESOURCES} resources are read",
            id="statement-objects",
        ),
        pytest.param(
            "values",
            Reason.MALFORMED_STATEMENT,
            f"statement has more than {statement.MAX_VALUES} JSON values",
            id="statement-values",
        ),
        pytest.param(
            "text",
            Reason.MALFORMED_STATEMENT,
            f"at 4 bytes a character; at most {statement.MAX_TEXT_BYTES} bytes of text are read",
            id="statement-text",
        ),
    ],
)
def test_each_limit_is_refused_naming_it(
    signer: Signer, case: str, reason: Reason, message: str
) -> None:
    with pytest.raises(reasons.VerificationError) as refused:
        verify.verify_signatures(_refused_file(signer, case), signer.rules)
    assert refused.value.reason is reason
    assert message in refused.value.message


def test_a_refused_value_is_quoted_short(signer: Signer) -> None:
    # A refusal's message goes into the model's status: never as large as the file.
    document = signer.bundle(b"{}")
    for media_type, shown in [
        ("x-" * 50_000, "mediaType 'x-x-x-"),
        ("A" * 50_000, "mediaType a base64 string of 50000 characters"),
    ]:
        document["mediaType"] = media_type
        with pytest.raises(reasons.VerificationError) as refused:
            bundle.parse_signature_file(json.dumps(document).encode())
        assert shown in refused.value.message
        assert len(refused.value.message) < 300


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a/é/ü.bin", id="latin-1"),
        pytest.param("層/名前.bin", id="bmp"),
        pytest.param("emoji-😀.bin", id="astral"),
    ],
)
def test_a_cut_out_base64_string_reads_as_json_would(signer: Signer, text: str) -> None:
    # Long base64 strings are decoded from the file's bytes, not through json.loads: what is read
    # must be what json.loads reads, whatever escapes and characters sit around them.
    payload = json.dumps({"name": text, "pad": "p" * 3000}).encode()
    document = signer.bundle(payload)
    document["verificationMaterial"]["note"] = text
    for ensure_ascii in (True, False):
        data = json.dumps(document, ensure_ascii=ensure_ascii).encode()
        (read,) = bundle.parse_signature_file(data)
        assert read.payload == payload
        assert read.signature == base64.b64decode(document["dsseEnvelope"]["signatures"][0]["sig"])


def test_a_file_json_refuses_is_refused_with_its_long_strings_cut_out(signer: Signer) -> None:
    # A cut string is replaced by a placeholder; the text around it must still be judged as
    # written: here a raw control character in a short string.
    document = json.dumps(signer.bundle(b"x" * 3000)).replace('"keyid": ""', '"keyid": "\x01"')
    with pytest.raises(reasons.VerificationError) as refused:
        bundle.parse_signature_file(document.encode())
    assert "is not JSON" in refused.value.message


_BASE64_CHARACTERS = string.ascii_letters + string.digits + "+/="
# What could make a cut go astray: quotes, escapes, control characters, wide characters,
# structure, and base64 strings just short of the length that gets them cut.
_tricky_text = strategies.text(alphabet='aZ9+/="\\\n\x01é層😀{}[],: ', max_size=12)
_long_base64 = strategies.text(alphabet=_BASE64_CHARACTERS, min_size=1000, max_size=1100)
_json_values = strategies.recursive(
    strategies.none()
    | strategies.booleans()
    | strategies.integers()
    | strategies.floats(allow_nan=False)
    | _tricky_text
    | _long_base64,
    lambda children: (
        strategies.lists(children, max_size=3)
        | strategies.dictionaries(_tricky_text | _long_base64, children, max_size=3)
    ),
    max_leaves=10,
)


def _as_json_reads(data: bytes) -> typing.Any:
    """json.loads of `data` as UTF-8, or the name of its error."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return "refused"


def _as_we_read(data: bytes) -> typing.Any:
    """The document as parse_signature_file reads it, each cut string put back."""
    try:
        document = bundle._Document.of(data)
        parsed = document.loads(document.text)
    except (reasons.VerificationError, ValueError):
        return "refused"

    def back(value: typing.Any) -> typing.Any:
        if isinstance(value, str) and value in document.spans:
            start, end = document.spans[value]
            return data[start:end].decode("ascii")
        if isinstance(value, list):
            return [back(item) for item in value]
        if isinstance(value, dict):
            return {back(key): back(item) for key, item in value.items()}
        return value

    return back(parsed)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    value=_json_values,
    ensure_ascii=strategies.booleans(),
    edits=strategies.lists(
        strategies.tuples(
            strategies.floats(min_value=0, max_value=1),
            strategies.sampled_from(['"', "\\", "\\u", ",", "{", "]", "\x01", "é", "A", ""]),
        ),
        max_size=3,
    ),
)
def test_cutting_out_base64_strings_reads_what_json_reads(
    value: typing.Any, ensure_ascii: bool, edits: list[tuple[float, str]]
) -> None:
    # The safety of reading long strings in place rests on this: for any file, valid or broken,
    # json.loads of the cut text refuses exactly what json.loads of the file refuses, and reads
    # the same values. The edits break files where a cut could go astray.
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    for where, inserted in edits:
        at = int(where * len(text))
        text = text[:at] + inserted + text[at + (not inserted) :]
    data = text.encode("utf-8")
    assert _as_we_read(data) == _as_json_reads(data)


# --- real bundles of large models, signed by model_signing ---------------------------------


def _sign(model: pathlib.Path, signature: pathlib.Path, private: pathlib.Path, **how: int) -> bytes:
    config = hashing.Config()
    config = (
        config.use_shard_serialization(shard_size=how["shard_size"])
        if how
        else config.use_file_serialization()
    )
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        config
    ).sign(model, signature)
    return signature.read_bytes()


@pytest.fixture(scope="module")
def large_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, Signer]]:
    root = tmp_path_factory.mktemp("large")
    signer = Signer()
    private = root / "key.pem"
    private.write_bytes(
        signer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files = root / "files"
    for index in range(10_000):
        path = files / f"layers/{index // 100:03d}/part-{index:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(str(index).encode())
    shards = root / "shards"
    shards.mkdir()
    for index in range(10):  # 100 shards of 1 KiB each
        (shards / f"model-{index + 1:05d}-of-00010.safetensors").write_bytes(
            index.to_bytes(1, "little") * 100 * 1024
        )
    return {
        "10000-files": (_sign(files, root / "files.sig", private), signer),
        "1000-shards": (_sign(shards, root / "shards.sig", private, shard_size=1024), signer),
    }


@pytest.mark.parametrize(("model", "resources"), [("10000-files", 10_000), ("1000-shards", 1000)])
def test_real_bundles_of_large_models_verify_within_the_limits(
    large_models: dict[str, tuple[bytes, Signer]], model: str, resources: int
) -> None:
    signature_file, signer = large_models[model]
    signed = verify.verify_signatures(signature_file, signer.rules)
    assert len(signed.statement.resources) == resources
    # The limits hold ten times as many files, with names this long.
    assert 10 * len(signature_file) <= bundle.MAX_SIGNATURE_FILE_BYTES
    assert 10 * resources <= statement.MAX_RESOURCES
    peak, refusal = _peak(signer, signature_file)
    assert refusal is None
    # Parsing what is real costs a few times the file, nowhere near the ceiling.
    assert peak < 6 * len(signature_file)
