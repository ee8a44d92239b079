"""`modelguard approve`: signed ModelApproval YAML that verifies, model_signing's root digest,
and a one-line reason with exit 1 for every bad input, never a traceback."""

from __future__ import annotations

import base64
import datetime
import io
import json
import pathlib
from contextlib import redirect_stderr, redirect_stdout

import model_signing
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelguard import cli
from modelguard.api import modelapproval, trustpolicy
from modelguard.trust import approval

DIGEST = "sha256:" + "ab" * 32


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _private(path: pathlib.Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("approve")
    key = ec.generate_private_key(ec.SECP256R1())
    _private(root / "alice.pem", key)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (root / "alice.pub").write_bytes(public)
    _private(root / "rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (root / "encrypted.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (root / "junk.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    return root


def _approve(keys: pathlib.Path, *extra: str) -> tuple[int, str, str]:
    base = ["approve", "--model", "sentiment-bert", "--version", "1.4.0", "--approver", "alice"]
    return _run(*base, "--key", str(keys / "alice.pem"), "--namespace", "team-nlp", *extra)


def test_printed_yaml_parses_and_its_signature_verifies(keys: pathlib.Path) -> None:
    code, out, err = _approve(keys, "--digest", DIGEST, "--reason", "SEC-1", "--expires", "7d")
    assert (code, err) == (0, "")
    item = modelapproval.parse(yaml.safe_load(out))
    assert item.metadata == {"name": "sentiment-bert-1.4.0-alice", "namespace": "team-nlp"}
    assert (item.spec.model, item.spec.version, item.spec.root_digest) == (
        "sentiment-bert",
        "1.4.0",
        DIGEST,
    )
    assert item.spec.reason == "SEC-1"
    remaining = item.spec.expires() - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=6, hours=23) < remaining <= datetime.timedelta(days=7)
    policy = trustpolicy.TrustPolicySpec.model_validate(
        {
            "signers": [{"name": "release", "publicKey": (keys / "alice.pub").read_text()}],
            "approvers": [{"name": "alice", "publicKey": (keys / "alice.pub").read_text()}],
        }
    )
    decision = approval.evaluate_approvals(
        [item],
        policy=policy,
        namespace="team-nlp",
        model="sentiment-bert",
        version="1.4.0",
        root_digest=DIGEST,
        now=datetime.datetime.now(datetime.UTC),
    )
    assert decision.approved, decision.violation
    assert decision.approvers == ("alice",)


def test_explicit_name_and_rfc3339_expiry(keys: pathlib.Path) -> None:
    code, out, _ = _approve(
        keys, "--digest", DIGEST, "--expires", "2099-01-01T00:00:00Z", "--name", "ok-1"
    )
    assert code == 0
    item = modelapproval.parse(yaml.safe_load(out))
    assert (item.name, item.spec.expires_at) == ("ok-1", "2099-01-01T00:00:00Z")


def test_digest_of_equals_model_signings_root_digest(
    keys: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    model = tmp_path / "model"
    for name, content in {
        "config.json": b'{"a": 1}',
        "weights/part-1.bin": b"w" * 5000,
        "a-b/c": b"c",
        "empty": b"",
        ".gitignore": b"*.tmp\n",
        ".git/config": b"[core]\n",
    }.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(content)
    # The default ModelDeployment layout: model.sig inside the model folder.
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys / "alice.pem").sign(
        model, model / "model.sig"
    )
    bundle = json.loads((model / "model.sig").read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    signed_root = statement["subject"][0]["digest"]["sha256"]
    code, out, err = _approve(keys, "--digest-of", str(model))
    assert (code, err) == (0, "")
    assert modelapproval.parse(yaml.safe_load(out)).spec.root_digest == f"sha256:{signed_root}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(["--digest", "sha256:abc"], "InvalidApproval: --digest", id="bad-digest"),
        pytest.param(
            ["--digest", DIGEST, "--expires", "3x"], "InvalidApproval: --expires", id="bad-duration"
        ),
        pytest.param(
            ["--digest", DIGEST, "--expires", "2001-01-01T00:00:00Z"],
            "InvalidApproval: --expires '2001-01-01T00:00:00Z' is not in the future",
            id="past-expiry",
        ),
        pytest.param(
            ["--digest", DIGEST, "--name", "Not A Name"],
            "InvalidApproval: metadata: name 'Not A Name'",
            id="bad-name",
        ),
        pytest.param(
            ["--digest-of", "/nonexistent/model"], "Unreadable: --digest-of", id="no-model-dir"
        ),
    ],
)
def test_bad_arguments_are_one_line(keys: pathlib.Path, extra: list[str], expected: str) -> None:
    code, out, err = _approve(keys, *extra)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("rsa.pem", "not an elliptic-curve key", id="rsa"),
        pytest.param("encrypted.pem", "is encrypted", id="encrypted"),
        pytest.param("junk.pem", "is not a PEM private key", id="junk"),
        pytest.param("missing.pem", "Unreadable: --key", id="missing"),
    ],
)
def test_bad_keys_are_one_line(keys: pathlib.Path, key: str, expected: str) -> None:
    code, out, err = _run(
        "approve",
        "--model",
        "m",
        "--version",
        "1",
        "--approver",
        "alice",
        "--namespace",
        "ns",
        "--digest",
        DIGEST,
        "--key",
        str(keys / key),
    )
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert expected in err


def test_digest_and_digest_of_are_exclusive_and_one_is_required(keys: pathlib.Path) -> None:
    with redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as raised:
        _approve(keys)
    assert raised.value.code == 2
