"""`modelguard verify`: a one-line reason and exit 1 for every bad input, never a traceback."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import model_signing
import pytest
import test_agent_fetchverify
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard import cli


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("cli")
    key = ec.generate_private_key(ec.SECP384R1())
    (root / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (root / "key.pub").write_bytes(public)
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"a": 1}')
    model_signing.signing.Config().use_elliptic_key_signer(private_key=root / "key.pem").sign(
        root / "model", root / "model.sig"
    )
    indented = "\n".join("        " + line for line in public.decode().splitlines())
    (root / "policy.yaml").write_text(
        "apiVersion: modelguard.dev/v1alpha1\nkind: TrustPolicy\nmetadata: {name: default}\n"
        f"spec:\n  signers:\n    - name: release\n      publicKey: |\n{indented}\n"
    )
    (root / "bad.yaml").write_text("spec: [unclosed\n")
    (root / "wrong.yaml").write_text("spec: {signers: [{name: x, publicKey: nope}]}\n")
    (root / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    # An EC key on secp112r1, which cryptography refuses with UnsupportedAlgorithm.
    odd_curve = "MDIwEAYHKoZIzj0CAQYFK4EEAAYDHgAEAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=="
    (root / "odd-curve.pem").write_text(
        f"-----BEGIN PUBLIC KEY-----\n{odd_curve}\n-----END PUBLIC KEY-----\n"
    )
    (root / "odd-curve.yaml").write_text(
        "spec:\n  signers:\n    - name: x\n      publicKey: |\n"
        f"        -----BEGIN PUBLIC KEY-----\n        {odd_curve}\n"
        "        -----END PUBLIC KEY-----\n"
    )
    return root


def test_policy_file_verifies(signed: pathlib.Path) -> None:
    code, out, err = _run(
        "verify",
        str(signed / "model"),
        "--signature",
        str(signed / "model.sig"),
        "--policy",
        str(signed / "policy.yaml"),
    )
    assert (code, err) == (0, "")
    assert out.startswith("verified root sha256:")
    assert "signer release files 1 bytes 8" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--public-key", "missing.pub"], "Unreadable: --public-key", id="no-key"),
        pytest.param(["--public-key", "bad.pem"], "InvalidKey: --public-key", id="bad-pem"),
        pytest.param(
            ["--certificate-root", "bad.pem"], "InvalidKey: --certificate-root", id="bad-root"
        ),
        pytest.param(["--policy", "bad.yaml"], "InvalidPolicy: --policy", id="bad-yaml"),
        pytest.param(
            ["--policy", "wrong.yaml"], "InvalidPolicy: spec.signers[0].publicKey", id="bad-policy"
        ),
        pytest.param(["--policy", "model.sig"], "InvalidPolicy", id="policy-not-an-object"),
        pytest.param(
            ["--public-key", "odd-curve.pem"], "InvalidKey: --public-key", id="unsupported-curve"
        ),
        pytest.param(
            ["--policy", "odd-curve.yaml"],
            "InvalidPolicy: spec.signers[0].publicKey: must be an elliptic-curve",
            id="policy-key-on-an-unsupported-curve",
        ),
    ],
)
def test_bad_inputs_give_a_reason_not_a_traceback(
    signed: pathlib.Path, args: list[str], expected: str
) -> None:
    args = [args[0], str(signed / args[1])]
    code, out, err = _run(
        "verify", str(signed / "model"), "--signature", str(signed / "model.sig"), *args
    )
    assert code == 1
    assert out == ""
    assert err.startswith(expected), err
    assert "Traceback" not in err


def test_unreadable_signature_and_folder(signed: pathlib.Path) -> None:
    key = ["--public-key", str(signed / "key.pub")]
    code, _, err = _run("verify", str(signed / "model"), "--signature", str(signed / "nope"), *key)
    assert (code, err.split(":")[0]) == (1, "Unreadable")
    code, _, err = _run(
        "verify", str(signed / "nope"), "--signature", str(signed / "model.sig"), *key
    )
    assert (code, err.split(":")[0]) == (1, "Unreadable")


def test_a_trust_source_is_required() -> None:
    with pytest.raises(SystemExit) as exited, redirect_stderr(io.StringIO()):
        cli.main(["verify", "dir", "--signature", "x.sig"])
    assert exited.value.code == 2


def _probe_verify(after: str, signed: pathlib.Path, *, key: str) -> str:
    """The last line `after` prints, run in a fresh interpreter once `modelguard verify` (with
    --public-key `key`) has returned `code`."""
    probe = f"import gc, sys\nfrom modelguard import cli\ncode = cli.main(sys.argv[1:])\n{after}\n"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "verify",
            str(signed / "model"),
            "--signature",
            str(signed / "model.sig"),
            "--public-key",
            str(signed / key),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout, result.stderr
    return result.stdout.splitlines()[-1]


def test_verifying_with_a_public_key_loads_neither_x509_nor_the_api_models(
    signed: pathlib.Path,
) -> None:
    # Each is a large share of the command's start-up, and none is needed: x509 only for
    # certificate signers, pydantic and YAML only for a --policy file.
    unneeded = ("cryptography.x509", "pydantic", "modelguard.api.trustpolicy", "yaml")
    after = f"print(code, [name for name in {unneeded!r} if name in sys.modules])"
    assert _probe_verify(after, signed, key="key.pub") == "0 []"


@pytest.mark.parametrize("key", ["key.pub", "bad.pem"])
def test_start_up_imports_are_frozen_and_the_collector_runs_again(
    signed: pathlib.Path, key: str
) -> None:
    # The imports run without the cyclic collector (cli._start_up); whatever the outcome, the
    # collector is back on for the rest, and what the imports made is frozen, not scanned again.
    after = "print(code, gc.isenabled(), gc.get_freeze_count() > 10000)"
    code = 0 if key == "key.pub" else 1
    assert _probe_verify(after, signed, key=key) == f"{code} True True"


def _signed_with(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    model = root / "code-capable"
    for name, content in files.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(content)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=root / "key.pem").sign(
        model, root / "code-capable.sig"
    )
    return model


@pytest.mark.parametrize(
    ("name", "sample"),
    test_agent_fetchverify.CODE_CAPABLE.values(),
    ids=test_agent_fetchverify.CODE_CAPABLE.keys(),
)
def test_code_capable_files_are_refused_as_the_agent_refuses_them(
    signed: pathlib.Path, tmp_path: pathlib.Path, name: str, sample: tuple[bytes, str]
) -> None:
    content, family = sample
    for key in ("key.pem", "key.pub"):
        (tmp_path / key).write_bytes((signed / key).read_bytes())
    model = _signed_with(tmp_path, {"config.json": b'{"a": 1}', name: content})
    key = ["--public-key", str(tmp_path / "key.pub")]
    code, out, err = _run(
        "verify", str(model), "--signature", str(tmp_path / "code-capable.sig"), *key
    )
    assert (code, out) == (1, "")
    assert err.startswith(f"UnsafeFormat: file {name!r} is "), err
    assert err.strip().endswith(f"admitting it needs {family} in spec.formats.allow"), err
    # The TrustPolicy opts in, family by family.
    policy = (signed / "policy.yaml").read_text() + f"  formats:\n    allow: [{family}]\n"
    (tmp_path / "allow.yaml").write_text(policy)
    allowed = ["--policy", str(tmp_path / "allow.yaml")]
    code, out, err = _run(
        "verify", str(model), "--signature", str(tmp_path / "code-capable.sig"), *allowed
    )
    assert (code, err) == (0, ""), err
