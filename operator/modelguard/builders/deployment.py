"""The Deployment of the model server: restricted pods, read-only model, no token, no surprises.

The pod passes Pod Security "restricted" on its own (it does not rely on namespace defaults), so
it runs the same in any namespace.
"""

import dataclasses
import typing

from modelguard.api import inputaudit, quantity, v1alpha1
from modelguard.api import placement as placement_api
from modelguard.builders import labels, meta, names

# A fixed non-root identity (the "nonroot" user of distroless images), so file ownership in the
# volumes is predictable whatever user the image declares.
RUN_AS: typing.Final = 65532
MODEL_MOUNT_PATH: typing.Final = "/models"
TMP_SIZE_LIMIT: typing.Final = "1Gi"
DEFAULT_MAX_BYTES: typing.Final = int(quantity.parse(v1alpha1.DEFAULT_MAX_MODEL_BYTES))
# Beyond the files' bytes, the model volume holds file system blocks' slack and directories:
# 64 MiB, or 1/64 of the bound for large models, so that a model within its bound is never
# evicted, while one a source inflates is (the agent stops first; the kubelet is the backstop).
_VOLUME_HEADROOM_BYTES: typing.Final = 64 << 20
REVISION_HISTORY_LIMIT: typing.Final = 3
# Loading a large model can take minutes; until the first successful probe, liveness waits.
STARTUP_TIMEOUT_SECONDS: typing.Final = 600

_SECCOMP: typing.Final = {"type": "RuntimeDefault"}

AGENT_CONTAINER: typing.Final = "fetch-verify"
CREDENTIALS_VOLUME: typing.Final = "source-credentials"
CREDENTIALS_MOUNT_PATH: typing.Final = "/var/run/modelguard/credentials"
CLAIM_VOLUME: typing.Final = "source-claim"
# Where the agent finds pvc://<claim>/ sources; the same root as modelguard.sources.pvc's default.
CLAIMS_MOUNT_ROOT: typing.Final = "/var/run/modelguard/claims"
ROOT_DIGEST_ANNOTATION: typing.Final = f"{v1alpha1.GROUP}/root-digest"
AUDIT_PROXY_CONTAINER: typing.Final = "audit-proxy"
# The proxy's ports, away from the usual serving ports; moved by one when the model server
# already uses one of them (the two share the pod's network namespace).
AUDIT_PROXY_PORT: typing.Final = 8480
AUDIT_METRICS_PORT: typing.Final = 9480
AUDIT_PROXY_REQUESTS: typing.Final = {"cpu": "100m", "memory": "64Mi"}
AGENT_RESOURCES: typing.Final = {
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


@dataclasses.dataclass(frozen=True)
class VerifiedArtifact:
    """What the control plane verified, pinned into the pod: the agent in the pod checks that the
    bytes it downloads are exactly these, so a swapped bucket cannot slip past the operator."""

    root_digest: str
    """The signed root digest, "sha256:<hex>"."""
    signature_digest: str
    """sha256 of the signature file verified, "sha256:<hex>": the root digest does not bind file
    names, so the agent must read this very bundle."""
    agent_image: str
    """The image of `modelguard agent fetch-verify` (the operator's own image, by digest)."""
    allow_formats: tuple[str, ...] = ()
    """The code-capable format families the TrustPolicy allows (spec.formats.allow), sorted."""
    audit_formats: bool = False
    """The TrustPolicy's enforcement is Audit: code-capable files it does not allow are admitted
    and reported."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """The most bytes the agent writes (`model_byte_bound`); the model volume's sizeLimit."""
    source_endpoint: str | None = None
    """The S3 endpoint the TrustPolicy binds the source to (None: AWS S3, or not s3://)."""
    signature_endpoint: str | None = None
    """The S3 endpoint the TrustPolicy binds the signature bundle to."""
    source_private_addresses: bool = False
    """The TrustPolicy source of spec.model.source says allowPrivateAddresses."""
    signature_private_addresses: bool = False
    """The same for the signature bundle's source."""
    redact_paths: tuple[str, ...] = ()
    """The TrustPolicy's spec.audit.redact.jsonPaths, which the audit proxy applies with the
    model's own."""
    redact_headers: tuple[str, ...] = ()
    """The TrustPolicy's spec.audit.redact.headers."""
    caller_identity_header: str | None = None
    """The TrustPolicy's spec.audit.callerIdentityHeader: the header the platform vouches for."""


def audited(md: v1alpha1.ModelDeployment) -> bool:
    """Whether the model's pods run the audit proxy in front of the model server."""
    return md.spec.audit.inputs != v1alpha1.AuditInputs.NONE


def _free_port(preferred: int, *, taken: int) -> int:
    return preferred + 1 if preferred == taken else preferred


def proxy_port(md: v1alpha1.ModelDeployment) -> int:
    """Where the audit proxy listens in the pod."""
    return _free_port(AUDIT_PROXY_PORT, taken=md.spec.serving.port)


def metrics_port(md: v1alpha1.ModelDeployment) -> int:
    """Where the audit proxy serves its Prometheus metrics."""
    return _free_port(AUDIT_METRICS_PORT, taken=md.spec.serving.port)


def ingress_port(md: v1alpha1.ModelDeployment) -> int:
    """The pod port callers reach (the Service's target, the NetworkPolicy's one port): the
    audit proxy's when it runs, else the model server's."""
    return proxy_port(md) if audited(md) else md.spec.serving.port


def model_byte_bound(md: v1alpha1.ModelDeployment, *, signed_bytes: int | None) -> int:
    """What bounds the model's bytes: the signed total when the signature gives sizes (shards),
    else spec.model.maxBytes (the files serialization signs digests only)."""
    if signed_bytes is not None:
        return max(1, signed_bytes)
    return md.spec.model.model_bytes()


def model_volume_limit(max_bytes: int) -> str:
    """The model emptyDir's sizeLimit for files of at most `max_bytes` bytes, in bytes."""
    return str(max_bytes + max(_VOLUME_HEADROOM_BYTES, max_bytes // 64))


CHECKOV_SKIP: typing.Final = "checkov.io/skip1"
CPU_LIMIT_SKIP: typing.Final = (
    "CKV_K8S_11=no CPU limit unless spec.serving.resources.limits.cpu sets one: CFS throttling "
    "turns inference latency spikes into timeouts; requests still reserve the CPU"
)


def build(
    md: v1alpha1.ModelDeployment,
    *,
    artifact: VerifiedArtifact,
    placement: placement_api.Placement = placement_api.NONE,
) -> meta.Manifest:
    """The Deployment of `md`, serving the verified `artifact`, its pods placed as the platform
    says (`placement`, the same for every model)."""
    manifest = meta.child(
        md, api_version="apps/v1", kind="Deployment", name=names.child_names(md.name).deployment
    )
    if "cpu" not in md.spec.serving.resources.limits:
        # Static checkers (checkov) read this; the skip says why, next to the object it excuses.
        manifest["metadata"]["annotations"] = {CHECKOV_SKIP: CPU_LIMIT_SKIP}
    manifest["spec"] = {
        "replicas": 0 if md.spec.quarantine else md.spec.serving.replicas,
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "selector": {"matchLabels": labels.selector(md.name)},
        # maxUnavailable 0: a new version that never becomes ready never takes down the old one.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "template": {
            "metadata": {
                "labels": labels.of(md),
                "annotations": {
                    "kubectl.kubernetes.io/default-container": names.CONTAINER,
                    ROOT_DIGEST_ANNOTATION: artifact.root_digest,
                },
            },
            "spec": {**_pod_spec(md, artifact=artifact), **placement.manifest()},
        },
    }
    return manifest


def artifact_of(live: meta.Manifest) -> VerifiedArtifact | None:
    """The artifact a live Deployment of ours serves, read back from its pod template (None when
    it is not one of ours): what a quarantine must keep pinned while it scales to zero."""
    template = live.get("spec", {}).get("template", {})
    root = (template.get("metadata", {}).get("annotations") or {}).get(ROOT_DIGEST_ANNOTATION)
    agents = [
        c
        for c in template.get("spec", {}).get("initContainers") or []
        if c.get("name") == AGENT_CONTAINER
    ]
    if not root or len(agents) != 1:
        return None
    args: list[str] = agents[0].get("args") or []
    if "--signature-digest" not in args:
        return None
    # Deployments made before the bound was pinned carry none: they get the default.
    max_bytes = DEFAULT_MAX_BYTES
    if "--max-bytes" in args:
        try:
            max_bytes = int(args[args.index("--max-bytes") + 1])
        except (IndexError, ValueError):
            return None
    return VerifiedArtifact(
        root_digest=str(root),
        signature_digest=args[args.index("--signature-digest") + 1],
        agent_image=str(agents[0].get("image", "")),
        allow_formats=_allowed_formats(args),
        audit_formats="--audit-formats" in args or "--audit-pickle" in args,
        max_bytes=max_bytes,
        source_endpoint=_flag(args, "--source-endpoint"),
        signature_endpoint=_flag(args, "--signature-endpoint"),
        source_private_addresses="--source-private-addresses" in args,
        signature_private_addresses="--signature-private-addresses" in args,
        **_audit_policy_of(template),
    )


def _audit_policy_of(template: meta.Manifest) -> dict[str, typing.Any]:
    # The proxy's rules are the policy's joined with the model's; reading them all back as the
    # policy's and joining the model's again gives the same rules.
    proxies = [
        c
        for c in template.get("spec", {}).get("containers") or []
        if c.get("name") == AUDIT_PROXY_CONTAINER
    ]
    if len(proxies) != 1:
        return {}
    args: list[str] = proxies[0].get("args") or []
    values = {
        flag: tuple(args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag)
        for flag in ("--redact-path", "--redact-header")
    }
    return {
        "redact_paths": values["--redact-path"],
        "redact_headers": values["--redact-header"],
        "caller_identity_header": _flag(args, "--identity-header"),
    }


def source_of(live: meta.Manifest) -> tuple[str, str] | None:
    """(source URI, signature URI) the agent of a live Deployment of ours reads, from its pod
    template (None when it is not one of ours)."""
    template = live.get("spec", {}).get("template", {})
    agents = [
        c
        for c in template.get("spec", {}).get("initContainers") or []
        if c.get("name") == AGENT_CONTAINER
    ]
    if len(agents) != 1:
        return None
    args: list[str] = agents[0].get("args") or []
    if "--source" not in args[:-1] or "--signature" not in args[:-1]:
        return None
    return args[args.index("--source") + 1], args[args.index("--signature") + 1]


def _flag(args: list[str], flag: str) -> str | None:
    at = args.index(flag) if flag in args else -1
    return args[at + 1] if 0 <= at < len(args) - 1 else None


def _allowed_formats(args: list[str]) -> tuple[str, ...]:
    # --allow-pickle: what pod specs of earlier versions carry.
    names = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--allow-format"}
    if "--allow-pickle" in args:
        names.add("Pickle")
    return tuple(sorted(names))


def _pod_spec(md: v1alpha1.ModelDeployment, *, artifact: VerifiedArtifact) -> dict[str, typing.Any]:
    return {
        "serviceAccountName": names.child_names(md.name).service_account,
        "automountServiceAccountToken": False,
        # Service environment variables leak the namespace's topology to the model server.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": dict(_SECCOMP),
        },
        # The server starts only once the agent has written every signed file and nothing else.
        "initContainers": [_agent_container(md, artifact=artifact)],
        "containers": [
            _server_container(md),
            *([_audit_proxy_container(md, artifact=artifact)] if audited(md) else []),
        ],
        "volumes": [
            # Filled by the verifying init container; never written by the server. Bounded like
            # the agent's writes, so no source can fill the node's disk through it.
            {
                "name": names.MODEL_VOLUME,
                "emptyDir": {"sizeLimit": model_volume_limit(artifact.max_bytes)},
            },
            # The only writable path, since the root filesystem is read-only; bounded so a
            # runaway server cannot fill the node's disk.
            {"name": names.TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
            *_source_volumes(md),
        ],
    }


def _claim(md: v1alpha1.ModelDeployment) -> str | None:
    uri = md.spec.model.source.uri
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def _source_volumes(md: v1alpha1.ModelDeployment) -> list[dict[str, typing.Any]]:
    volumes: list[dict[str, typing.Any]] = []
    secret = md.spec.model.source.credentials_secret
    if secret:
        # Mounted into the agent only: the model server never sees the storage credentials.
        volumes.append(
            {"name": CREDENTIALS_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}}
        )
    claim = _claim(md)
    if claim:
        volumes.append(
            {"name": CLAIM_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    return volumes


def _agent_container(
    md: v1alpha1.ModelDeployment, *, artifact: VerifiedArtifact
) -> dict[str, typing.Any]:
    model = md.spec.model
    args = [
        "agent",
        "fetch-verify",
        "--source",
        model.source.uri,
        "--signature",
        model.signature_uri(),
        "--root-digest",
        artifact.root_digest,
        "--signature-digest",
        artifact.signature_digest,
        "--dest",
        MODEL_MOUNT_PATH,
        "--max-bytes",
        str(artifact.max_bytes),
    ]
    # The agent reads S3 only from the endpoints the TrustPolicy binds, as the operator did.
    if artifact.source_endpoint is not None:
        args += ["--source-endpoint", artifact.source_endpoint]
    if artifact.signature_endpoint is not None:
        args += ["--signature-endpoint", artifact.signature_endpoint]
    # Host names resolving to private addresses, only where the TrustPolicy's source admits them.
    if artifact.source_private_addresses:
        args.append("--source-private-addresses")
    if artifact.signature_private_addresses:
        args.append("--signature-private-addresses")
    mounts: list[dict[str, typing.Any]] = [
        {"name": names.MODEL_VOLUME, "mountPath": MODEL_MOUNT_PATH},
        {"name": names.TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    if model.source.credentials_secret:
        args += ["--credentials-dir", CREDENTIALS_MOUNT_PATH]
        mounts.append(
            {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_MOUNT_PATH, "readOnly": True}
        )
    claim = _claim(md)
    if claim:
        mounts.append(
            {"name": CLAIM_VOLUME, "mountPath": f"{CLAIMS_MOUNT_ROOT}/{claim}", "readOnly": True}
        )
    for family in artifact.allow_formats:
        args += ["--allow-format", family]
    if artifact.audit_formats:
        args.append("--audit-formats")
    return {
        "name": AGENT_CONTAINER,
        "image": artifact.agent_image,
        "command": ["modelguard"],
        "args": args,
        "resources": {key: dict(value) for key, value in AGENT_RESOURCES.items()},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
        # The agent writes its one-line refusal there; the operator reads it from the pod status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _container_security() -> dict[str, typing.Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(_SECCOMP),
    }


def _audit_proxy_container(
    md: v1alpha1.ModelDeployment, *, artifact: VerifiedArtifact
) -> dict[str, typing.Any]:
    audit = md.spec.audit
    args = [
        "agent",
        "audit-proxy",
        "--port",
        str(proxy_port(md)),
        "--upstream-port",
        str(md.spec.serving.port),
        "--inputs",
        str(audit.inputs),
        # One log (and key name) per pod: the proxy puts in its host name, which is the pod's
        # (the operator's pods take no environment from fields, so no downward API).
        "--log-name",
        f"{md.namespace}/{{pod}}/inputs",
        "--max-request-bytes",
        str(audit.request_bytes()),
        "--rate",
        str(audit.rate_limit.requests_per_second),
        "--burst",
        str(audit.rate_limit.burst),
        "--max-connections",
        str(audit.max_connections),
        "--metrics-port",
        str(metrics_port(md)),
    ]
    # Deny wins: the policy's rules and the model's, joined; duplicates once, in a stable order.
    for path in sorted({*artifact.redact_paths, *audit.redact.json_paths}):
        args += ["--redact-path", path]
    for header in sorted({h.lower() for h in (*artifact.redact_headers, *audit.redact.headers)}):
        args += ["--redact-header", header]
    if artifact.caller_identity_header is not None:
        args += ["--identity-header", artifact.caller_identity_header]
    return {
        "name": AUDIT_PROXY_CONTAINER,
        "image": artifact.agent_image,
        "command": ["modelguard"],
        "args": args,
        "ports": [
            {"name": names.PORT_NAME, "containerPort": proxy_port(md), "protocol": "TCP"},
            {"name": names.METRICS_PORT_NAME, "containerPort": metrics_port(md), "protocol": "TCP"},
        ],
        # The limit follows maxConnections: each connection's buffers count against it.
        "resources": {
            "requests": dict(AUDIT_PROXY_REQUESTS),
            "limits": {"memory": f"{inputaudit.proxy_memory_limit_mib(audit.max_connections)}Mi"},
        },
        "securityContext": _container_security(),
        "readinessProbe": {
            "tcpSocket": {"port": names.PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": names.PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _server_container(md: v1alpha1.ModelDeployment) -> dict[str, typing.Any]:
    serving = md.spec.serving
    # Behind the audit proxy the server's port is its own (the proxy's is the one callers and
    # the Service reach, and the only one the NetworkPolicy admits).
    port_name = names.SERVER_PORT_NAME if audited(md) else names.PORT_NAME
    return {
        "name": names.CONTAINER,
        "image": serving.image,
        "ports": [{"name": port_name, "containerPort": serving.port, "protocol": "TCP"}],
        "resources": _resources(serving.resources),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": names.MODEL_VOLUME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True},
            {"name": names.TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        ],
        "startupProbe": {
            **_tcp_probe(port_name),
            "periodSeconds": 5,
            "failureThreshold": STARTUP_TIMEOUT_SECONDS // 5,
        },
        "readinessProbe": {**_tcp_probe(port_name), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**_tcp_probe(port_name), "periodSeconds": 10, "failureThreshold": 3},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _tcp_probe(port_name: str) -> dict[str, typing.Any]:
    # A TCP connect works for any server; an HTTP health path would be a guess about the image.
    return {"tcpSocket": {"port": port_name}}


def _resources(resources: v1alpha1.ResourceRequirements) -> dict[str, dict[str, str]]:
    # An empty map is left out: it means "none" in the spec and would be noise in the manifest.
    result = {"requests": dict(resources.requests), "limits": dict(resources.limits)}
    return {key: value for key, value in result.items() if value}
