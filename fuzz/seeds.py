"""Writes the fuzz targets' seed corpora and the public material they verify against, from real
inputs: model_signing signature files (key and certificate methods, files and shards
serialization), the in-toto statements they sign, ModelApprovals as `modelguard approve` makes
them, AdmissionReviews (admission.k8s.io/v1) of the objects each webhook judges (the children
are those the operator's builders make), and audit logs as the operator's sink and the audit
proxy write them, with their checkpoints as the operator publishes them.

    python fuzz/seeds.py        # rewrites fuzz/fixtures.json and fuzz/corpus/*/seed-*

The private keys live only for the run: the fuzzer needs the public ones (fixtures.json) for the
seeds' signatures to verify, so that it starts from inputs that reach the deepest checks. Seeds
are named seed-<what>; inputs the fuzzer found and `make fuzz-merge` kept are named by their
SHA-1, as libFuzzer names them, and this script leaves them alone. New keys each run: the kept
inputs signed with the old ones still replay, but no longer verify, so run it only when a seed
must change.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import pathlib
import sys
import tempfile
import typing

import model_signing
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import oid

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "hack"), str(HERE.parent / "operator")]

import signedmodel  # noqa: E402 - hack/ is put on the path above
import targets  # noqa: E402 - this directory, on the path as the script's own
from modelguard.agent import recordwriter  # noqa: E402
from modelguard.api import v1alpha1  # noqa: E402
from modelguard.audit import keys, records, sink  # noqa: E402
from modelguard.builders import children, deployment, labels  # noqa: E402

CORPUS = HERE / "corpus"
# What the seeds are valid at: certificates and approvals outlive it, the fuzzer checks at it.
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)
LOG_NAME = targets.AUDIT_LOG_NAME
NAMESPACE = targets.NAMESPACE


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(scratch)
        material = _Material.make(work)
        signature_files = _signature_files(work, material)
        approvals = _approvals(work, material, signature_files["key-files"])
        fixtures = {
            "signerPublicKey": material.signer_public,
            "certificateRoot": material.root_pem,
            "certificateSubject": targets.CERTIFICATE_SUBJECT,
            "approverPublicKey": material.approver_public,
            "auditVerifier": material.audit.verifier.vkey,
        }
        (HERE / "fixtures.json").write_text(json.dumps(fixtures, indent=2) + "\n")
        _write("bundle", signature_files)
        _write(
            "statement",
            {
                name: _payload(data)
                for name, data in signature_files.items()
                # The certificate method signs the same statement as the key method.
                if name.startswith("key-")
            },
        )
        _write("approval", {name: _json(body) for name, body in approvals.items()})
        _write("admission", _reviews(material, approvals))
        _write("audit", _audit_logs(material.audit))


class _Material:
    """Keys and certificates of one run."""

    def __init__(self, work: pathlib.Path) -> None:
        self.signer_key, self.signer_public = signedmodel.generate_key(work, name="signer")
        self.approver_key, self.approver_public = signedmodel.generate_key(work, name="approver")
        self.root, self.root_key = _certificate(work, "root", issuer=None)
        self.leaf, self.leaf_key = _certificate(work, "leaf", issuer=(self.root, self.root_key))
        self.root_pem = self.root.read_text()
        self.audit = keys.generate(LOG_NAME)

    @classmethod
    def make(cls, work: pathlib.Path) -> _Material:
        return cls(work)


def _certificate(
    work: pathlib.Path, name: str, *, issuer: tuple[pathlib.Path, pathlib.Path] | None
) -> tuple[pathlib.Path, pathlib.Path]:
    """A CA (issuer None) or a code-signing certificate it issues, as PEM files."""
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    common_name = targets.CERTIFICATE_SUBJECT.removeprefix("CN=") if issuer else "Fuzz CA"
    subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name)])
    signing_key, issuer_name = key, subject
    if issuer is not None:
        loaded = serialization.load_pem_private_key(issuer[1].read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signing_key = loaded
        issuer_name = x509.load_pem_x509_certificate(issuer[0].read_bytes()).subject
    ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    certificate = builder.sign(signing_key, hashes.SHA256())
    pem, private = work / f"{name}.crt", work / f"{name}.key"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, private


def _signature_files(work: pathlib.Path, material: _Material) -> dict[str, bytes]:
    """Real model_signing signature files of small models, by seed name."""
    model = signedmodel.write_model(work / "model", signedmodel.demo_files("1.0.0"))
    single = work / "single" / "model.safetensors"
    signedmodel.write_model(single.parent, {single.name: signedmodel.demo_files("1")[single.name]})
    found = {
        "key-files": signedmodel.sign(
            model, private_key=material.signer_key, signature=work / "key.sig"
        ),
        "key-single-file": signedmodel.sign(
            single, private_key=material.signer_key, signature=work / "single.sig"
        ),
    }
    shards = work / "shards.sig"
    (
        model_signing.signing.Config()
        .use_elliptic_key_signer(private_key=material.signer_key)
        .set_hashing_config(model_signing.hashing.Config().use_shard_serialization(shard_size=16))
        .sign(model, shards)
    )
    found["key-shards"] = shards.read_bytes()
    certificate = work / "certificate.sig"
    (
        model_signing.signing.Config()
        .use_certificate_signer(
            private_key=material.leaf_key,
            signing_certificate=material.leaf,
            certificate_chain=[material.root],
        )
        .sign(model, certificate)
    )
    found["certificate-files"] = certificate.read_bytes()
    # Several signers of one model: one bundle per line (JSONL).
    found["key+certificate-jsonl"] = (
        _one_line(found["key-files"]) + b"\n" + _one_line(found["certificate-files"]) + b"\n"
    )
    return found


def _one_line(signature: bytes) -> bytes:
    return json.dumps(json.loads(signature), separators=(",", ":")).encode()


def _payload(signature: bytes) -> bytes:
    return base64.b64decode(json.loads(signature)["dsseEnvelope"]["payload"])


def _approvals(
    work: pathlib.Path, material: _Material, signature: bytes
) -> dict[str, dict[str, typing.Any]]:
    key = material.approver_key
    digest = signedmodel.root_digest(signature)
    made = {}
    for name, model, version in (
        ("approval", targets.MODEL, targets.VERSION),
        ("approval-other-version", targets.MODEL, "2.0.0"),
    ):
        made[name] = signedmodel.approval(
            private_key=key,
            namespace=NAMESPACE,
            model=model,
            version=version,
            digest=digest,
            expires=NOT_AFTER,
            name=f"{model}-{version.replace('.', '-')}",
        )
    return made


def _reviews(material: _Material, approvals: dict[str, dict[str, typing.Any]]) -> dict[str, bytes]:
    """AdmissionReviews as the API server sends them, one per webhook and operation."""
    md = targets.model_deployment_body()
    policy = targets.trust_policy_body(
        signer_key=material.signer_public,
        approver_key=material.approver_public,
        certificate_root=material.root_pem,
    )
    model = v1alpha1.parse(md)
    artifact = deployment.VerifiedArtifact(
        root_digest="sha256:" + "0" * 64,
        signature_digest="sha256:" + "1" * 64,
        agent_image="registry.example/modelguard@sha256:" + "2" * 64,
    )
    built = {item["kind"]: item for item in children.build_children(model, artifact=artifact)}
    managed_deployment = {
        **built["Deployment"],
        "metadata": {**built["Deployment"]["metadata"], "namespace": NAMESPACE},
    }
    widened = json.loads(json.dumps(managed_deployment))
    widened["spec"]["replicas"] = 5
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{md['metadata']['name']}-7d9c6b5f4-x2x7q",
            "namespace": NAMESPACE,
            "labels": {**labels.of(model), labels.TEMPLATE_HASH: "7d9c6b5f4"},
        },
        "spec": managed_deployment["spec"]["template"]["spec"],
    }
    opening = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {labels.MODEL_DEPLOYMENT: md["metadata"]["name"]}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
    }
    scale = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": managed_deployment["metadata"]["name"], "namespace": NAMESPACE},
        "spec": {"replicas": 9},
    }
    exec_options = {"apiVersion": "v1", "kind": "PodExecOptions", "command": ["sh"], "stdin": True}
    updated_md = json.loads(json.dumps(md))
    updated_md["spec"]["model"]["version"] = "2.0.0"
    updated_md["spec"]["rollout"] = {"onUnapproved": "Reject"}
    unapproved_md = json.loads(json.dumps(updated_md))
    unapproved_md["spec"]["model"]["version"] = "3.0.0"
    user = {"username": "alice", "uid": "1000", "groups": ["developers", "system:authenticated"]}
    cases: dict[str, bytes] = {
        "modeldeployment-create": _review(
            ("modelguard.dev", "v1alpha1", "modeldeployments"), "CREATE", md, user=user
        ),
        "modeldeployment-update-rejected": _review(
            ("modelguard.dev", "v1alpha1", "modeldeployments"),
            "UPDATE",
            updated_md,
            old=md,
            user=user,
        ),
        "modeldeployment-update-unapproved": _review(
            ("modelguard.dev", "v1alpha1", "modeldeployments"),
            "UPDATE",
            unapproved_md,
            old=md,
            user=user,
        ),
        "trustpolicy-create": _review(
            ("modelguard.dev", "v1alpha1", "trustpolicies"), "CREATE", policy, user=user
        ),
        "modelapproval-create": _review(
            ("modelguard.dev", "v1alpha1", "modelapprovals"),
            "CREATE",
            approvals["approval"],
            user=user,
        ),
        "deployment-update": _review(
            ("apps", "v1", "deployments"), "UPDATE", widened, old=managed_deployment, user=user
        ),
        "deployment-delete": _review(
            ("apps", "v1", "deployments"), "DELETE", None, old=managed_deployment, user=user
        ),
        "deployment-scale": _review(
            ("apps", "v1", "deployments"), "UPDATE", scale, old=scale, user=user, sub="scale"
        ),
        "networkpolicy-create": _review(
            ("networking.k8s.io", "v1", "networkpolicies"), "CREATE", opening, user=user
        ),
        "pod-exec": _review(
            ("", "v1", "pods"),
            "CONNECT",
            exec_options,
            user=user,
            sub="exec",
            name=pod["metadata"]["name"],
        ),
        "pod-ephemeralcontainers": _review(
            ("", "v1", "pods"), "UPDATE", pod, old=pod, user=user, sub="ephemeralcontainers"
        ),
        "serviceaccount-create-by-controller": _review(
            ("", "v1", "serviceaccounts"),
            "CREATE",
            {**built["ServiceAccount"], "metadata": {**built["ServiceAccount"]["metadata"]}},
            user={"username": targets.OPERATOR_USERNAME, "groups": ["system:serviceaccounts"]},
        ),
    }
    return cases


def _review(
    resource: tuple[str, str, str],
    operation: str,
    body: dict[str, typing.Any] | None,
    *,
    user: dict[str, typing.Any],
    old: dict[str, typing.Any] | None = None,
    sub: str | None = None,
    name: str | None = None,
) -> bytes:
    """An AdmissionReview request with every field the API server fills in (admission.k8s.io/v1)."""
    group, version, plural = resource
    shown = body if body is not None else old
    assert shown is not None
    kind = {"group": group, "version": version, "kind": shown["kind"]}
    request: dict[str, typing.Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": kind,
        "resource": {"group": group, "version": version, "resource": plural},
        "requestKind": kind,
        "requestResource": {"group": group, "version": version, "resource": plural},
        "name": name or shown.get("metadata", {}).get("name", ""),
        "namespace": shown.get("metadata", {}).get("namespace", NAMESPACE),
        "operation": operation,
        "userInfo": user,
        "object": body,
        "oldObject": old,
        "dryRun": False,
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions"}.get(
                operation, "DeleteOptions"
            ),
        },
    }
    if sub is not None:
        request["subResource"] = sub
        request["requestSubResource"] = sub
    if operation == "CONNECT":
        request["options"] = None
    return _json(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


def _audit_logs(signer: keys.Signer) -> dict[str, bytes]:
    """Audit logs with their checkpoints, in each form `modelguard audit verify` reads them."""
    subject = records.Subject(
        api_version=v1alpha1.API_VERSION,
        kind="ModelDeployment",
        namespace=NAMESPACE,
        name="sentiment",
        uid="0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b",
        generation=3,
    )
    clock = _Clock(datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
    first, first_notes, last = _segment(
        signer, subject, clock=clock, segment="20300102-030405-0a1b2c3d", previous=None
    )
    second, second_notes, _ = _segment(
        signer, subject, clock=clock, segment="20300102-040000-1b2c3d4e", previous=last
    )
    config_maps = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"modelguard-audit-{number}",
                    "namespace": "modelguard-system",
                    "labels": {"audit.modelguard.dev/log": "modelguard"},
                },
                "data": {"checkpoint": note},
            }
            for number, note in enumerate(first_notes + second_notes)
        ],
    }
    separator = targets.AUDIT_SEPARATOR
    proxy = _proxy_log(signer, clock=clock)
    return {
        "log-and-notes": first + separator + first_notes[-1].encode(),
        "two-segments-configmaps-json": first + second + separator + _json(config_maps),
        "two-segments-configmaps-yaml": first
        + second
        + separator
        + yaml.safe_dump(config_maps, sort_keys=False).encode(),
        "chain-only": first,
        "audit-proxy-log": proxy + separator + proxy,
    }


class _Clock:
    def __init__(self, start: datetime.datetime) -> None:
        self.now = start

    def __call__(self) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=7)
        return self.now


def _segment(
    signer: keys.Signer,
    subject: records.Subject,
    *,
    clock: _Clock,
    segment: str,
    previous: typing.Any,
) -> tuple[bytes, list[str], typing.Any]:
    """One segment as the operator writes it: started, decisions, closed; the notes of its
    checkpoints and its last checkpoint."""
    out = io.StringIO()
    audit = sink.start(
        out,
        instance="modelguard-0",
        signer=signer,
        cadence=sink.Cadence(records=3, seconds=300),
        previous=previous,
        clock=clock,
        segment=segment,
    )
    made = [audit.checkpoint(force=True)]
    for decision, reason, details in (
        (records.Decision.VERIFIED, "SignatureVerified", {"rootDigest": "sha256:" + "ab" * 32}),
        (records.Decision.VERIFICATION_REFUSED, "UntrustedSigner", {"signer": "unknown"}),
        (records.Decision.VERIFIED, "SignatureVerified", {"version": "1.4.0"}),
        (records.Decision.QUARANTINED, "QuarantineRequested", {"by": "alice"}),
    ):
        audit.record(
            decision,
            reason=reason,
            message=f"{reason} for {subject.name}",
            subject=subject,
            details=details,
        )
        made.append(audit.checkpoint())
    made.append(audit.close(reason="OperatorStopped", message="the operator stopped"))
    signed = [item for item in made if item is not None]
    return out.getvalue().encode(), [item.note for item in signed], signed[-1].checkpoint


def _proxy_log(signer: keys.Signer, *, clock: _Clock) -> bytes:
    """The audit proxy's output: its records with its checkpoint lines among them, on one stream,
    as its Writer publishes them (the Writer's own key is made at its start and never stored)."""
    out = io.StringIO()
    audit = sink.start(
        out,
        instance="sentiment-7d9c6b5f4-x2x7q",
        signer=signer,
        cadence=sink.Cadence(records=2, seconds=300),
        clock=clock,
        segment="20300102-050000-2c3d4e5f",
    )

    def publish(signed: typing.Any) -> None:
        if signed is not None:
            out.write(recordwriter.checkpoint_line(signed) + "\n")

    publish(audit.checkpoint(force=True))
    for status in (200, 403, 200):
        audit.record(
            records.Decision.INFERENCE_REQUEST,
            reason="Served" if status == 200 else "Refused",
            message=f"POST /v1/predict {status}",
            details={"status": status, "requestBytes": 42, "requestSha256": "ab" * 32},
        )
        publish(audit.checkpoint())
    publish(audit.close(reason="AuditProxyStopped", message="stopped"))
    return out.getvalue().encode()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _write(target: str, seeds: dict[str, bytes]) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
