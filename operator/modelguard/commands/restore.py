"""`modelguard restore`: a model brought back from a backup, every byte verified, into its S3
source (or a local folder); or the whole backup exported as a folder for `modelguard verify` and
`model_signing verify`. Works without the cluster: the store, the keys and the policy come from
the command line, as after a disaster they must.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import pathlib
import sys
import typing

import yaml

from modelguard.agent import failures
from modelguard.api import endpoints
from modelguard.backup import layout, manifest, restore, streams
from modelguard.backup import stores as backup_stores
from modelguard.commands import files, verify
from modelguard.sources import credentials, errors, locations, s3objects
from modelguard.trust import reasons

if typing.TYPE_CHECKING:
    from modelguard.api import trustpolicy
    from modelguard.trust import policy


@dataclasses.dataclass(frozen=True)
class StoreFlags:
    endpoint: str | None
    bucket: str | None
    prefix: str
    volume: pathlib.Path | None
    credentials_dir: pathlib.Path | None
    private_addresses: bool


@dataclasses.dataclass(frozen=True)
class TargetFlags:
    to: str | None
    export: pathlib.Path | None
    signature_to: str | None
    endpoint: str | None
    credentials_dir: pathlib.Path | None
    private_addresses: bool
    approvals_out: pathlib.Path | None


def run(
    *,
    model_deployment: str,
    backup: str | None,
    store: StoreFlags,
    target: TargetFlags,
    backup_public_keys: typing.Sequence[pathlib.Path],
    public_key: pathlib.Path | None,
    certificate_root: pathlib.Path | None,
    policy_file: pathlib.Path | None,
    certificate_subject: str | None,
    certificate_san: str | None,
    any_certificate_identity: bool,
) -> int:
    """Exit 0 and a summary line; exit 1 and `REASON: message` on standard error."""
    try:
        namespace, _, name = model_deployment.partition("/")
        if not namespace or not name:
            raise streams.BackupError("InvalidArgument", "MODEL_DEPLOYMENT must be NAMESPACE/NAME")
        keys = manifest.load_public_keys(
            files.read(path, what="--backup-public-key") for path in backup_public_keys
        )
        rules = None
        approvals_policy = None
        if target.export is None:
            if public_key is None and certificate_root is None and policy_file is None:
                raise streams.BackupError(
                    "InvalidArgument",
                    "name who may sign the model: --policy (its TrustPolicy, which also judges "
                    "the approvals again), --public-key or --certificate-root",
                )
            rules = verify._rules(
                public_key=public_key,
                certificate_root=certificate_root,
                policy_file=policy_file,
                certificate_subject=certificate_subject,
                certificate_san=certificate_san,
                any_certificate_identity=any_certificate_identity,
            )
            if policy_file is not None:
                approvals_policy = verify._policy(policy_file)
        line = asyncio.run(
            _restore(
                namespace=namespace,
                name=name,
                backup=backup,
                store=store,
                target=target,
                keys=keys,
                rules=rules,
                approvals_policy=approvals_policy,
            )
        )
    except (
        reasons.VerificationError,
        errors.SourceError,
        streams.BackupError,
        failures.AgentError,
        manifest.InvalidKey,
        layout.InvalidDocument,
        OSError,
    ) as error:
        reason, message = streams.describe(error)
        if isinstance(error, manifest.InvalidKey | layout.InvalidDocument):
            reason, message = "InvalidArgument", str(error)
        elif isinstance(error, OSError):
            reason, message = "Unreadable", f"{error.filename or ''}: {error.strerror or error}"
        print(f"{reason}: {' '.join(message.split())}", file=sys.stderr)
        return 1
    print(line)
    return 0


async def _restore(
    *,
    namespace: str,
    name: str,
    backup: str | None,
    store: StoreFlags,
    target: TargetFlags,
    keys: list[typing.Any],
    rules: policy.Rules | None,
    approvals_policy: trustpolicy.TrustPolicySpec | None,
) -> str:
    opened_store = _open_store(store)
    try:
        chosen = backup or await restore.latest(opened_store, namespace=namespace, name=name)
        if chosen is None:
            raise streams.BackupError(
                streams.RESTORE_REFUSED,
                f"{opened_store.description} holds no backup of {namespace}/{name}",
            )
        opened = await restore.open_backup(
            opened_store, namespace=namespace, name=name, backup=chosen, keys=keys
        )
        if target.export is not None:
            _check_new_folder(target.export, flag="--export")
            manifest_path = target.export.parent / f"{target.export.name}.sig"
            written = await restore.export(
                opened_store, opened, folder_path=target.export, manifest_path=manifest_path
            )
            return (
                f"exported backup {chosen} of {namespace}/{name}: {len(opened.index) + 1} files, "
                f"{written} bytes into {target.export}, its manifest {manifest_path} (signed by "
                f"{opened.key_id})"
            )
        assert rules is not None
        destination = _destination(target)
        try:
            restored = await restore.restore(
                opened_store,
                opened,
                rules=rules,
                destination=destination,
                approvals_policy=approvals_policy,
                now=datetime.datetime.now(datetime.UTC),
            )
        finally:
            if isinstance(destination, restore.S3Destination):
                await destination.aclose()
        if target.approvals_out is not None:
            _write_approvals(target.approvals_out, opened.approvals)
        return (
            f"restored backup {chosen} of {namespace}/{name}: root {restored.root_digest} files "
            f"{restored.files} bytes {restored.bytes} into {destination.description}; "
            f"{restored.approvals.message}"
        )
    finally:
        await opened_store.aclose()


def _settings(
    credentials_dir: pathlib.Path | None, *, endpoint: str, flag: str, private: bool
) -> credentials.SourceSettings:
    if credentials_dir is not None:
        settings = credentials.from_directory(credentials_dir)
    else:
        settings = credentials.from_secret_data(
            {key: os.environ[key].encode() for key in credentials.KEYS if key in os.environ}
        )
    try:
        normal = endpoints.normal(endpoint)
    except ValueError as error:
        raise errors.InvalidSource(f"{flag} {error}") from None
    # The endpoint on the command line is the one meant; the environment's may differ.
    settings = dataclasses.replace(settings, s3=dataclasses.replace(settings.s3, endpoint=None))
    return credentials.with_private_addresses(
        credentials.bind_endpoint(settings, endpoint=normal, bound_by=flag), allowed=private
    )


def _open_store(flags: StoreFlags) -> backup_stores.Store:
    if flags.volume is not None:
        return backup_stores.open_volume(flags.volume, description=f"volume {flags.volume}")
    if flags.endpoint is None or flags.bucket is None:
        raise streams.BackupError(
            "InvalidArgument", "name the store: --store-endpoint and --bucket, or --store-volume"
        )
    settings = _settings(
        flags.credentials_dir,
        endpoint=flags.endpoint,
        flag="--store-endpoint",
        private=flags.private_addresses,
    )
    prefix = flags.prefix if not flags.prefix or flags.prefix.endswith("/") else flags.prefix + "/"
    return backup_stores.open_s3(
        bucket=flags.bucket,
        prefix=prefix,
        settings=settings,
        mode=None,
        description=f"s3://{flags.bucket}/{prefix}",
    )


def _destination(target: TargetFlags) -> restore.Destination:
    if target.to is None:
        raise streams.BackupError("InvalidArgument", "say where to restore: --to or --export")
    if target.to.startswith("s3://"):
        if target.endpoint is None:
            raise streams.BackupError(
                "InvalidArgument", "--to s3://... needs --to-endpoint (the model store's server)"
            )
        location = locations.parse(target.to)
        assert isinstance(location, locations.S3Location)
        signature_key = None
        if target.signature_to is not None:
            signature_location, signature_name = locations.parse_file(target.signature_to)
            if not (
                isinstance(signature_location, locations.S3Location)
                and signature_location.bucket == location.bucket
            ):
                raise streams.BackupError(
                    "InvalidArgument", "--signature-to must be in the bucket of --to"
                )
            signature_key = signature_location.prefix + signature_name
        settings = _settings(
            target.credentials_dir,
            endpoint=target.endpoint,
            flag="--to-endpoint",
            private=target.private_addresses,
        )
        bucket = s3objects.S3Bucket(
            location.bucket, settings=settings.s3, transport_settings=settings.transport
        )
        return restore.S3Destination(bucket, prefix=location.prefix, signature_key=signature_key)
    folder = pathlib.Path(target.to)
    _check_new_folder(folder, flag="--to")
    signature = pathlib.Path(target.signature_to) if target.signature_to else folder / "model.sig"
    return restore.DirectoryDestination(folder, signature=signature)


def _check_new_folder(folder: pathlib.Path, *, flag: str) -> None:
    """A restore empties its folder when a file fails: it must be one of its own."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise streams.BackupError(
            "InvalidArgument", f"{flag} {str(folder)!r} must be a new or empty folder"
        )


def _write_approvals(path: pathlib.Path, approvals: typing.Sequence[dict[str, typing.Any]]) -> None:
    documents = []
    for body in approvals:
        metadata = dict(body.get("metadata") or {})
        # Applied anew: the uid and time were the old object's.
        metadata.pop("uid", None)
        metadata.pop("creationTimestamp", None)
        documents.append({**body, "metadata": metadata})
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
