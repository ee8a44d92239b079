"""Offline backups against a real MinIO with object lock and the real control plane: a model is
backed up on rollout and on its schedule (the second time storing nothing twice), its backup is
immutable to the store's own root user, restorable after its source is wiped (Ready again, with
the same root digest), checked by model_signing, refused at restore when a file was changed, and
drilled; the identities of a model's namespace cannot reach the store's credentials."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import model_signing
import pytest
import yaml
from test_modeldeployment import model_deployment, wait_ready

import minioadmin
import s3server
import signedmodel
from conftest import BACKUP_CREDENTIALS, MODEL_BUCKET
from modelguard.sources import base as sources_base
from modelguard.sources import errors, s3objects
from modelguard.sources import s3 as sources_s3

Manifest = dict[str, typing.Any]

BACKUP_BUCKET = "backups"
WRITER = BACKUP_CREDENTIALS[0]
# A file large enough that the bytes a backup writes tell a first backup from a second.
WEIGHTS = 2 << 20

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="session")
def writer(s3: s3server.S3Server, kubectl: harness.Kubectl, chart_installed: str) -> dict[str, str]:
    """The object-locked bucket backups go to, and the one identity that writes them: a MinIO
    user whose policy may put and read but not delete, bypass governance or change the bucket,
    its credentials in a Secret of the operator's namespace only."""
    s3.create_bucket(BACKUP_BUCKET, object_lock=True)
    credentials = {
        "access_key": f"writer-{uuid.uuid4().hex[:8]}",
        "secret_key": os.urandom(18).hex(),
    }
    minioadmin.backup_writer(s3, bucket=BACKUP_BUCKET, **credentials)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WRITER},
            "stringData": {
                "AWS_ACCESS_KEY_ID": credentials["access_key"],
                "AWS_SECRET_ACCESS_KEY": credentials["secret_key"],
                "AWS_REGION": s3.region,
            },
        },
        namespace=chart_installed,
    )
    return credentials


def backup_store(
    name: str,
    *,
    s3: s3server.S3Server | None = None,
    bucket: str = BACKUP_BUCKET,
    secret: str = WRITER,
    volume: str | None = None,
    drill: str = "@yearly",
    **extra: typing.Any,
) -> Manifest:
    spec: Manifest = {"drill": {"schedule": drill}}
    if volume is not None:
        spec["volume"] = {"claimName": volume, "acceptMutable": True}
    else:
        assert s3 is not None
        spec["s3"] = {
            "endpoint": s3.endpoint,
            "bucket": bucket,
            "prefix": f"{name}/",
            "credentialsSecret": secret,
            "objectLock": {"mode": "Compliance", "retentionDays": 1},
            **extra,
        }
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "BackupStore",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def store_name(kubectl: harness.Kubectl) -> Iterator[str]:
    name = f"vault-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl.run("delete", "backupstore", name, "--wait=false", check=False)


@pytest.fixture
def model_source(
    publish_model: typing.Callable[..., str], source_credentials: str, trust_policy: str
) -> tuple[str, dict[str, bytes]]:
    del source_credentials, trust_policy
    files = signedmodel.demo_files("1.4.0")
    files["weights.bin"] = os.urandom(WEIGHTS)
    return publish_model("1.4.0", files=files), files


def _store_ready(kubectl: harness.Kubectl, name: str, *, timeout: float = 60) -> Manifest:
    found: Manifest = {}

    def ready() -> None:
        found.update(kubectl.json("get", "backupstore", name))
        assert harness.condition(found, "Ready").get("status") == "True", found.get("status")

    harness.eventually(ready, timeout=timeout)
    return found


def _backed_up(
    kubectl: harness.Kubectl, namespace: str, name: str, *, other_than: str | None = None
) -> Manifest:
    found: Manifest = {}

    def done() -> None:
        found.update(kubectl.json("get", "modeldeployment", name, "-n", namespace))
        condition = harness.condition(found, "BackedUp")
        assert condition.get("status") == "True", condition
        assert found["status"]["lastBackup"]["id"] != other_than

    harness.eventually(done, timeout=120)
    return found


def _credentials_dir(path: Path, *, access_key: str, secret_key: str, region: str) -> Path:
    """A folder laid out as a mounted Secret, for `modelguard restore`."""
    path.mkdir(parents=True, exist_ok=True)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
        ("AWS_REGION", region),
    ):
        (path / key).write_text(value)
    return path


def _modelguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _audit_records(operator: subprocess.Popen[bytes], uid: str) -> list[Manifest]:
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    text = Path(args[args.index("--audit-log") + 1]).read_text()
    found = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [record for record in found if (record.get("object") or {}).get("uid") == uid]


def _events(kubectl: harness.Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in harness.model_events(kubectl, namespace, name)]


def test_a_backup_is_taken_on_rollout_again_on_schedule_storing_nothing_twice_and_brings_the_model_back_after_its_source_is_wiped(  # noqa: E501
    kubectl: harness.Kubectl,
    namespace: str,
    s3: s3server.S3Server,
    writer: dict[str, str],
    store_name: str,
    model_source: tuple[str, dict[str, bytes]],
    backup_key: tuple[Path, str],
    operator: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    source, files = model_source
    kubectl.apply(backup_store(store_name, s3=s3))
    store = _store_ready(kubectl, store_name)
    assert harness.condition(store, "Ready")["reason"] == "StoreReady"
    assert store["status"]["signingKey"]["publicKey"] == backup_key[1]

    kubectl.apply(
        model_deployment("a", source=source, backup={"store": store_name, "schedule": "* * * * *"}),
        namespace=namespace,
    )
    ready = wait_ready(kubectl, namespace, "a")
    root = ready["status"]["verification"]["rootDigest"]
    first = _backed_up(kubectl, namespace, "a")["status"]["lastBackup"]
    model_bytes = sum(len(data) for data in files.values())
    assert first["rootDigest"] == root
    assert first["store"] == store_name
    assert first["bytes"] > model_bytes
    assert first["writtenBytes"] > model_bytes
    assert ("Normal", "BackedUp") in _events(kubectl, namespace, "a")
    uid = ready["metadata"]["uid"]
    (record,) = [r for r in _audit_records(operator, uid) if r["decision"] == "BackedUp"][:1]
    assert record["details"]["backupId"] == first["id"]
    assert record["details"]["rootDigest"] == root

    # The schedule takes another backup within the minute: the files are stored already.
    second = _backed_up(kubectl, namespace, "a", other_than=first["id"])["status"]["lastBackup"]
    assert second["rootDigest"] == root
    assert second["writtenBytes"] < 64 << 10, second

    # The source is wiped: the version is no longer verified where it came from.
    prefix = source.removeprefix(f"s3://{MODEL_BUCKET}/")
    for name in [*files, signedmodel.SIGNATURE_FILE]:
        s3.delete_object(MODEL_BUCKET, prefix + name)

    def unverified() -> None:
        body = kubectl.json("get", "modeldeployment", "a", "-n", namespace)
        assert harness.condition(body, "Verified").get("status") == "False"

    harness.eventually(unverified, timeout=60)

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(kubectl.json("get", "trustpolicy", "default")))
    public = tmp_path / "backup.pub"
    public.write_text(store["status"]["signingKey"]["publicKey"])
    restored = _modelguard(
        "restore",
        f"{namespace}/a",
        "--store-endpoint",
        s3.endpoint,
        "--bucket",
        BACKUP_BUCKET,
        "--store-prefix",
        f"{store_name}/",
        "--store-credentials",
        str(_credentials_dir(tmp_path / "writer", region=s3.region, **writer)),
        "--backup-public-key",
        str(public),
        "--policy",
        str(policy),
        "--to",
        source,
        "--to-endpoint",
        s3.endpoint,
        "--to-credentials",
        str(
            _credentials_dir(
                tmp_path / "root",
                access_key=s3.access_key,
                secret_key=s3.secret_key,
                region=s3.region,
            )
        ),
        "--approvals-out",
        str(tmp_path / "approvals.yaml"),
    )
    assert restored.returncode == 0, restored.stderr
    assert f"restored backup {second['id']}" in restored.stdout
    assert f"root {root}" in restored.stdout
    assert "approvals still count under the policy (security)" in restored.stdout
    assert s3.get_object(MODEL_BUCKET, prefix + "weights.bin") == files["weights.bin"]
    approvals = list(yaml.safe_load_all((tmp_path / "approvals.yaml").read_text()))
    assert [a["spec"]["rootDigest"] for a in approvals] == [root]

    def verified_again() -> None:
        body = kubectl.json("get", "modeldeployment", "a", "-n", namespace)
        assert harness.condition(body, "Verified").get("status") == "True"
        assert harness.condition(body, "Ready").get("status") == "True"
        assert body["status"]["verification"]["rootDigest"] == root

    harness.eventually(verified_again, timeout=90)


def test_a_new_version_rolled_out_is_backed_up_without_waiting_for_the_schedule(
    kubectl: harness.Kubectl,
    namespace: str,
    s3: s3server.S3Server,
    writer: dict[str, str],
    store_name: str,
    model_source: tuple[str, dict[str, bytes]],
    publish_model: typing.Callable[..., str],
) -> None:
    del writer
    source, files = model_source
    kubectl.apply(backup_store(store_name, s3=s3))
    _store_ready(kubectl, store_name)
    # Yearly: only a rollout can take the second backup within this test.
    backup = {"store": store_name, "schedule": "@yearly"}
    kubectl.apply(model_deployment("a", source=source, backup=backup), namespace=namespace)
    first = _backed_up(kubectl, namespace, "a")["status"]["lastBackup"]
    assert first["version"] == "1.4.0"

    # The next version keeps the weights and changes the rest.
    newer = {**signedmodel.demo_files("1.5.0"), "weights.bin": files["weights.bin"]}
    assert newer != files
    kubectl.apply(
        model_deployment(
            "a",
            source=publish_model("1.5.0", files=newer),
            version="1.5.0",
            backup=backup,
        ),
        namespace=namespace,
    )

    def rolled_out() -> None:
        body = kubectl.json("get", "modeldeployment", "a", "-n", namespace)
        assert body["status"].get("activeVersion") == "1.5.0", body["status"]

    harness.eventually(rolled_out, timeout=120)
    body = _backed_up(kubectl, namespace, "a", other_than=first["id"])
    second = body["status"]["lastBackup"]
    assert second["version"] == "1.5.0"
    assert second["rootDigest"] == body["status"]["verification"]["rootDigest"]
    assert second["rootDigest"] != first["rootDigest"]
    # Content-addressed: the weights the first version stored are not written again.
    assert second["writtenBytes"] < WEIGHTS, second


def test_backups_are_immutable_to_the_root_user_and_a_new_version_changes_no_restore(
    kubectl: harness.Kubectl,
    namespace: str,
    s3: s3server.S3Server,
    writer: dict[str, str],
    store_name: str,
    model_source: tuple[str, dict[str, bytes]],
    backup_key: tuple[Path, str],
    tmp_path: Path,
) -> None:
    source, files = model_source
    kubectl.apply(backup_store(store_name, s3=s3))
    _store_ready(kubectl, store_name)
    kubectl.apply(
        model_deployment("a", source=source, backup={"store": store_name, "schedule": "* * * * *"}),
        namespace=namespace,
    )
    last = _backed_up(kubectl, namespace, "a")["status"]["lastBackup"]
    manifest_key = f"{store_name}/{last['location']}"
    weights_key = f"{store_name}/objects/sha256/" + hashlib.sha256(files["weights.bin"]).hexdigest()

    root = s3objects.S3Bucket(
        BACKUP_BUCKET,
        settings=sources_s3.S3Settings(credentials=s3.credentials, endpoint=s3.endpoint),
        transport_settings=sources_base.Transport(),
    )

    async def attempts() -> dict[str, str]:
        outcome: dict[str, str] = {}
        async with root:
            head = await root.head(weights_key)
            assert head is not None
            assert head.retention is not None
            assert head.retention.mode == "COMPLIANCE"
            try:
                await root.put(weights_key, b"forged", size=6, sha256=None, retention=None)
            except errors.ObjectExists:
                outcome["overwrite"] = "refused"
            # Still in the future, but sooner than the backup's.
            shorter = s3objects.Retention(
                mode="COMPLIANCE", until=head.retention.until - datetime.timedelta(hours=1)
            )
            try:
                await root.extend_retention(
                    weights_key, version_id=head.version_id, retention=shorter
                )
            except errors.SourceError as error:
                outcome["shorten"] = error.reason
        return outcome

    outcome = asyncio.run(attempts())
    assert outcome["overwrite"] == "refused"
    assert "shorten" in outcome, "the root user shortened a Compliance retention"
    versions = _versions(s3, manifest_key) + _versions(s3, weights_key)
    for key, version in versions:
        for headers in ({}, {"x-amz-bypass-governance-retention": "true"}):
            with pytest.raises(s3server.S3ServerError, match=r"WORM|AccessDenied"):
                s3.request(
                    "DELETE",
                    f"/{BACKUP_BUCKET}/{key}",
                    query={"versionId": version},
                    headers=headers,
                )
    # Without If-None-Match the root user can only add a version on top; restores read the one
    # the backup recorded, and the next backup reuses the version that verifies.
    s3.put_object(BACKUP_BUCKET, weights_key, b"a newer version, not the backed-up bytes")
    after = _backed_up(kubectl, namespace, "a", other_than=last["id"])
    assert harness.condition(after, "BackedUp")["reason"] == "BackupVerified"
    assert after["status"]["lastBackup"]["writtenBytes"] < 64 << 10
    exported = tmp_path / "exported"
    public = tmp_path / "backup.pub"
    public.write_text(backup_key[1])
    result = _modelguard(
        "restore",
        f"{namespace}/a",
        "--store-endpoint",
        s3.endpoint,
        "--bucket",
        BACKUP_BUCKET,
        "--store-prefix",
        f"{store_name}/",
        "--store-credentials",
        str(_credentials_dir(tmp_path / "writer", region=s3.region, **writer)),
        "--backup-public-key",
        str(public),
        "--export",
        str(exported),
    )
    assert result.returncode == 0, result.stderr
    assert (exported / "model" / "weights.bin").read_bytes() == files["weights.bin"]


def _versions(s3: s3server.S3Server, key: str) -> list[tuple[str, str]]:
    listing = s3.request("GET", f"/{BACKUP_BUCKET}", query={"versions": "", "prefix": key}).decode()
    return [(key, version) for version in re.findall(r"<VersionId>([^<]+)</VersionId>", listing)]


def test_the_backup_manifest_verifies_with_model_signing_and_modelguard_verify(
    kubectl: harness.Kubectl,
    namespace: str,
    s3: s3server.S3Server,
    writer: dict[str, str],
    store_name: str,
    model_source: tuple[str, dict[str, bytes]],
    operator: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    source, _ = model_source
    kubectl.apply(backup_store(store_name, s3=s3))
    store = _store_ready(kubectl, store_name)
    kubectl.apply(
        model_deployment("a", source=source, backup={"store": store_name}), namespace=namespace
    )
    _backed_up(kubectl, namespace, "a")
    public = tmp_path / "backup.pub"
    public.write_text(store["status"]["signingKey"]["publicKey"])
    exported = tmp_path / "backup"
    result = _modelguard(
        "restore",
        f"{namespace}/a",
        "--store-endpoint",
        s3.endpoint,
        "--bucket",
        BACKUP_BUCKET,
        "--store-prefix",
        f"{store_name}/",
        "--store-credentials",
        str(_credentials_dir(tmp_path / "writer", region=s3.region, **writer)),
        "--backup-public-key",
        str(public),
        "--export",
        str(exported),
    )
    assert result.returncode == 0, result.stderr
    manifest = tmp_path / "backup.sig"
    assert sorted(p.name for p in exported.iterdir()) == [
        "approvals",
        "context.json",
        "index.json",
        "model",
        "model.sig",
        "modeldeployment.json",
    ]
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
        exported, manifest
    )
    checked = _modelguard(
        "verify", str(exported), "--signature", str(manifest), "--public-key", str(public)
    )
    assert checked.returncode == 0, checked.stderr

    # The signed context names the TrustPolicy's generation and points into the audit trail:
    # the record it names is in the operator's log, with that hash.
    context = exported / "context.json"
    written = json.loads(context.read_text())
    policy = kubectl.json("get", "trustpolicy", "default")["metadata"]
    assert written["trustPolicy"] == {
        "name": "default",
        "uid": policy["uid"],
        "generation": policy["generation"],
    }
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    text = Path(args[args.index("--audit-log") + 1]).read_text()
    log = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    pointer = written["audit"]
    assert pointer["keyId"]
    assert [(r["seq"], r["hash"]) for r in log if r.get("hash") == pointer["hash"]] == [
        (pointer["seq"], pointer["hash"])
    ]

    context.chmod(0o644)
    exported.chmod(0o755)
    context.write_text(context.read_text().replace("sentiment-bert", "another-model"))
    with pytest.raises(ValueError, match=r"context\.json"):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
            exported, manifest
        )
    refused = _modelguard(
        "verify", str(exported), "--signature", str(manifest), "--public-key", str(public)
    )
    assert refused.returncode == 1
    assert "DigestMismatch" in refused.stderr
    assert "context.json" in refused.stderr


def test_a_changed_file_in_a_volume_store_fails_the_drill_and_the_restore_naming_the_file(
    kubectl: harness.Kubectl,
    namespace: str,
    store_name: str,
    model_source: tuple[str, dict[str, bytes]],
    backup_key: tuple[Path, str],
    backup_volumes: Path,
    operator: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    source, files = model_source
    claim = f"claim-{uuid.uuid4().hex[:6]}"
    (backup_volumes / claim).mkdir()
    kubectl.apply(backup_store(store_name, volume=claim, drill="* * * * *"))
    store = _store_ready(kubectl, store_name)
    assert harness.condition(store, "Ready")["reason"] == "MutableVolume"
    kubectl.apply(
        model_deployment("a", source=source, backup={"store": store_name}), namespace=namespace
    )
    body = _backed_up(kubectl, namespace, "a")
    uid = body["metadata"]["uid"]

    def drilled() -> None:
        found = kubectl.json("get", "modeldeployment", "a", "-n", namespace)
        assert (found["status"].get("lastDrill") or {}).get("result") == "Passed", found["status"]

    harness.eventually(drilled, timeout=120)
    assert ("Normal", "RestoreDrillPassed") in _events(kubectl, namespace, "a")

    digest = hashlib.sha256(files["weights.bin"]).hexdigest()
    stored = backup_volumes / claim / "objects" / "sha256" / digest
    stored.chmod(0o644)
    stored.write_bytes(b"\0" * WEIGHTS)

    def drill_failed() -> None:
        found = kubectl.json("get", "modeldeployment", "a", "-n", namespace)
        condition = harness.condition(found, "BackedUp")
        assert condition.get("reason") == "DrillFailed", condition
        assert "model/weights.bin" in condition["message"]
        assert found["status"]["lastDrill"]["result"] == "Failed"

    harness.eventually(drill_failed, timeout=120)
    assert ("Warning", "RestoreDrillFailed") in _events(kubectl, namespace, "a")
    failed = [r for r in _audit_records(operator, uid) if r["decision"] == "RestoreDrillFailed"]
    assert failed
    assert "model/weights.bin" in failed[0]["message"]

    public = tmp_path / "backup.pub"
    public.write_text(backup_key[1])
    signer = tmp_path / "signer.pub"
    signer.write_text(
        kubectl.json("get", "trustpolicy", "default")["spec"]["signers"][0]["publicKey"]
    )
    refused = _modelguard(
        "restore",
        f"{namespace}/a",
        "--store-volume",
        str(backup_volumes / claim),
        "--backup-public-key",
        str(public),
        "--public-key",
        str(signer),
        "--to",
        str(tmp_path / "restored"),
    )
    assert refused.returncode == 1
    assert "DigestMismatch" in refused.stderr
    assert "model/weights.bin" in refused.stderr
    # Nothing half-restored is left behind.
    assert list((tmp_path / "restored").iterdir()) == []


def test_a_bucket_without_object_lock_is_refused_unless_the_downgrade_is_accepted(
    kubectl: harness.Kubectl,
    s3: s3server.S3Server,
    writer: dict[str, str],
    chart_installed: str,
    store_name: str,
) -> None:
    del writer
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(plain)
    # The writer may not read this bucket: the root's credentials, under a Secret the chart lists.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": BACKUP_CREDENTIALS[1]},
            "stringData": {
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            },
        },
        namespace=chart_installed,
    )
    kubectl.apply(backup_store(store_name, s3=s3, bucket=plain, secret=BACKUP_CREDENTIALS[1]))

    def refused() -> None:
        condition = harness.condition(kubectl.json("get", "backupstore", store_name), "Ready")
        assert condition.get("reason") == "ObjectLockDisabled", condition
        assert "acceptMutableBucket" in condition["message"]

    harness.eventually(refused, timeout=60)
    kubectl.apply(
        backup_store(
            store_name,
            s3=s3,
            bucket=plain,
            secret=BACKUP_CREDENTIALS[1],
            acceptMutableBucket=True,
        )
    )
    store = _store_ready(kubectl, store_name)
    assert harness.condition(store, "Ready")["reason"] == "DowngradeAccepted"
    events = kubectl.json(
        "get",
        "events.events.k8s.io",
        "-n",
        "default",
        f"--field-selector=regarding.name={store_name},regarding.kind=BackupStore",
    )["items"]
    assert ("Warning", "DowngradeAccepted") in [(e["type"], e["reason"]) for e in events]

    unlisted = "not-listed-in-the-chart"
    kubectl.apply(backup_store(store_name, s3=s3, secret=unlisted))

    def forbidden() -> None:
        condition = harness.condition(kubectl.json("get", "backupstore", store_name), "Ready")
        assert condition.get("reason") == "StoreCredentialsForbidden", condition

    harness.eventually(forbidden, timeout=60)


def test_the_writer_identity_can_put_and_read_but_never_delete_or_shorten_retention(
    s3: s3server.S3Server,
) -> None:
    bucket = f"gov-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=True)
    access, secret = f"w-{uuid.uuid4().hex[:8]}", os.urandom(18).hex()
    # Its BackupStore would lock for 2 days at least.
    minioadmin.backup_writer(
        s3, bucket=bucket, access_key=access, secret_key=secret, retention_days=2
    )
    as_writer = s3server.S3Server(
        s3.state_dir, endpoint=s3.endpoint, access_key=access, secret_key=secret
    )
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    lock = {
        "x-amz-object-lock-mode": "GOVERNANCE",
        "x-amz-object-lock-retain-until-date": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    as_writer.request("PUT", f"/{bucket}/backup", headers={**lock, "if-none-match": "*"}, body=b"x")
    assert as_writer.get_object(bucket, "backup") == b"x"
    (version,) = re_versions(s3, bucket, "backup")
    longer = until + datetime.timedelta(days=1)
    extended = (
        f'<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>GOVERNANCE</Mode>'
        f"<RetainUntilDate>{longer:%Y-%m-%dT%H:%M:%SZ}</RetainUntilDate></Retention>"
    ).encode()
    as_writer.request(
        "PUT",
        f"/{bucket}/backup",
        query={"retention": "", "versionId": version},
        headers={"content-md5": base64.b64encode(hashlib.md5(extended).digest()).decode()},  # noqa: S324
        body=extended,
    )
    shorter = (
        f'<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>GOVERNANCE</Mode>'
        f"<RetainUntilDate>{until - datetime.timedelta(days=2):%Y-%m-%dT%H:%M:%SZ}"
        "</RetainUntilDate></Retention>"
    ).encode()
    md5 = base64.b64encode(hashlib.md5(shorter).digest()).decode()  # noqa: S324
    bypass = {"x-amz-bypass-governance-retention": "true"}
    retention = {"retention": "", "versionId": version}
    for method, query, headers, body, refusal in [
        ("DELETE", {}, {}, b"", "AccessDenied"),
        ("DELETE", {"versionId": version}, {}, b"", "AccessDenied"),
        ("DELETE", {"versionId": version}, bypass, b"", "AccessDenied"),
        # Governance holds without the bypass; with it, the policy's condition refuses a lock
        # shorter than the store's days (MinIO lets s3:PutObjectRetention bypass Governance).
        ("PUT", retention, {"content-md5": md5}, shorter, "WORM protected"),
        ("PUT", retention, {"content-md5": md5, **bypass}, shorter, "AccessDenied"),
        ("PUT", {"legal-hold": "", "versionId": version}, {}, b"", "AccessDenied"),
        ("DELETE", {"object-lock": ""}, {}, b"", "AccessDenied"),
    ]:
        path = f"/{bucket}" if "object-lock" in query else f"/{bucket}/backup"
        with pytest.raises(s3server.S3ServerError, match=refusal):
            as_writer.request(method, path, query=query, headers=headers, body=body)
    assert s3.get_object(bucket, "backup") == b"x"
    # In Governance mode an identity holding s3:BypassGovernanceRetention (the root user) could
    # have: what holds the writer back is its policy, which is why Compliance is the default.
    s3.request(
        "PUT",
        f"/{bucket}/backup",
        query=retention,
        headers={"content-md5": md5, **bypass},
        body=shorter,
    )
    s3.request("DELETE", f"/{bucket}/backup", query={"versionId": version}, headers=bypass)
    assert re_versions(s3, bucket, "backup") == []


def re_versions(s3: s3server.S3Server, bucket: str, key: str) -> list[str]:
    listing = s3.request("GET", f"/{bucket}", query={"versions": "", "prefix": key}).decode()
    return re.findall(r"<VersionId>([^<]+)</VersionId>", listing)


def test_a_model_namespace_cannot_reach_the_store_credentials(
    kubectl: harness.Kubectl,
    namespace: str,
    chart_installed: str,
    writer: dict[str, str],
    store_name: str,
    s3: s3server.S3Server,
    model_source: tuple[str, dict[str, bytes]],
) -> None:
    del writer
    source, _ = model_source
    kubectl.apply(backup_store(store_name, s3=s3))
    kubectl.apply(
        model_deployment("a", source=source, backup={"store": store_name}), namespace=namespace
    )
    # The namespace's own owner: `admin` of the namespace, as a team is given it.
    owner = f"owner-{uuid.uuid4().hex[:6]}"
    kubectl.run(
        "create", "rolebinding", "owner", "-n", namespace, "--clusterrole=admin", f"--user={owner}"
    )
    identities = [
        owner,
        f"system:serviceaccount:{namespace}:default",
        f"system:serviceaccount:{namespace}:a",
    ]

    def can(identity: str, *args: str) -> bool:
        result = kubectl.run("auth", "can-i", *args, f"--as={identity}", check=False)
        return result.stdout.strip() == "yes"

    for identity in identities:
        assert not can(identity, "get", f"secret/{WRITER}", "-n", chart_installed)
        assert not can(identity, "list", "secrets", "-n", chart_installed)
        assert not can(identity, "create", "pods", "-n", chart_installed)
        assert not can(identity, "get", "backupstores")
        assert not can(identity, "update", "backupstores")
    # The checks above can fail: the owner may do all of this in the namespace it owns.
    assert can(owner, "get", "secrets", "-n", namespace)
    assert can(owner, "create", "pods", "-n", namespace)
    operator_identity = f"system:serviceaccount:{chart_installed}:modelguard"
    assert can(operator_identity, "get", f"secret/{WRITER}", "-n", chart_installed)
    assert not can(operator_identity, "get", "secret/modelguard-audit-key", "-n", chart_installed)
    # Nothing the operator builds in the model's namespace names the store's credentials.
    _backed_up(kubectl, namespace, "a")
    children = kubectl.json("get", "deployments,pods", "-n", namespace)
    assert WRITER not in json.dumps(children)


def test_audit_checkpoints_go_locked_to_a_store_that_asks_for_them_and_prove_the_log(
    kubectl: harness.Kubectl,
    s3: s3server.S3Server,
    writer: dict[str, str],
    store_name: str,
    operator: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    del writer
    store = backup_store(store_name, s3=s3)
    store["spec"]["auditCheckpoints"] = True
    kubectl.apply(store)
    folder = f"{store_name}/audit-checkpoints/"
    found: list[str] = []

    def stored() -> None:
        listing = s3.request(
            "GET", f"/{BACKUP_BUCKET}", query={"list-type": "2", "prefix": folder}
        ).decode()
        found[:] = re.findall(r"<Key>([^<]+\.checkpoint)</Key>", listing)
        # The next checkpoint (due every few seconds once records were added) arrives.
        assert found, listing

    harness.eventually(stored, timeout=90)
    # Each is locked like a backup: the store's root user cannot delete it.
    for key in found[:2]:
        (version,) = re_versions(s3, BACKUP_BUCKET, key)
        with pytest.raises(s3server.S3ServerError, match=r"WORM|AccessDenied"):
            s3.request("DELETE", f"/{BACKUP_BUCKET}/{key}", query={"versionId": version})
        retention = s3.request(
            "GET", f"/{BACKUP_BUCKET}/{key}", query={"retention": "", "versionId": version}
        )
        assert b"<Mode>COMPLIANCE</Mode>" in retention

    # A copy of the folder proves the operator's log, as `audit verify` documents.
    copied = tmp_path / "checkpoints"
    copied.mkdir()
    for index, key in enumerate(found):
        (copied / f"{index:04d}.checkpoint").write_bytes(s3.get_object(BACKUP_BUCKET, key))
    args = [str(arg) for arg in typing.cast(list[str], operator.args)]
    log = Path(args[args.index("--audit-log") + 1])
    first_time = json.loads(log.read_text().splitlines()[0])["time"]
    public = _modelguard(
        "audit",
        "public-key",
        "--key-file",
        args[args.index("--audit-key-file") + 1],
        "--log-name",
        args[args.index("--audit-log-name") + 1],
    ).stdout.strip()
    checked = _modelguard(
        "audit",
        "verify",
        str(log),
        "--public-key",
        public,
        "--checkpoints",
        str(copied),
        "--since",
        str(first_time)[:19] + "Z",
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # A store that asks for them without object lock is refused by the API server.
    kubectl.run("delete", "backupstore", store_name)
    for weaker in (
        backup_store(store_name, volume="claim"),
        backup_store(store_name, s3=s3, acceptMutableBucket=True),
    ):
        weaker["spec"]["auditCheckpoints"] = True
        refused = kubectl.run("apply", "-f", "-", input=json.dumps(weaker), check=False)
        assert refused.returncode != 0, weaker
        assert "auditCheckpoints" in refused.stderr


def _store_events(kubectl: harness.Kubectl, name: str) -> list[tuple[str, str]]:
    events = kubectl.json(
        "get",
        "events.events.k8s.io",
        "-n",
        "default",
        f"--field-selector=regarding.name={name},regarding.kind=BackupStore",
    )["items"]
    return [(e["type"], e["reason"]) for e in events]


def test_a_store_that_asks_for_checkpoints_and_refuses_them_says_so_until_it_takes_them(
    kubectl: harness.Kubectl,
    s3: s3server.S3Server,
    chart_installed: str,
    store_name: str,
) -> None:
    """A BackupStore whose identity may read the bucket (so the store is Ready) but not put into
    it: every checkpoint it asked for is refused by MinIO. That was a log line of the operator
    only; it is the store's AuditCheckpoints condition and a Warning Event, cleared (and told)
    once the identity may write and a checkpoint is stored."""
    bucket = f"ckpt-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket, object_lock=True)
    access, secret = f"ro-{uuid.uuid4().hex[:8]}", os.urandom(18).hex()
    minioadmin.add_user(s3, access_key=access, secret_key=secret)
    reader = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": minioadmin.WRITER_ACTIONS["bucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }
    minioadmin.add_policy(s3, name=f"reader-{bucket}", policy=reader)
    minioadmin.attach_policy(s3, name=f"reader-{bucket}", user=access)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": BACKUP_CREDENTIALS[1]},
            "stringData": {
                "AWS_ACCESS_KEY_ID": access,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": s3.region,
            },
        },
        namespace=chart_installed,
    )
    store = backup_store(store_name, s3=s3, bucket=bucket, secret=BACKUP_CREDENTIALS[1])
    store["spec"]["auditCheckpoints"] = True
    kubectl.apply(store)

    def refused() -> None:
        found = kubectl.json("get", "backupstore", store_name)
        assert harness.condition(found, "Ready").get("status") == "True", found.get("status")
        condition = harness.condition(found, "AuditCheckpoints")
        assert condition.get("status") == "False", condition
        assert condition.get("reason") == "CheckpointWriteFailed", condition
        assert "AccessDenied" in condition["message"]

    harness.eventually(refused, timeout=90)

    def told(event: tuple[str, str]) -> typing.Callable[[], None]:
        def check() -> None:
            assert event in _store_events(kubectl, store_name)

        return check

    harness.eventually(told(("Warning", "CheckpointWriteFailed")), timeout=30)

    def listed() -> list[str]:
        listing = s3.request(
            "GET", f"/{bucket}", query={"list-type": "2", "prefix": store_name}
        ).decode()
        return re.findall(r"<Key>([^<]+\.checkpoint)</Key>", listing)

    assert listed() == []

    # The platform team gives the identity what a writer needs: the next retry stores it.
    minioadmin.add_policy(
        s3, name=f"writer-{bucket}", policy=minioadmin.writer_policy(bucket, retention_days=1)
    )
    minioadmin.attach_policy(s3, name=f"writer-{bucket}", user=access)

    def stored() -> None:
        condition = harness.condition(
            kubectl.json("get", "backupstore", store_name), "AuditCheckpoints"
        )
        assert (condition.get("status"), condition.get("reason")) == (
            "True",
            "CheckpointsStored",
        ), condition

    harness.eventually(stored, timeout=120)
    assert listed(), "the store says it holds checkpoints, and holds none"
    harness.eventually(told(("Normal", "CheckpointsStored")), timeout=30)
    # Told once each: the retries of the refused checkpoint were not an Event apiece.
    assert _store_events(kubectl, store_name).count(("Warning", "CheckpointWriteFailed")) == 1
