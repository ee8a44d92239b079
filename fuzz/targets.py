"""The fuzz targets: each takes bytes, hands them to one of ModelGuard's readers of untrusted input
the way the operator or the CLI does, and lets through only that entry point's documented
refusals. Any other exception is a crash (the contract is a clear refusal, never a traceback), and
so is a webhook answer that is not a clear one.

- admission: the body of an HTTP POST to the webhook server, through aiohttp's request, kopf's
  AdmissionReview decoding (WebhookServer._serve, serve_admission_request) and ModelGuard's
  wrapper, to every validating handler registered for the resource, answering from caches that
  hold a TrustPolicy, a ModelApproval, a ModelDeployment and its pod. A clear refusal is an HTTP
  4xx with a reason (a request that is no AdmissionReview) or a denial with code 403; an answer
  with code 500 means a handler raised something other than its denial.
- bundle: a signature file (.sig or JSONL) verified against a TrustPolicy with a key signer and a
  certificate signer: bundle parsing, certificate chains, signatures, the statement it signs, the
  source and hash checks. Refusal: VerificationError.
- statement: a DSSE payload as an in-toto statement, then compared with a signed manifest.
  Refusal: VerificationError.
- approval: a ModelApproval object (JSON) judged by the admission decision and counted by the
  rollout gate's evaluation. Neither raises: both answer with a decision.
- audit: `modelguard audit verify` on a log and its checkpoints (the bytes before and after
  AUDIT_SEPARATOR; without it, --no-checkpoints). It answers with an exit code, never raises.

Nothing here needs atheris: `make test` replays the checked-in corpora through these functions
(tests/unit/test_fuzz_corpora.py), and fuzz/run.py drives them under libFuzzer.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import functools
import io
import json
import pathlib
import sys
import tempfile
import typing

HERE = pathlib.Path(__file__).resolve().parent
# This tree's operator, whichever one the environment has installed.
sys.path.insert(0, str(HERE.parent / "operator"))

import aiohttp.web  # noqa: E402
import kopf  # noqa: E402
from aiohttp import streams, test_utils  # noqa: E402
from kopf._cogs.structs import references  # noqa: E402 - kopf's admission entry point's inputs
from kopf._core.engines import admission as kopf_admission  # noqa: E402
from kopf._core.intents import registries  # noqa: E402
from kopf._core.reactor import inventory  # noqa: E402

from modelguard import handlers  # noqa: E402 - registers the webhooks with kopf, as `run` does
from modelguard.admission import decisions, serving, webhooks  # noqa: E402
from modelguard.api import errors, modelapproval, trustpolicy  # noqa: E402
from modelguard.commands import auditlog  # noqa: E402
from modelguard.trust import approval, policy, reasons, statement, verify  # noqa: E402

NAMESPACE: typing.Final = "team-nlp"
MODEL: typing.Final = "sentiment-bert"
VERSION: typing.Final = "1.4.0"
POLICY_NAME: typing.Final = "production"
OPERATOR_USERNAME: typing.Final = "system:serviceaccount:modelguard-system:modelguard"
CERTIFICATE_SUBJECT: typing.Final = "CN=ml-release"
AUDIT_LOG_NAME: typing.Final = "modelguard-system/modelguard"
AUDIT_SEPARATOR: typing.Final = b"\n--- checkpoints ---\n"
# When signatures are judged: inside the seeds' certificates' validity, and fixed, so that a
# corpus input means the same every run.
AT: typing.Final = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
SOURCE_URI: typing.Final = f"s3://models/{MODEL}/{VERSION}/"
FIXTURES: typing.Final = HERE / "fixtures.json"


class Crash(AssertionError):
    """An answer that is not a clear refusal, though nothing raised."""


def trust_policy_body(
    *, signer_key: str, approver_key: str, certificate_root: str
) -> dict[str, typing.Any]:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "signers": [
                {"name": "ml-release", "publicKey": signer_key},
                {
                    "name": "ca-release",
                    "certificateRoot": certificate_root,
                    "identity": {"subject": CERTIFICATE_SUBJECT},
                },
            ],
            "approvers": [{"name": "security", "publicKey": approver_key, "roles": ["security"]}],
            "minApprovals": 1,
            "sources": [{"uri": "s3://models/"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "network": {"ingressCIDRs": ["10.0.0.0/8"], "egressCIDRs": ["10.0.5.10/32"]},
        },
    }


def model_deployment_body() -> dict[str, typing.Any]:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "sentiment", "namespace": NAMESPACE, "uid": "0b5e8c1a"},
        "spec": {
            "trustPolicy": POLICY_NAME,
            "model": {
                "name": MODEL,
                "version": VERSION,
                "source": {"uri": SOURCE_URI, "credentialsSecret": "models-readonly"},
            },
            "serving": {
                "image": "registry.example/model-server@sha256:" + "4f" * 32,
                "port": 8080,
                "replicas": 2,
            },
            "access": {"ingress": [{"namespaceSelector": {"matchLabels": {"team": "frontend"}}}]},
            "audit": {"inputs": "Metadata"},
        },
    }


@functools.cache
def _fixtures() -> dict[str, str]:
    loaded: dict[str, str] = json.loads(FIXTURES.read_text())
    return loaded


@functools.cache
def _policy_body() -> dict[str, typing.Any]:
    found = _fixtures()
    return trust_policy_body(
        signer_key=found["signerPublicKey"],
        approver_key=found["approverPublicKey"],
        certificate_root=found["certificateRoot"],
    )


@functools.cache
def _policy() -> trustpolicy.TrustPolicySpec:
    return trustpolicy.parse(_policy_body()).spec


# --- admission ---------------------------------------------------------------------------------


class _Memories(kopf_admission.MemoGetter):
    """kopf's own memories of objects, new for each request: they keep an entry per object uid,
    which across millions of inputs would be the harness' growth, not the operator's."""

    def __init__(self) -> None:
        self.memories = inventory.ResourceMemories()

    async def recall_memo(
        self, raw_body: typing.Any, *, memobase: typing.Any = None, ephemeral: bool = False
    ) -> typing.Any:
        self.memories = inventory.ResourceMemories()
        return await self.memories.recall_memo(raw_body, memobase=memobase, ephemeral=ephemeral)


# The resources the chart's webhook configurations send, as discovery describes them to kopf.
_RESOURCES: typing.Final = (
    ("apps", "v1", "deployments", "Deployment", ("scale", "status")),
    ("apps", "v1", "replicasets", "ReplicaSet", ("scale", "status")),
    ("", "v1", "pods", "Pod", ("ephemeralcontainers", "exec", "attach", "portforward", "proxy")),
    ("", "v1", "services", "Service", ("status", "proxy")),
    ("", "v1", "serviceaccounts", "ServiceAccount", ("token",)),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", ()),
    ("modelguard.dev", "v1alpha1", "modeldeployments", "ModelDeployment", ("status",)),
    ("modelguard.dev", "v1alpha1", "trustpolicies", "TrustPolicy", ("status",)),
    ("modelguard.dev", "v1alpha1", "modelapprovals", "ModelApproval", ("status",)),
)


class _Admission:
    """The webhook server's request path, set up once: kopf's entry point with the operator's
    registry, and the caches a running operator would hold."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        options = serving.Options(
            port=9443,
            cert_dir=pathlib.Path("/nonexistent"),  # read only when the listener starts
            addr="127.0.0.1",
            identity=decisions.Identity(operator_username=OPERATOR_USERNAME),
        )
        served = serving.server(options)
        assert isinstance(served, serving._Served)
        self.server_class = type(served.served)
        memo = kopf.Memo()
        memo.webhook = options
        memo.admission_caches = webhooks.Caches(filled=True)
        insights = references.Insights()
        insights.webhook_resources.update(
            references.Resource(
                group,
                version,
                plural,
                kind=kind,
                namespaced=True,
                preferred=True,
                subresources=frozenset(subresources),
                verbs=frozenset({"create", "update", "delete", "get", "list", "watch", "patch"}),
            )
            for group, version, plural, kind, subresources in _RESOURCES
        )
        settings = kopf.OperatorSettings()
        self.fn = served.wrap(
            functools.partial(
                kopf_admission.serve_admission_request,
                settings=settings,
                memories=_Memories(),
                memobase=typing.cast(typing.Any, memo),
                registry=registries.get_default_registry(),
                insights=insights,
                # kopf's indexes are mappings to collections of values, as these are.
                indices=typing.cast(typing.Any, self._indices()),
            )
        )
        assert handlers.validate_managed_child is not None  # imported for its registrations

    @staticmethod
    def _indices() -> dict[str, dict[typing.Any, list[typing.Any]]]:
        """The operator's indexes over one namespace's objects, made by its own index functions."""
        md = model_deployment_body()
        pod_labels = {
            "app.kubernetes.io/managed-by": "modelguard",
            "modelguard.dev/model-deployment": "sentiment",
            "pod-template-hash": "7d9c6b5f4",
        }
        approvals = [
            json.loads(path.read_bytes()) for path in sorted(HERE.glob("corpus/approval/seed-*"))
        ]
        indexed: dict[str, list[dict[typing.Any, typing.Any]]] = {
            webhooks.TRUST_POLICIES: [
                webhooks.index_trust_policy(name=POLICY_NAME, body=_body(_policy_body()))
            ],
            webhooks.APPROVALS_BY_MODEL: [
                webhooks.index_approval(
                    namespace=NAMESPACE, spec=kopf.Spec(_body(a)), body=_body(a)
                )
                for a in approvals
            ],
            webhooks.MANAGED_DEPLOYMENTS: [
                webhooks.index_managed_deployment(
                    namespace=NAMESPACE,
                    name="sentiment",
                    meta=kopf.Meta(_body({"metadata": {"labels": pod_labels}})),
                )
            ],
            webhooks.POLICIES_BY_MODEL: [
                webhooks.index_policy_by_model(namespace=NAMESPACE, spec=kopf.Spec(_body(md)))
            ],
            webhooks.NAMESPACE_LABELS: [
                webhooks.index_namespace(
                    name=NAMESPACE, labels={"kubernetes.io/metadata.name": NAMESPACE}
                )
            ],
            webhooks.MODELS_BY_NAMESPACE: [
                webhooks.index_model_pods(namespace=NAMESPACE, name="sentiment", body=_body(md))
            ],
            webhooks.MODEL_PODS: [
                webhooks.index_model_pod(
                    namespace=NAMESPACE, name="sentiment-7d9c6b5f4-x2x7q", pod_labels=pod_labels
                )
            ],
            webhooks.MODEL_POD_LABELS: [
                webhooks.index_model_pod_labels(namespace=NAMESPACE, pod_labels=pod_labels)
            ],
        }
        indices: dict[str, dict[typing.Any, list[typing.Any]]] = {}
        for name, entries in indexed.items():
            merged: dict[typing.Any, list[typing.Any]] = {}
            for entry in entries:
                for key, value in entry.items():
                    merged.setdefault(key, []).append(value)
            indices[name] = merged
        return indices

    async def answer(self, data: bytes) -> dict[str, typing.Any] | None:
        """The AdmissionReview response to `data`, None when it was refused as no review."""
        reader = streams.StreamReader(
            typing.cast(typing.Any, _Protocol()), limit=2**16, loop=self.loop
        )
        reader.feed_data(data)
        reader.feed_eof()
        request = test_utils.make_mocked_request(
            "POST",
            "/",
            headers={"Content-Type": "application/json"},
            payload=reader,
            loop=self.loop,
        )
        try:
            response = await self.server_class._serve(self.fn, request)
        except aiohttp.web.HTTPClientError as refused:
            if not refused.reason:
                raise Crash(f"refused with HTTP {refused.status} and no reason") from None
            return None
        answer: dict[str, typing.Any] = json.loads(typing.cast(bytes, response.body))["response"]
        status = answer.get("status") or {}
        if not answer["allowed"] and status.get("code") != 403:
            raise Crash(f"answered {status!r}: a handler failed instead of denying")
        return answer


class _Protocol:
    """What aiohttp's StreamReader asks of its protocol."""

    _reading_paused = False

    def pause_reading(self, **_: object) -> None:
        pass

    def resume_reading(self, **_: object) -> None:
        pass


def _body(raw: dict[str, typing.Any]) -> kopf.Body:
    return kopf.Body(typing.cast(typing.Any, raw))


@functools.cache
def _admission() -> _Admission:
    return _Admission()


def admission_answer(data: bytes) -> dict[str, typing.Any] | None:
    server = _admission()
    return server.loop.run_until_complete(server.answer(data))


def admission(data: bytes) -> None:
    admission_answer(data)


# --- signatures --------------------------------------------------------------------------------


@functools.cache
def _rules() -> policy.Rules:
    return policy.rules_of(_policy())


def bundle(data: bytes) -> None:
    try:
        verify.verify_signatures(data, _rules(), source_uri=SOURCE_URI, namespace=NAMESPACE, at=AT)
    except reasons.VerificationError:
        return


@functools.cache
def _reference() -> statement.Statement:
    """A real statement, for comparing a parsed one with."""
    seed = HERE / "corpus" / "statement" / "seed-key-files"
    return statement.parse(seed.read_bytes())


def statement_(data: bytes) -> None:
    try:
        parsed = statement.parse(data)
    except reasons.VerificationError:
        return
    parsed.file_sizes()
    parsed.single_file()
    parsed.serialization.excluded()
    parsed.same_manifest(_reference())
    verify.compare(_reference().resources, parsed.resources)
    verify.compare(parsed.resources, _reference().resources)
    policy.check_hash_algorithm(parsed, allowed=_rules().hash_algorithms)


# --- approvals ---------------------------------------------------------------------------------


def approval_(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return  # the API server hands the webhook and the operator JSON only
    for operation in ("CREATE", "UPDATE"):
        request = {
            "operation": operation,
            "namespace": NAMESPACE,
            "name": "approval",
            "userInfo": {"username": "alice"},
            "kind": {"kind": modelapproval.KIND},
            "object": body,
            "oldObject": body if operation == "UPDATE" else None,
        }
        decisions.model_approval(request, policies={POLICY_NAME: _policy()}, now=AT)
    try:
        parsed = modelapproval.parse(body)
    except errors.InvalidObjectError:
        return
    spec = parsed.spec
    for root_digest in (spec.root_digest, None):
        approval.evaluate_approvals(
            [parsed],
            policy=_policy(),
            namespace=NAMESPACE,
            model=spec.model,
            version=spec.version,
            root_digest=root_digest,
            now=AT,
        )


# --- the audit log verifier --------------------------------------------------------------------


SCRATCH: pathlib.Path | None = None
"""Where the audit target writes the two files of each input (the command reads paths); None: a
temporary directory removed at exit. fuzz/run.py sets it: libFuzzer ends the process without
Python's exit handlers."""


@functools.cache
def _scratch() -> pathlib.Path:
    if SCRATCH is not None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        return SCRATCH
    directory = tempfile.TemporaryDirectory(prefix="modelguard-fuzz-")
    atexit.register(directory.cleanup)
    return pathlib.Path(directory.name)


def audit(data: bytes) -> None:
    log, separator, notes = data.partition(AUDIT_SEPARATOR)
    scratch = _scratch()
    (scratch / "audit.log").write_bytes(log)
    (scratch / "checkpoints").write_bytes(notes)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = auditlog.verify(
            file=str(scratch / "audit.log"),
            public_keys=[_fixtures()["auditVerifier"]],
            sources=[str(scratch / "checkpoints")] if separator else [],
            no_checkpoints=not separator,
            since=None,
        )
    if code not in (0, 1):
        raise Crash(f"exit code {code}")


TARGETS: typing.Final[dict[str, typing.Callable[[bytes], None]]] = {
    "admission": admission,
    "bundle": bundle,
    "statement": statement_,
    "approval": approval_,
    "audit": audit,
}
