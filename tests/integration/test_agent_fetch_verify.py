"""`modelguard agent fetch-verify` as the init container runs it: a real subprocess, a model signed
with the real model_signing library, a real S3 server (MinIO), credentials laid out as a mounted
Secret. Success writes byte-identical, read-only files; every tampering is refused with its own
reason, in stderr and the termination log, and leaves nothing in DEST."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import stat
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest

import localcluster
import s3server
import signedmodel
from modelguard.builders import deployment
from modelguard.reconcile import pods
from modelguard.trust import bundle, statement

MIB = 1 << 20
PREFIX = "sentiment/1.0"


def model_files() -> dict[str, bytes]:
    files = signedmodel.demo_files("1.0")
    # Several chunks and batches, so a change late in a large file is caught mid-stream.
    files["weights/big.safetensors"] = signedmodel.safetensors({"w": [0.0]}) + os.urandom(9 * MIB)
    files["weights/part-2.bin"] = os.urandom(3 * MIB + 17)
    return files


@dataclasses.dataclass
class Published:
    server: s3server.S3Server
    bucket: str
    files: dict[str, bytes]
    signature: bytes
    root_digest: str

    @property
    def source(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}/"

    @property
    def signature_uri(self) -> str:
        return f"{self.source}{signedmodel.SIGNATURE_FILE}"

    def put(self, name: str, data: bytes) -> None:
        self.server.put_object(self.bucket, f"{PREFIX}/{name}", data)

    def delete(self, name: str) -> None:
        self.server.delete_object(self.bucket, f"{PREFIX}/{name}")


def publish(
    s3: s3server.S3Server,
    bucket: str,
    tmp_path: Path,
    signing_key: tuple[Path, str],
    files: dict[str, bytes],
) -> Published:
    model = signedmodel.write_model(tmp_path / "signed" / "model", files)
    signature = signedmodel.sign(
        model, private_key=signing_key[0], signature=tmp_path / "signed" / "model.sig"
    )
    signedmodel.publish(s3, bucket=bucket, prefix=PREFIX, files=files, signature=signature)
    signed = statement.parse(bundle.parse(signature).payload)
    return Published(s3, bucket, files, signature, f"sha256:{signed.root_digest.hex()}")


def secret_volume(directory: Path, data: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: KEY -> ..data/KEY, ..data -> ..<ts>."""
    stamped = directory / "..2026_11_22_05_00_00.000000001"
    stamped.mkdir(parents=True)
    for key, value in data.items():
        (stamped / key).write_text(value)
    (directory / "..data").symlink_to(stamped.name)
    for key in data:
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def credentials_for(server: s3server.S3Server, **overrides: str) -> dict[str, str]:
    data = {
        "AWS_ACCESS_KEY_ID": server.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": server.credentials.secret_key,
        "AWS_REGION": server.region,
        "AWS_ENDPOINT_URL": server.endpoint,
    }
    return data | overrides


@dataclasses.dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    termination_log: str


def run_agent(
    published: Published,
    tmp_path: Path,
    *,
    credentials: dict[str, str] | None = None,
    root_digest: str | None = None,
    extra: typing.Sequence[str] = (),
    bound_endpoint: bool = True,
) -> Run:
    """The agent as the operator starts it: bound, like the TrustPolicy's source, to the test's
    S3 server (unless `bound_endpoint` is false: then to AWS S3, the default)."""
    endpoint = published.server.endpoint
    binding = (
        ["--source-endpoint", endpoint, "--signature-endpoint", endpoint] if bound_endpoint else []
    )
    volume = secret_volume(
        tmp_path / "credentials", credentials or credentials_for(published.server)
    )
    termination_log = tmp_path / "termination-log"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelguard.cli",
            "agent",
            "fetch-verify",
            "--source",
            published.source,
            "--signature",
            published.signature_uri,
            "--root-digest",
            root_digest or published.root_digest,
            "--dest",
            str(tmp_path / "dest"),
            "--credentials-dir",
            str(volume),
            "--termination-log",
            str(termination_log),
            *binding,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(
        completed.returncode,
        completed.stdout,
        completed.stderr,
        termination_log.read_text() if termination_log.exists() else "",
    )


def dest_contents(dest: Path) -> dict[str, bytes]:
    found = {}
    for directory, _, names in os.walk(dest):
        for name in names:
            path = Path(directory) / name
            found[path.relative_to(dest).as_posix()] = path.read_bytes()
    return found


def _terminated_pod(*, exit_code: int, message: str) -> dict[str, typing.Any]:
    """A pod whose agent ended as the kubelet reports it, with `message` as it left it."""
    return {
        "metadata": {"name": "m-1", "uid": "pod-uid"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": deployment.AGENT_CONTAINER,
                    "state": {"terminated": {"exitCode": exit_code, "message": message}},
                }
            ]
        },
    }


def test_a_signed_model_is_written_byte_identical_and_read_only(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    published = publish(s3, s3_bucket, tmp_path, signing_key, model_files())
    result = run_agent(published, tmp_path)
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "dest"
    assert dest_contents(dest) == published.files
    summary = result.stdout.strip()
    assert summary.startswith(f"fetched and verified root {published.root_digest} files 5 ")
    assert len(summary.splitlines()) == 1
    # The kubelet keeps it as the termination message: the operator's metrics count the run's
    # bytes and seconds from there.
    assert result.termination_log == summary + "\n"
    (counted,) = pods.agent_runs([_terminated_pod(exit_code=0, message=result.termination_log)])
    assert counted.verified
    assert counted.bytes == sum(len(data) for data in published.files.values())
    assert counted.seconds is not None
    assert f"seconds {counted.seconds:.2f} " in summary
    for directory, dirs, names in os.walk(dest):
        assert stat.S_IMODE(Path(directory).stat().st_mode) == 0o555
        assert not any((Path(directory) / name).is_symlink() for name in dirs + names)
        for name in names:
            assert stat.S_IMODE((Path(directory) / name).stat().st_mode) == 0o444


def test_a_second_run_replaces_what_the_first_wrote(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    """A restarted init container finds its emptyDir as it left it (sealed read-only)."""
    published = publish(s3, s3_bucket, tmp_path, signing_key, signedmodel.demo_files("1.0"))
    first = run_agent(published, tmp_path / "one")
    second_dir = tmp_path / "one"
    (second_dir / "credentials").rename(second_dir / "credentials-first")
    second = run_agent(published, second_dir)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert dest_contents(second_dir / "dest") == published.files


def pickle_bytes() -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)


def _zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def headerless_pickle_in_a_zip() -> bytes:
    # Protocol 4 opcodes without their PROTO header (an import of collections.OrderedDict),
    # as a member of a zip whose name says nothing: the old sniffer saw neither.
    return _zipped({"weights": pickle.dumps(collections.OrderedDict, protocol=4)[2:]})


def keras_lambda() -> bytes:
    layer = {"module": "keras.layers", "class_name": "Lambda", "config": {}}
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [layer]}}
    return _zipped({"metadata.json": b"{}", "config.json": json.dumps(config).encode()})


@dataclasses.dataclass(frozen=True)
class Case:
    reason: str
    files: typing.Callable[[], dict[str, bytes]] = model_files
    tamper: typing.Callable[[Published], None] = lambda _: None
    root_digest: str | None = None
    credentials: typing.Callable[[s3server.S3Server], dict[str, str]] | None = None
    extra: tuple[str, ...] = ()


def _flip_last_byte(published: Published) -> None:
    data = bytearray(published.files["weights/big.safetensors"])
    data[-1] ^= 0x01
    published.put("weights/big.safetensors", bytes(data))


def _rename(published: Published) -> None:
    published.delete("config.json")
    published.put("settings.json", published.files["config.json"])


CASES = {
    "one byte changed": Case("DigestMismatch", tamper=_flip_last_byte),
    "file added": Case(
        "UnexpectedFile", tamper=lambda published: published.put("extra/hook.py", b"print(1)")
    ),
    "file removed": Case(
        "MissingFile", tamper=lambda published: published.delete("tokenizer/vocab.json")
    ),
    "file renamed": Case("MissingFile", tamper=_rename),
    "pickle under an innocent extension": Case(
        "UnsafeFormat",
        files=lambda: signedmodel.demo_files("1.0") | {"weights/model.bin": pickle_bytes()},
    ),
    # The files serialization signs no sizes: the listing's 12 MiB meet spec.model.maxBytes.
    "larger than its bound": Case("ModelTooLarge", extra=("--max-bytes", str(4 * MIB))),
    "pickle without a PROTO header in a zip member": Case(
        "UnsafeFormat",
        files=lambda: signedmodel.demo_files("1.0") | {"model.pt": headerless_pickle_in_a_zip()},
    ),
    "keras archive with a Lambda layer": Case(
        "UnsafeFormat",
        files=lambda: signedmodel.demo_files("1.0") | {"model.keras": keras_lambda()},
    ),
    "wrong root digest": Case("RootDigestMismatch", root_digest="sha256:" + "ab" * 32),
    "garbled bundle": Case(
        "MalformedBundle",
        tamper=lambda published: published.put("model.sig", published.signature[:-40]),
    ),
    "wrong credentials": Case(
        "SourceDenied",
        credentials=lambda server: credentials_for(server, AWS_SECRET_ACCESS_KEY="not-the-key"),  # noqa: S106
    ),
    "a Secret naming another endpoint than the policy's": Case(
        "SourceEndpointNotAllowed",
        credentials=lambda server: credentials_for(
            server, AWS_ENDPOINT_URL=f"http://127.0.0.1:{localcluster.free_port()}"
        ),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_tampering_is_refused_with_its_reason_and_leaves_nothing(
    case: Case,
    s3: s3server.S3Server,
    s3_bucket: str,
    tmp_path: Path,
    signing_key: tuple[Path, str],
) -> None:
    published = publish(s3, s3_bucket, tmp_path, signing_key, case.files())
    case.tamper(published)
    result = run_agent(
        published,
        tmp_path,
        root_digest=case.root_digest,
        credentials=case.credentials(s3) if case.credentials else None,
        extra=case.extra,
    )
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, never a traceback
    assert lines[0].startswith(f"{case.reason}: "), lines[0]
    assert result.termination_log == lines[0] + "\n"
    assert dest_contents(tmp_path / "dest") == {}
    for key, value in credentials_for(s3).items():
        # The endpoint is no secret (one with user information is refused): messages name it.
        if key != "AWS_ENDPOINT_URL" and (value.startswith("mg-") or len(value) > 20):
            assert value not in result.stderr


def test_a_rewritten_bundle_is_refused_when_its_digest_is_pinned(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    """The root digest does not cover file names; the pinned bundle digest does."""
    published = publish(s3, s3_bucket, tmp_path, signing_key, signedmodel.demo_files("1.0"))
    pinned = f"sha256:{hashlib.sha256(published.signature).hexdigest()}"
    ok = run_agent(published, tmp_path / "ok", extra=["--signature-digest", pinned])
    assert ok.returncode == 0, ok.stderr
    published.put("model.sig", published.signature + b"\n")
    refused = run_agent(published, tmp_path / "refused", extra=["--signature-digest", pinned])
    assert refused.returncode == 1
    assert refused.stderr.startswith("SignatureChanged: ")
    assert dest_contents(tmp_path / "refused" / "dest") == {}


def test_pickle_is_admitted_and_reported_under_an_audit_policy(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    files = signedmodel.demo_files("1.0") | {"weights/model.bin": pickle_bytes()}
    published = publish(s3, s3_bucket, tmp_path, signing_key, files)
    result = run_agent(published, tmp_path, extra=["--audit-pickle"])
    assert result.returncode == 0, result.stderr
    assert dest_contents(tmp_path / "dest") == files
    line = "audit UnsafeFormat: file 'weights/model.bin' is "
    assert result.stderr.startswith(line), result.stderr
    assert "admitted because the TrustPolicy's enforcement is Audit" in result.stderr
    # The kubelet keeps it as the termination message, which the operator reads: the summary
    # first (the metrics count it), then what was admitted.
    message = (tmp_path / "termination-log").read_text()
    summary, admitted = message.split("\n", 1)
    assert summary == result.stdout.strip()
    assert admitted.startswith(line), message
    (counted,) = pods.agent_runs([_terminated_pod(exit_code=0, message=message)])
    assert counted.bytes == sum(len(data) for data in files.values())


def test_pickle_is_admitted_when_allowed(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    files = signedmodel.demo_files("1.0") | {"weights/model.bin": pickle_bytes()}
    published = publish(s3, s3_bucket, tmp_path, signing_key, files)
    result = run_agent(published, tmp_path, extra=["--allow-pickle"])
    assert result.returncode == 0, result.stderr
    assert dest_contents(tmp_path / "dest") == files


def test_every_code_capable_format_is_admitted_and_reported_under_audit(
    s3: s3server.S3Server, s3_bucket: str, tmp_path: Path, signing_key: tuple[Path, str]
) -> None:
    files = signedmodel.demo_files("1.0") | {
        "model.keras": keras_lambda(),
        "model.pt": headerless_pickle_in_a_zip(),
    }
    published = publish(s3, s3_bucket, tmp_path, signing_key, files)
    result = run_agent(published, tmp_path, extra=["--allow-format", "Pickle", "--audit-formats"])
    assert result.returncode == 0, result.stderr
    assert dest_contents(tmp_path / "dest") == files
    # Pickle is allowed: no violation. Keras is not: admitted under Audit, and reported.
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("audit UnsafeFormat: file 'model.keras' is a Keras archive "), line
    assert "Lambda" in line
