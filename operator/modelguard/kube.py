"""The only module that talks to the Kubernetes API server (kopf's own watch machinery aside).

Objects cross this boundary as plain manifests (dicts), the same shape the builders produce and
kubectl prints. Children are created, then replaced whole (with the resourceVersion they were
decided from), always with one field manager; the status is written with server-side apply. The
API server garbage-collects children through their ownerReferences.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import os
import pathlib
import re
import stat
import typing
import uuid

import lightkube
import lightkube.codecs
import lightkube.config.kubeconfig
import lightkube.core.exceptions
import lightkube.core.resource_registry
import lightkube.generic_resource
import lightkube.models.core_v1
import lightkube.models.events_v1
import lightkube.models.meta_v1
import lightkube.resources.apps_v1
import lightkube.resources.core_v1
import lightkube.resources.events_v1
import yaml

from modelguard.api import backupstore, conventions, modelapproval, text, trustpolicy, v1alpha1

FIELD_MANAGER = "modelguard"
"""The field manager of every write the operator makes, and so the owner of every managed field."""

REPORTING_CONTROLLER = f"{v1alpha1.GROUP}/operator"
MAX_EVENT_NOTE_BYTES: typing.Final = 1024
"""The API server refuses an Event whose note is longer, counted in bytes of UTF-8."""

Manifest = dict[str, typing.Any]

TrustPolicyResource = lightkube.generic_resource.create_global_resource(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=trustpolicy.KIND,
    plural=trustpolicy.PLURAL,
)

ModelApprovalResource = lightkube.generic_resource.create_namespaced_resource(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=modelapproval.KIND,
    plural=modelapproval.PLURAL,
)

BackupStoreResource = lightkube.generic_resource.create_global_resource(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=backupstore.KIND,
    plural=backupstore.PLURAL,
)

ModelDeploymentResource = lightkube.generic_resource.create_namespaced_resource(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=v1alpha1.KIND,
    plural=v1alpha1.PLURAL,
)


class ApiError(Exception):
    """The API server refused a request; `reason` is its machine-readable reason."""

    def __init__(self, *, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _resource_type(api_version: str, kind: str) -> typing.Any:
    return lightkube.core.resource_registry.resource_registry.load(api_version, kind)


def _to_manifest(obj: typing.Any) -> Manifest:
    manifest: Manifest = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return manifest


def _api_error(error: lightkube.core.exceptions.ApiError) -> ApiError:
    status = error.status
    return ApiError(
        status=int(status.code or 0),
        reason=str(status.reason or ""),
        message=str(status.message or ""),
    )


class NotLeading(ApiError):
    """A write withheld: this replica does not hold the Lease that says who reconciles (another
    does, or this one's renewal is overdue)."""

    def __init__(self) -> None:
        super().__init__(
            status=0,
            reason="NotLeading",
            message="this replica does not lead (it does not hold the operator's Lease); the"
            " write is left to the replica that does",
        )


class CredentialsError(Exception):
    """The operator's credentials cannot be read; the message says which and why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Credentials:
    """Where the API server is and who the operator is to it, as they are at one moment: what kopf's
    own client (its watches and patches) needs, read from the same configuration as `Kube`."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    """Base64 PEM, as a kubeconfig holds it."""
    insecure: bool = False
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None
    username: str | None = None
    password: str | None = None
    namespace: str | None = None


MAX_TOKEN_BYTES: typing.Final = 64 * 1024
"""A ServiceAccount token is some 1 KiB; a file larger than this is not a token."""
# A bearer token as RFC 6750 allows it (a JWT is base64url and dots): anything else, whitespace or
# a line break inside above all, would be sent as a header the server reads otherwise.
_TOKEN_PATTERN: typing.Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def read_token(path: pathlib.Path) -> str:
    """The bearer token in a token file, read as the kubelet writes one: a regular file (a
    projected token is a symlink to one), at most MAX_TOKEN_BYTES, one token with at most
    surrounding whitespace. CredentialsError naming the file and what is wrong with it, never its
    content: whatever the path names (a device, a pipe, a huge file, another file's secret) is
    neither read without bound nor sent to the API server."""
    try:
        # Non-blocking: a FIFO put in the token's place must not hang the login.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise CredentialsError(f"token file {path}: {error.strerror}") from error
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise CredentialsError(f"token file {path} is not a regular file")
        try:
            raw = file.read(MAX_TOKEN_BYTES + 1)
        except OSError as error:
            raise CredentialsError(f"token file {path}: {error.strerror}") from error
    if len(raw) > MAX_TOKEN_BYTES:
        raise CredentialsError(
            f"token file {path} is larger than {MAX_TOKEN_BYTES} bytes: not a token"
        )
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = None
    if token == "":
        raise CredentialsError(f"token file {path} is empty")
    if token is None or not _TOKEN_PATTERN.fullmatch(token):
        raise CredentialsError(
            f"token file {path} does not hold one bearer token (letters, digits and -._~+/=,"
            " nothing else inside it, no whitespace or line break)"
        )
    return token


def _token_file(config: lightkube.config.kubeconfig.SingleConfig) -> pathlib.Path | None:
    """The user's token file, a relative path taken beside the kubeconfig (as kubectl does)."""
    user = config.user
    if user is None or not user.token_file:
        return None
    return pathlib.Path(str(config.abs_file(user.token_file)))


def credentials() -> Credentials:
    """The operator's credentials now: in a pod its ServiceAccount's, else those of $KUBECONFIG (or
    ~/.kube/config). A token in a file (a pod's projected token, a kubeconfig user's `tokenFile`)
    is read at each call: whoever renews it (the kubelet, at 80 % of its lifetime) rewrites the
    file, and the next call, which kopf makes when the API server answers 401, reads the new one.
    CredentialsError when they cannot be read or are of a kind kopf's client cannot use."""
    try:
        config = lightkube.config.kubeconfig.KubeConfig.from_env().get()
    except (lightkube.core.exceptions.ConfigError, OSError, KeyError) as error:
        raise CredentialsError(
            f"no usable kubeconfig or in-cluster ServiceAccount: {error}"
        ) from error
    except yaml.YAMLError as error:
        # Where, not the snippet YAML quotes: the line may hold a token.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CredentialsError(f"the kubeconfig is not YAML{where}") from None
    except ValueError as error:
        # lightkube's typed reading of a field of the wrong type: the message names the field
        # and the types ("Expected `str`, got `int` - at `$.server`"), not the value.
        raise CredentialsError(f"the kubeconfig is not a kubeconfig: {error}") from None
    except (TypeError, AttributeError):
        # A kubeconfig of the wrong shape (a list, a number where a map belongs).
        raise CredentialsError(
            "the kubeconfig is not a kubeconfig (a map with clusters, contexts and users)"
        ) from None
    if config is None:
        raise CredentialsError("the kubeconfig names no current context")
    cluster, user = config.cluster, config.user

    def path(value: str | None) -> str | None:
        return str(config.abs_file(value)) if value else None

    token = user.token if user is not None else None
    token_file = _token_file(config)
    if token_file is not None:
        token = read_token(token_file)
    elif user is not None and (user.exec or user.auth_provider):
        raise CredentialsError(
            "the kubeconfig's user authenticates through an exec plugin or auth-provider, which"
            " the operator's watches cannot use: give it a token, a tokenFile or a client"
            " certificate"
        )
    if not (
        token
        or (user is not None and (user.client_cert or user.client_cert_data))
        or (user is not None and user.username and user.password)
    ):
        # kopf would connect as system:anonymous: every request refused with 403, which it does
        # not take for expired credentials, so the operator would run on doing nothing.
        raise CredentialsError(
            "the kubeconfig's user has no token, tokenFile, client certificate or username and"
            " password: the operator does not connect anonymously"
        )
    return Credentials(
        server=cluster.server,
        ca_path=path(cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure,
        token=token,
        certificate_path=path(user.client_cert) if user else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=path(user.client_key) if user else None,
        private_key_data=user.client_key_data if user else None,
        username=user.username if user else None,
        password=user.password if user else None,
        namespace=config.context.namespace,
    )


class Kube:
    """An API client bound to one connection; cheap to share across handlers."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        leading: typing.Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self._leading = leading

    def fenced(self, leading: typing.Callable[[], bool]) -> Kube:
        """The same connection, refusing every write (NotLeading) whenever `leading()` is false:
        what the reconciles of a replica get, so that one that lost the Lease stops writing at
        that moment, whatever it was doing. Reads are never refused."""
        return Kube(self._client, leading=leading)

    def _may_write(self) -> None:
        if self._leading is not None and not self._leading():
            raise NotLeading()

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster ServiceAccount credentials, else $KUBECONFIG / ~/.kube/config. A token file
        (projected, or a kubeconfig's `tokenFile`) is read again whenever the API server answers
        401, and the request made once more with what it holds: a renewed token is followed."""
        config = lightkube.config.kubeconfig.KubeConfig.from_env().get()
        token_file = _token_file(config) if config is not None else None
        if config is not None and config.user is not None and token_file is not None:
            # lightkube opens a relative tokenFile from the working directory; kopf's login
            # (`credentials`) takes it beside the kubeconfig, as kubectl does. Both clients must
            # act as one identity, so lightkube is given the path that login reads.
            user = copy.copy(config.user)
            user.token_file = str(token_file)
            config = config._replace(user=user)
        return cls(lightkube.AsyncClient(config=config, field_manager=FIELD_MANAGER))

    async def close(self) -> None:
        await self._client.close()

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> Manifest | None:
        """The object, or None when it does not exist."""
        try:
            obj = await self._client.get(
                _resource_type(api_version, kind), name, namespace=namespace
            )
        except lightkube.core.exceptions.ApiError as error:
            if error.status.code == 404:
                return None
            raise _api_error(error) from error
        return _to_manifest(obj)

    async def get_model_deployment(self, *, namespace: str, name: str) -> Manifest | None:
        return await self.get(
            api_version=v1alpha1.API_VERSION, kind=v1alpha1.KIND, namespace=namespace, name=name
        )

    async def list_model_approvals(self, *, namespace: str) -> list[Manifest]:
        """Every ModelApproval in `namespace` (approvals only ever count in their own namespace)."""
        try:
            return [
                _to_manifest(obj)
                async for obj in self._client.list(ModelApprovalResource, namespace=namespace)
            ]
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error

    async def list_objects(
        self,
        *,
        api_version: str,
        kind: str,
        namespace: str,
        selector: typing.Mapping[str, str],
    ) -> list[Manifest]:
        """Objects of a kind in `namespace` whose labels match `selector`."""
        return await self._list(_resource_type(api_version, kind), namespace, selector)

    async def list_pods(
        self, *, namespace: str, selector: typing.Mapping[str, str]
    ) -> list[Manifest]:
        """Pods in `namespace` whose labels match `selector`."""
        return await self._list(lightkube.resources.core_v1.Pod, namespace, selector)

    async def list_replica_sets(
        self, *, namespace: str, selector: typing.Mapping[str, str]
    ) -> list[Manifest]:
        """ReplicaSets in `namespace` whose labels match `selector`."""
        return await self._list(lightkube.resources.apps_v1.ReplicaSet, namespace, selector)

    async def _list(
        self, resource: typing.Any, namespace: str, selector: typing.Mapping[str, str]
    ) -> list[Manifest]:
        try:
            return [
                _to_manifest(obj)
                async for obj in self._client.list(
                    resource, namespace=namespace, labels=dict(selector)
                )
            ]
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error

    async def get_trust_policy(self, name: str) -> Manifest | None:
        """The cluster-scoped TrustPolicy, or None when it does not exist."""
        try:
            obj = await self._client.get(TrustPolicyResource, name)
        except lightkube.core.exceptions.ApiError as error:
            if error.status.code == 404:
                return None
            raise _api_error(error) from error
        return _to_manifest(obj)

    async def get_backup_store(self, name: str) -> Manifest | None:
        """The cluster-scoped BackupStore, or None when it does not exist."""
        try:
            obj = await self._client.get(BackupStoreResource, name)
        except lightkube.core.exceptions.ApiError as error:
            if error.status.code == 404:
                return None
            raise _api_error(error) from error
        return _to_manifest(obj)

    async def list_backup_stores(self) -> list[Manifest]:
        """Every (cluster-scoped) BackupStore."""
        try:
            return [_to_manifest(obj) async for obj in self._client.list(BackupStoreResource)]
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error

    async def apply_backup_store_status(self, *, name: str, status: Manifest) -> None:
        """Server-side apply of a BackupStore's status subresource, one field manager."""
        self._may_write()
        body = BackupStoreResource.Status(
            apiVersion=v1alpha1.API_VERSION,
            kind=backupstore.KIND,
            metadata=lightkube.models.meta_v1.ObjectMeta(name=name),
            status=conventions.encodable(status),
        )
        try:
            await self._client.apply(
                typing.cast(typing.Any, body),
                name=name,
                field_manager=FIELD_MANAGER,
                force=True,
            )
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error

    async def get_secret_data(
        self, *, namespace: str, name: str
    ) -> tuple[dict[str, bytes], str] | None:
        """A Secret's decoded data and resourceVersion, or None when it does not exist.

        Only ever called for the Secret a ModelDeployment names, in its own namespace, and only
        where that namespace granted the operator `get` on it (see the chart's README).
        """
        try:
            secret = await self._client.get(
                lightkube.resources.core_v1.Secret, name, namespace=namespace
            )
        except lightkube.core.exceptions.ApiError as error:
            if error.status.code == 404:
                return None
            raise _api_error(error) from error
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return data, str(secret.metadata.resourceVersion if secret.metadata else "")

    async def get_namespace_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a namespace, or None when it does not exist."""
        try:
            found = await self._client.get(lightkube.resources.core_v1.Namespace, name)
        except lightkube.core.exceptions.ApiError as error:
            if error.status.code == 404:
                return None
            raise _api_error(error) from error
        return dict((found.metadata.labels if found.metadata else None) or {})

    async def create(self, manifest: Manifest) -> Manifest:
        """Creates the object; ApiError 409 (AlreadyExists) when its name is taken, whoever took
        it: what the operator creates is the operator's, and nothing else is."""
        self._may_write()
        try:
            created = await self._client.create(
                lightkube.codecs.from_dict(conventions.encodable(manifest)),
                field_manager=FIELD_MANAGER,
            )
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error
        return _to_manifest(created)

    async def replace(self, manifest: Manifest, *, dry_run: bool = False) -> Manifest:
        """Replaces the object with exactly `manifest` (which carries the resourceVersion it was
        decided from: a concurrent write makes this fail with 409 rather than be lost); with
        `dry_run` the API server answers what the object would become and stores nothing."""
        if not dry_run:
            self._may_write()
        obj = lightkube.codecs.from_dict(conventions.encodable(manifest))
        try:
            replaced = await self._client.replace(obj, field_manager=FIELD_MANAGER, dry_run=dry_run)
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error
        return _to_manifest(replaced)

    async def apply_model_deployment_status(
        self, *, namespace: str, name: str, status: Manifest
    ) -> None:
        """Server-side apply of the status subresource: the whole status, one field manager."""
        self._may_write()
        body = ModelDeploymentResource.Status(
            apiVersion=v1alpha1.API_VERSION,
            kind=v1alpha1.KIND,
            metadata=lightkube.models.meta_v1.ObjectMeta(name=name, namespace=namespace),
            status=conventions.encodable(status),
        )
        try:
            await self._client.apply(
                # lightkube's overloads do not cover generic status subresources; the call is right.
                typing.cast(typing.Any, body),
                name=name,
                namespace=namespace,
                field_manager=FIELD_MANAGER,
                force=True,
            )
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error

    async def post_event(
        self,
        *,
        regarding: Manifest,
        type: typing.Literal["Normal", "Warning"],
        reason: str,
        action: str,
        note: str,
        reporting_instance: str,
        namespace: str | None = None,
    ) -> None:
        """An events.k8s.io/v1 Event about `regarding` (`kubectl describe` and `kubectl events`),
        in `namespace` (default: the object's own; a cluster-scoped object's Events go to the
        operator's namespace)."""
        self._may_write()
        metadata = regarding["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = lightkube.resources.events_v1.Event(
            metadata=lightkube.models.meta_v1.ObjectMeta(
                name=f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
                namespace=namespace or metadata["namespace"],
            ),
            eventTime=now,
            type=type,
            reason=reason,
            action=action,
            # The API server caps notes at 1 KiB, in bytes; a note quotes outside text.
            note=text.quote(note, max_bytes=MAX_EVENT_NOTE_BYTES),
            reportingController=REPORTING_CONTROLLER,
            reportingInstance=reporting_instance,
            regarding=lightkube.models.core_v1.ObjectReference(
                apiVersion=regarding["apiVersion"],
                kind=regarding["kind"],
                name=metadata["name"],
                namespace=metadata.get("namespace"),
                uid=metadata.get("uid"),
                resourceVersion=metadata.get("resourceVersion"),
            ),
        )
        try:
            await self._client.create(event)
        except lightkube.core.exceptions.ApiError as error:
            raise _api_error(error) from error
