"""`modelguard audit verify` and `audit public-key`: a one-line summary and exit 0 for a log that
its checkpoints prove; exit 1 and the first problem otherwise; checkpoints read as a folder of
notes or as kubectl prints ConfigMaps; never a traceback."""

from __future__ import annotations

import datetime
import io
import json
import sys
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from modelguard import cli, kube
from modelguard.audit import checkpoints, keys, records, sink
from modelguard.commands import auditlog
from modelguard.reconcile import checkpoints as publishing

LOG = "modelguard-system/modelguard"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class Installation:
    """An audit key on disk, a log written with it, and its checkpoints as the operator
    publishes them."""

    def __init__(self, tmp_path: Path, *, signer: keys.Signer | None = None) -> None:
        self.signer = signer or keys.generate(LOG)
        self.key_file = tmp_path / "audit.pem"
        self.key_file.write_bytes(
            self.signer.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.log = tmp_path / "audit.jsonl"
        self.made: list[checkpoints.Signed] = []
        self.tmp_path = tmp_path

    def segment(
        self, *messages: str, clock: typing.Callable[[], datetime.datetime] | None = None
    ) -> sink.Sink:
        audit = sink.open_log(
            str(self.log),
            instance="modelguard-0",
            signer=self.signer,
            clock=clock or (lambda: datetime.datetime.now(datetime.UTC)),
        )
        self._keep(audit.checkpoint(force=True))
        for message in messages:
            audit.record(records.Decision.QUARANTINED, reason="SpecQuarantine", message=message)
        self._keep(audit.close(reason="OperatorStopped", message="stop"))
        return audit

    def _keep(self, made: checkpoints.Signed | None) -> None:
        assert made is not None
        self.made.append(made)

    def folder(self) -> Path:
        """The checkpoints as a store keeps them: one note per object."""
        folder = self.tmp_path / "store"
        for made in self.made:
            path = folder / made.checkpoint.origin / f"{made.checkpoint.size:020d}.checkpoint"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(made.note)
        return folder

    def kubectl_list(self, *, format: str) -> Path:
        """The checkpoints as `kubectl get configmaps -l ... -o json|yaml` prints them."""
        # Only the manifest is asked for: no API server is needed.
        destination = publishing.KubernetesDestination(
            typing.cast(kube.Kube, None),
            namespace="modelguard-system",
            prefix="modelguard-audit",
            verifier_key=self.signer.verifier.vkey,
        )
        listing = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [destination.manifest(made) for made in self.made],
        }
        path = self.tmp_path / f"checkpoints.{format}"
        path.write_text(json.dumps(listing) if format == "json" else yaml.safe_dump(listing))
        return path

    def verify(self, *extra: str, log: Path | str | None = None) -> tuple[int, str, str]:
        return _run(
            "audit",
            "verify",
            str(log or self.log),
            "--public-key",
            self.signer.verifier.vkey,
            *extra,
        )


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    found = Installation(tmp_path)
    found.segment("cut off", "back")
    return found


@pytest.mark.parametrize("source", ["folder", "json", "yaml"])
def test_intact_log_verifies_against_its_checkpoints(
    installation: Installation, source: str
) -> None:
    where = (
        installation.folder() if source == "folder" else installation.kubectl_list(format=source)
    )
    assert installation.verify("--checkpoints", str(where)) == (
        0,
        "4 records in 1 segment, chain intact; 2 checkpoints proven\n",
        "",
    )


def test_an_edited_byte_names_its_line(installation: Installation) -> None:
    data = bytearray(installation.log.read_bytes())
    data[data.index(b"cut off")] = ord("C")
    installation.log.write_bytes(bytes(data))
    code, out, err = installation.verify("--checkpoints", str(installation.folder()))
    assert (code, out) == (1, "")
    assert err == "line 2: seq 1 was edited: its hash does not match its content\n"


def test_a_cut_tail_is_named(installation: Installation) -> None:
    lines = installation.log.read_text().splitlines(keepends=True)
    installation.log.write_text("".join(lines[:2]))
    code, _, err = installation.verify("--checkpoints", str(installation.folder()))
    origin = installation.made[-1].checkpoint.origin
    assert code == 1
    assert err == (
        f"line 2: segment {origin} ends at seq 1, but checkpoint "
        f"{installation.folder() / origin / ('0' * 19 + '4.checkpoint')} shows 4 records: the last "
        "2 records (seq 2 to 3) are missing\n"
    )


def test_invalid_utf8_in_a_record_is_an_edit(installation: Installation) -> None:
    data = bytearray(installation.log.read_bytes())
    data[data.index(b"back")] = 0xFF
    installation.log.write_bytes(bytes(data))
    code, _, err = installation.verify("--checkpoints", str(installation.folder()))
    assert code == 1
    assert err.startswith("line 3: seq 2 was edited")


def test_standard_input(installation: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"operator log line\n" + installation.log.read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert installation.verify("--checkpoints", str(installation.folder()), log="-")[:2] == (
        0,
        "4 records in 1 segment, chain intact; 2 checkpoints proven\n",
    )


def test_the_log_and_the_checkpoints_cannot_both_be_standard_input(
    installation: Installation,
) -> None:
    code, _, err = installation.verify("--checkpoints", "-", log="-")
    assert (code, err) == (1, "--checkpoints -: standard input already carries the log\n")


def test_missing_log(installation: Installation, tmp_path: Path) -> None:
    code, out, err = installation.verify(
        "--checkpoints", str(installation.folder()), log=tmp_path / "nope.jsonl"
    )
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.jsonl'}: No such file or directory\n"


def test_checkpoints_are_required_unless_declined(installation: Installation) -> None:
    code, _, err = installation.verify()
    assert code == 1
    assert err.startswith("--checkpoints is required: where the operator published")
    code, out, _ = installation.verify("--no-checkpoints")
    assert code == 0
    assert out.startswith("4 records in 1 segment, chain intact; no checkpoints checked")
    code, _, err = installation.verify("--checkpoints", "/nonexistent/checkpoints")
    assert (code, err) == (1, "--checkpoints /nonexistent/checkpoints: no such file or directory\n")


def test_a_key_rotation_verifies_with_every_key_of_the_log(tmp_path: Path) -> None:
    first = Installation(tmp_path)
    first.segment("under the first key")
    rotated = Installation(tmp_path, signer=keys.generate(LOG))
    rotated.made = first.made
    rotated.segment("under the second key")
    keys_file = tmp_path / "audit.pub"
    keys_file.write_text(
        f"# the log's keys, oldest first\n{first.signer.verifier.vkey}\n\n"
        f"{rotated.signer.verifier.vkey}\n"
    )
    source = str(rotated.folder())
    assert _run(
        "audit", "verify", str(first.log), "--checkpoints", source, "--public-key", str(keys_file)
    ) == (0, "6 records in 2 segments, chain intact; 4 checkpoints proven\n", "")
    # With the new key alone, the old segment's checkpoints are a key not given.
    code, _, err = rotated.verify("--checkpoints", source)
    assert code == 1
    assert f"signed by {LOG}+{first.signer.verifier.id}, which is none of the public keys" in err


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(
            "modelguard-system/modelguard+00000000+AAAA",
            "--public-key 'modelguard-system/modelguard+00000000+AAAA': no such file, and not an "
            "Ed25519 verifier key",
            id="short-key",
        ),
        pytest.param(
            "audit.pub",
            "--public-key audit.pub: no such file, and not a verifier key",
            id="no-file",
        ),
    ],
)
def test_a_bad_public_key_is_refused_naming_it(
    installation: Installation, value: str, error: str
) -> None:
    code, _, err = _run(
        "audit", "verify", str(installation.log), "--no-checkpoints", "--public-key", value
    )
    assert code == 1
    assert err.startswith(error)


def test_since_leaves_out_earlier_segments(tmp_path: Path) -> None:
    start = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    earlier = Installation(tmp_path)
    earlier.segment("before", clock=lambda: start)
    later = Installation(tmp_path, signer=earlier.signer)
    later.log = tmp_path / "later.jsonl"
    later.made = earlier.made
    later.segment("after", clock=lambda: start + datetime.timedelta(hours=1))
    folder = str(later.folder())
    code, _, err = later.verify("--checkpoints", folder)
    assert code == 1
    assert err.startswith(f"segment {earlier.made[0].checkpoint.origin} is not in the log")
    assert later.verify("--checkpoints", folder, "--since", "2030-01-02T03:30:00Z") == (
        0,
        "3 records in 1 segment, chain intact; 2 checkpoints proven; 1 checkpointed segment "
        "started before --since, not checked\n",
        "",
    )
    assert later.verify("--checkpoints", folder, "--since", "2030-01-02")[0] == 1
    code, _, err = later.verify("--checkpoints", folder, "--since", "yesterday")
    assert (code, err) == (
        1,
        "--since 'yesterday': expected a date or an RFC 3339 time, e.g. 2030-01-02 or "
        "2030-01-02T03:04:05Z\n",
    )


def test_a_file_without_records_fails(installation: Installation, tmp_path: Path) -> None:
    path = tmp_path / "operator.log"
    path.write_text("kopf started\n")
    code, _, err = installation.verify("--checkpoints", str(installation.folder()), log=path)
    assert code == 1
    assert err == (
        f"no audit records (audit.modelguard.dev/v1) of log {LOG} signed by key "
        f"{installation.signer.verifier.id} in 1 line\n"
    )


def test_a_forged_record_in_the_log_is_ignored_and_named(installation: Installation) -> None:
    other = keys.generate(LOG)
    forged = sink.Sink(io.StringIO(), signer=other, origin=f"{LOG}/20300102-030405-0a1b2c3d")
    record = forged.record(records.Decision.APPROVED, reason="Approved", message="forged")
    installation.log.write_text(installation.log.read_text() + f"S3 said: {records.line(record)}\n")
    assert installation.verify("--checkpoints", str(installation.folder())) == (
        0,
        "4 records in 1 segment, chain intact; 2 checkpoints proven; 1 line that looks like an "
        "audit record is not signed by the keys given (line 5), ignored\n",
        "",
    )


def test_a_line_longer_than_any_record_is_read_past_not_held(
    installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditlog, "MAX_LINE_BYTES", 1000)
    lines = installation.log.read_text().splitlines(keepends=True)
    installation.log.write_text(lines[0] + "x" * 5000 + "\n" + "".join(lines[1:]))
    assert installation.verify("--checkpoints", str(installation.folder()))[0] == 0


def test_public_key_prints_the_verifier_key(installation: Installation) -> None:
    assert _run(
        "audit", "public-key", "--key-file", str(installation.key_file), "--log-name", LOG
    ) == (0, installation.signer.verifier.vkey + "\n", "")
    code, _, err = _run(
        "audit", "public-key", "--key-file", str(installation.key_file), "--log-name", "a b"
    )
    assert (code, err) == (1, "audit log name 'a b' contains a space\n")


def test_run_passes_the_audit_options() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["run"])
    assert args.audit_log == "-"
    assert (args.audit_checkpoint_records, args.audit_checkpoint_seconds) == (1000, 300)
    assert args.audit_checkpoints_prefix == "modelguard-audit"
    assert parser.parse_args(["run", "--audit-log", "/var/log/a.jsonl"]).audit_log == (
        "/var/log/a.jsonl"
    )


def test_run_needs_the_audit_key_name_and_namespace(
    monkeypatch: pytest.MonkeyPatch, installation: Installation
) -> None:
    for name in ("MODELGUARD_AUDIT_KEY_FILE", "MODELGUARD_AUDIT_LOG_NAME", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match=r"--audit-key-file .* is required"):
        cli.main(["run"])
    key = str(installation.key_file)
    with pytest.raises(SystemExit, match=r"--audit-log-name .* is required"):
        cli.main(["run", "--audit-key-file", key])
    with pytest.raises(SystemExit, match=r"--audit-checkpoints-namespace .* is required"):
        cli.main(["run", "--audit-key-file", key, "--audit-log-name", LOG])
    old_hmac_key = installation.tmp_path / "audit.key"
    old_hmac_key.write_bytes(b"k" * 64)
    with pytest.raises(SystemExit, match="not a PEM private key"):
        cli.main(
            [
                "run",
                *("--audit-key-file", str(old_hmac_key), "--audit-log-name", LOG),
                *("--audit-checkpoints-namespace", "modelguard-system"),
            ]
        )
