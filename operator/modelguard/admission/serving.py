"""The glue between `modelguard run` flags and kopf's TLS webhook server.

The ValidatingWebhookConfiguration ships in the chart, so kopf only serves: it is never given
`settings.admission.managed` (which would need write access to webhook configurations).
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import logging
import pathlib
import ssl
import typing

import aiohttp.web
import kopf

from modelguard.admission import certs, decisions

logger = logging.getLogger(__name__)

# The URL paths of the chart's webhooks: kopf routes `/<handler id>` to that handler.
MANAGED_CHILD_PATH: typing.Final = "managed-child"
MODEL_DEPLOYMENT_PATH: typing.Final = "model-deployment"
MANAGED_SCALE_PATH: typing.Final = "managed-scale"
TRUST_POLICY_PATH: typing.Final = "trust-policy"
MODEL_APPROVAL_PATH: typing.Final = "model-approval"
NETWORK_POLICY_PATH: typing.Final = "network-policy"
MODEL_POD_CONNECT_PATH: typing.Final = "model-pod-connect"
# How often kopf looks at the certificate files, and restarts its listener when they change:
# a renewed Secret (Helm upgrade, cert-manager) is picked up without restarting the pod.
CERT_CHECK_SECONDS: typing.Final = 30.0


@dataclasses.dataclass(frozen=True)
class Options:
    """Where and as whom the webhook is served; `port` None means no webhook at all."""

    port: int | None
    cert_dir: pathlib.Path | None
    addr: str
    identity: decisions.Identity
    client_ca: pathlib.Path | None = None
    """CA bundle of the API server's webhook client certificate: with it, a TLS client that does
    not present a certificate it signed cannot even complete the handshake."""
    client_names: tuple[str, ...] = ()
    """Subject common names (or DNS SANs) a client certificate must carry; empty: any the CA
    signed."""


def server(options: Options) -> kopf.WebhookServerProtocol:
    """kopf's TLS webhook server for `options`, or one that serves nothing when disabled."""
    if options.port is None:
        return _Disabled()
    if options.cert_dir is None:
        raise kopf.PermanentError("--webhook-port needs --webhook-cert-dir (tls.crt, tls.key)")
    if options.client_names and options.client_ca is None:
        raise kopf.PermanentError("--webhook-client-name needs --webhook-client-ca")
    served = _WebhookServer(
        addr=options.addr,
        host=options.addr,
        port=options.port,
        certfile=options.cert_dir / certs.CERT_FILE,
        pkeyfile=options.cert_dir / certs.KEY_FILE,
        file_check_interval=CERT_CHECK_SECONDS,
        verify_mode=ssl.CERT_REQUIRED if options.client_ca is not None else None,
        verify_cafile=options.client_ca,
    )
    return _Served(served, names=frozenset(options.client_names))


class _Served:
    """kopf's server, with two things done before kopf sees a request:

    - with `names`, only a client whose certificate carries one of them is answered: a CA that
      signs more than the API server's client certificate must not let its other holders ask
      (and learn from) the webhook;
    - a CONNECT request (exec, attach, port-forward) names its pod in the request alone, its
      object (PodExecOptions and the like) has no metadata: the name and namespace are copied
      there, which is where kopf's handlers read them.
    """

    def __init__(self, served: kopf.WebhookServer, *, names: frozenset[str]) -> None:
        self.served = served
        self._names = names

    async def __call__(
        self, fn: kopf.WebhookFn
    ) -> collections.abc.AsyncIterator[kopf.WebhookClientConfig]:
        async for config in self.served(self.wrap(fn)):
            yield config

    def wrap(self, fn: kopf.WebhookFn) -> kopf.WebhookFn:
        """`fn`, kopf's answer to an AdmissionReview, with the checks above done first."""

        async def checked(
            request: typing.Any,
            *,
            webhook: str | None = None,
            sslpeer: typing.Any = None,
            headers: typing.Any = None,
        ) -> typing.Any:
            if self._names and not _peer_names(sslpeer) & self._names:
                # Answered by aiohttp as it is: a bare 403, nothing of the request evaluated.
                raise aiohttp.web.HTTPForbidden(reason="not an allowed admission client")
            problem = review_problem(request)
            if problem is not None:
                # kopf would read it regardless, and fail with a traceback on the first field
                # that is not what it expects: answered 400 with what is wrong instead.
                raise aiohttp.web.HTTPBadRequest(reason=f"not an AdmissionReview: {problem}")
            name_connect_target(request)
            return await fn(request, webhook=webhook, sslpeer=sslpeer, headers=headers)

        return checked


class _WebhookServer(kopf.WebhookServer):
    """kopf's server, with the request body checked to be UTF-8 JSON before kopf reads it: kopf
    catches JSON errors but not a body that does not decode, which aiohttp then answers with a 500
    and an error logged with its traceback. aiohttp bounds the body (1 MiB) before either."""

    @staticmethod
    async def _serve(fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            raise aiohttp.web.HTTPUnsupportedMediaType(
                reason="the request's charset is not UTF-8: an AdmissionReview is UTF-8 JSON"
            )
        try:
            # Read once: aiohttp keeps the body, which kopf's reading then takes as it is.
            (await request.read()).decode("utf-8")
        except UnicodeDecodeError as error:
            raise aiohttp.web.HTTPBadRequest(
                reason=f"the request body is not UTF-8 (byte {error.start}): an AdmissionReview "
                "is UTF-8 JSON"
            ) from None
        return await kopf.WebhookServer._serve(fn, request)


# What kopf reads of an AdmissionReview's request before any handler runs, with the types it
# expects (admission.k8s.io/v1 AdmissionRequest); each may be absent or null unless required.
_REQUEST_STRINGS: typing.Final = ("uid", "operation", "name", "namespace", "subResource")
_RESOURCE_FIELDS: typing.Final = ("group", "version", "resource")


def review_problem(review: object) -> str | None:
    """What makes `review` (a request's decoded JSON) unreadable as an AdmissionReview by kopf
    and the handlers, or None. The API server never sends such a review; anyone else who reaches
    the webhook's port may."""
    if not isinstance(review, dict):
        return f"the body is a JSON {_json_type(review)}, not an object"
    request = review.get("request")
    if not isinstance(request, dict):
        return "request is missing or not an object"
    for field in _REQUEST_STRINGS:
        if request.get(field) is not None and not isinstance(request[field], str):
            return f"request.{field} is not a string"
    resource = request.get("resource")
    if not isinstance(resource, dict) or not all(
        isinstance(resource.get(field), str) for field in _RESOURCE_FIELDS
    ):
        return "request.resource is missing or not {group, version, resource} strings"
    if not isinstance(request.get("userInfo"), dict):
        return "request.userInfo is missing or not an object"
    for field in ("object", "oldObject"):
        problem = _object_problem(request.get(field))
        if problem is not None:
            return f"request.{field}{problem}"
    if request.get("object") is None and request.get("oldObject") is None:
        return "request.object and request.oldObject are both missing"
    return None


def _object_problem(value: object) -> str | None:
    """What kopf cannot read in an object of a review (absent is fine), after its field name."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return " is not an object"
    metadata = value.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return ".metadata is not an object"
    for key in ("uid", "name", "namespace"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            return f".metadata.{key} is not a string"
    return None


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def name_connect_target(review: typing.Any) -> None:
    """Copies a CONNECT request's pod name and namespace into its object's metadata."""
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict) or request.get("operation") != "CONNECT":
        return
    target = request.get("object")
    if not isinstance(target, dict):
        return
    metadata = target.get("metadata")
    target["metadata"] = {
        **(metadata if isinstance(metadata, dict) else {}),
        "name": request.get("name"),
        "namespace": request.get("namespace"),
    }


def _peer_names(peer: typing.Any) -> set[str]:
    """Common names and DNS SANs of a peer certificate as ssl's getpeercert() gives it."""
    names: set[str] = set()
    if not isinstance(peer, dict):
        return names
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peer.get("subjectAltName") or ():
        if kind == "DNS":
            names.add(str(value))
    return names


def enforce(decision: decisions.Decision, *, warnings: list[str] | None = None) -> None:
    """Turns a denial into the exception kopf answers the API server with; an allowed request's
    warnings go into kopf's `warnings` list, which kopf returns to the client."""
    if warnings is not None:
        warnings.extend(decision.warnings)
    if not decision.allowed:
        raise kopf.AdmissionError(decision.message, code=403)


class _Disabled:
    """Keeps kopf running without a listener: the handlers are registered at import time, and
    kopf refuses to start with handlers but no server."""

    async def __call__(
        self, fn: kopf.WebhookFn
    ) -> collections.abc.AsyncIterator[kopf.WebhookClientConfig]:
        logger.info("admission webhooks disabled (no --webhook-port)")
        await asyncio.Event().wait()
        yield kopf.WebhookClientConfig()  # pragma: no cover - never reached


class DenialLogFilter(logging.Filter):
    """Logs a denial as what it is: kopf reports every AdmissionError as an ERROR that a handler
    "failed permanently", which reads like a fault of the operator and pages people for a policy
    working as intended. The denial stays in the log, at INFO, saying which webhook denied what."""

    _FAILED: typing.Final = " failed permanently: "
    _WEBHOOK_IDS: typing.Final = frozenset(
        {
            MANAGED_CHILD_PATH,
            MODEL_DEPLOYMENT_PATH,
            MANAGED_SCALE_PATH,
            TRUST_POLICY_PATH,
            MODEL_APPROVAL_PATH,
            NETWORK_POLICY_PATH,
            MODEL_POD_CONNECT_PATH,
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not isinstance(record.msg, str):
            return True
        handler, separator, message = record.msg.partition(self._FAILED)
        if not separator or handler.removeprefix("Webhook ").strip("'") not in self._WEBHOOK_IDS:
            return True
        record.msg = f"admission denied by webhook {handler.removeprefix('Webhook ')}: {message}"
        record.args = None
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        # Lowered past the level check its logger made for ERROR: make it again for INFO.
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)
