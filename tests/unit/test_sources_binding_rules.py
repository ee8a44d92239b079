"""Where bytes may come from: a TrustPolicy source binds its endpoint (S3 server, https origin,
claim namespace), addresses that reach the node or the cloud's metadata are refused unless named,
and what a server says is quoted and bounded."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket

import aiohttp
import aiohttp.abc
import pytest
from test_sources_credentials import KEYS

from modelguard.api import errors as api_errors
from modelguard.api import trustpolicy, uripaths, v1alpha1
from modelguard.builders import deployment
from modelguard.sources import addresses, base, credentials, errors, locations
from modelguard.trust import policy
from modelguard.trust.reasons import Reason

MINIO = "http://minio.storage.svc:9000"
SOURCES = (
    policy.SourceRule(uri="s3://models/team-a/", endpoint=MINIO),
    policy.SourceRule(uri="s3://public-models/"),
    policy.SourceRule(uri="https://models.example/hub/"),
    policy.SourceRule(uri="pvc://model-store/", namespace="ml-store"),
    policy.SourceRule(uri="pvc://scratch/", any_namespace=True),
)


@dataclasses.dataclass(frozen=True)
class BindCase:
    uri: str
    namespace: str = "team-a"
    requested: str | None = None
    # The index of the entry read under, or the reason of the refusal.
    expected: int | Reason = 0


BIND_CASES = {
    "s3 under the prefix, the endpoint the policy names": BindCase(
        "s3://models/team-a/bert/", requested=MINIO
    ),
    "s3 without a Secret endpoint: the policy's": BindCase("s3://models/team-a/bert/"),
    "s3 Secret names another server": BindCase(
        "s3://models/team-a/bert/",
        requested="http://evil.example:9000",
        expected=Reason.ENDPOINT_NOT_ALLOWED,
    ),
    "s3 without endpoint is AWS only: a Secret endpoint is refused": BindCase(
        "s3://public-models/x/", requested=MINIO, expected=Reason.ENDPOINT_NOT_ALLOWED
    ),
    "s3 without endpoint and none requested": BindCase("s3://public-models/x/", expected=1),
    "s3 climbing out of the prefix": BindCase(
        "s3://models/team-a/../team-b/", expected=Reason.SOURCE_NOT_ALLOWED
    ),
    "s3 a longer segment": BindCase("s3://models/team-ab/", expected=Reason.SOURCE_NOT_ALLOWED),
    "https same origin, host case and default port": BindCase(
        "https://Models.Example:443/hub/bert/", expected=2
    ),
    "https another port is another origin": BindCase(
        "https://models.example:8443/hub/bert/", expected=Reason.SOURCE_NOT_ALLOWED
    ),
    "https user information is not the host": BindCase(
        "https://models.example@evil.example/hub/", expected=Reason.SOURCE_NOT_ALLOWED
    ),
    "https encoded climb": BindCase(
        "https://models.example/hub/%2e%2e/admin/", expected=Reason.SOURCE_NOT_ALLOWED
    ),
    "pvc in the claim's namespace": BindCase(
        "pvc://model-store/m", namespace="ml-store", expected=3
    ),
    "pvc of the same name in another namespace": BindCase(
        "pvc://model-store/m", namespace="team-a", expected=Reason.SOURCE_NOT_ALLOWED
    ),
    "pvc admitted in any namespace": BindCase("pvc://scratch/m", namespace="team-b", expected=4),
}


@pytest.mark.parametrize("case", BIND_CASES.values(), ids=BIND_CASES.keys())
def test_a_uri_is_read_only_under_a_source_that_binds_it(case: BindCase) -> None:
    found = policy.bind(
        case.uri, sources=SOURCES, namespace=case.namespace, requested_endpoint=case.requested
    )
    if isinstance(case.expected, Reason):
        assert isinstance(found, policy.reasons.Violation), found
        assert found.reason is case.expected
    else:
        assert isinstance(found, policy.Binding), found
        assert found.index == case.expected


def test_a_refused_endpoint_names_the_key_and_the_policy_field() -> None:
    found = policy.bind(
        "s3://public-models/x/",
        sources=SOURCES,
        namespace="team-a",
        requested_endpoint="http://127.0.0.1:9000",
        requested_by='Secret "creds" key AWS_ENDPOINT_URL',
    )
    assert isinstance(found, policy.reasons.Violation)
    assert found.message.startswith('Secret "creds" key AWS_ENDPOINT_URL names the S3 endpoint')
    assert "spec.sources[1].endpoint is AWS S3" in found.message


def test_a_claim_elsewhere_names_the_namespace_the_policy_admits() -> None:
    found = policy.check_source("pvc://model-store/m", sources=SOURCES, namespace="team-a")
    assert found is not None
    assert "namespace team-a" in found.message
    assert "spec.sources[3] (pvc://model-store/) in namespace ml-store" in found.message


def test_audit_mode_does_not_admit_an_unlisted_source() -> None:
    violation = policy.reasons.Violation(Reason.SOURCE_NOT_ALLOWED, "elsewhere")
    with pytest.raises(policy.reasons.VerificationError):
        policy.enforce([violation], audit=True)


# --- path segments that servers read otherwise ---------------------------------------------------

# Each is below a listed prefix by its segments, yet names another folder to some server: Tomcat
# and Jetty drop ";params" ("..;" is ".."), proxies decode %2e, %2f and %5c, some decode twice.
CLIMBING_URIS = {
    "dot-dot-semicolon": "https://models.example/hub/..;/admin/m/",
    "encoded-dot-dot-semicolon": "https://models.example/hub/%2e%2e;/admin/m/",
    "dot-semicolon": "https://models.example/hub/.;/m/",
    "path-parameter": "https://models.example/hub/m;jsessionid=1/",
    "encoded-slashes": "https://models.example/hub/x%2f..%2f..%2fadmin/",
    "double-encoded-dot-dot": "https://models.example/hub/%252e%252e/admin/",
    "encoded-backslash": "https://models.example/hub/x%5c..%5cadmin/",
    "backslash": "https://models.example/hub/x\\..\\admin/",
    "only-dots": "https://models.example/hub/.../m/",
    "empty-segment": "https://models.example/hub//m/",
    "s3-dot-dot-semicolon": "s3://models/team-a/..;/team-b/",
    "s3-only-dots": "s3://models/team-a/..../",
    "pvc-dot-dot-semicolon": "pvc://scratch/m/..;/other",
}
PLAIN_URIS = {
    "https-folder": "https://models.example/hub/bert-v1.2/",
    "https-hidden-folder": "https://models.example/hub/.cache/m/",
    "https-encoded-space": "https://models.example/hub/a%20b/",
    "s3-dots-inside": "s3://models/team-a/v1..2/",
    "pvc-folder": "pvc://scratch/m/x",
}


@pytest.mark.parametrize("uri", CLIMBING_URIS.values(), ids=CLIMBING_URIS.keys())
def test_a_path_servers_read_otherwise_binds_to_no_source(uri: str) -> None:
    found = policy.bind(uri, sources=SOURCES, namespace="team-a", requested_endpoint=MINIO)
    assert isinstance(found, policy.reasons.Violation), found
    assert found.reason is Reason.SOURCE_NOT_ALLOWED
    assert "path" in found.message
    assert uripaths.ACCEPTED in found.message


@pytest.mark.parametrize("uri", CLIMBING_URIS.values(), ids=CLIMBING_URIS.keys())
def test_a_path_servers_read_otherwise_is_never_requested(uri: str) -> None:
    with pytest.raises((errors.UnsafePath, errors.InvalidSource)) as raised:
        locations.parse(uri)
    assert "path" in raised.value.message
    with pytest.raises((errors.UnsafePath, errors.InvalidSource)):
        locations.parse_file(uri + "model.sig")


@pytest.mark.parametrize("uri", CLIMBING_URIS.values(), ids=CLIMBING_URIS.keys())
def test_a_path_servers_read_otherwise_is_refused_at_apply(uri: str) -> None:
    source: dict[str, object] = {"uri": uri}
    if uri.startswith("pvc://"):
        source["anyNamespace"] = True
    with pytest.raises(api_errors.InvalidObjectError) as raised:
        trustpolicy.parse({"spec": _spec(source)})
    assert "spec.sources[0].uri" in str(raised.value)
    assert uripaths.ACCEPTED in str(raised.value)
    for field in ("source", "signature"):
        with pytest.raises(api_errors.InvalidObjectError) as refused:
            v1alpha1.parse(_model(**{field: uri}))
        assert f"spec.model.{field}.uri" in str(refused.value)
        assert uripaths.ACCEPTED in str(refused.value)


# URL parsers drop tabs and newlines anywhere (WHATWG, urllib): the host or path read is another
# than the one written.
CONTROL_URIS = {
    "tab-in-host": "https://models.example\t/hub/m/",
    "newline-in-host": "https://models.exam\nple/hub/m/",
    "nul-in-path": "https://models.example/hub/m\x00/",
    "escape-in-path": "s3://models/team-a/\x1b[31m/",
}


@pytest.mark.parametrize("uri", CONTROL_URIS.values(), ids=CONTROL_URIS.keys())
def test_a_uri_with_spaces_or_control_characters_binds_to_nothing(uri: str) -> None:
    found = policy.bind(uri, sources=SOURCES, namespace="team-a", requested_endpoint=MINIO)
    assert isinstance(found, policy.reasons.Violation), found
    assert "control character" in found.message
    with pytest.raises((errors.UnsafePath, errors.InvalidSource)):
        locations.parse(uri)
    assert re.fullmatch(trustpolicy.SOURCE_PREFIX_PATTERN, uri) is None
    assert re.fullmatch(v1alpha1.ARTIFACT_URI_PATTERN, uri) is None


@pytest.mark.parametrize(
    "uri", [*CLIMBING_URIS.values(), *PLAIN_URIS.values()], ids=[*CLIMBING_URIS, *PLAIN_URIS]
)
def test_the_schema_pattern_and_the_rule_agree(uri: str) -> None:
    # The API server applies the pattern, the operator and the agent the function: one rule.
    by_pattern = re.fullmatch(trustpolicy.SOURCE_PREFIX_PATTERN, uri) is not None
    assert by_pattern is (uripaths.problem(uri) is None)
    assert by_pattern is (re.fullmatch(v1alpha1.ARTIFACT_URI_PATTERN, uri) is not None)


@pytest.mark.parametrize("uri", PLAIN_URIS.values(), ids=PLAIN_URIS.keys())
def test_plain_paths_still_bind(uri: str) -> None:
    assert uripaths.problem(uri) is None
    locations.parse(uri)
    rules = (policy.SourceRule(uri=uri, any_namespace=uri.startswith("pvc://")),)
    assert isinstance(policy.bind(uri, sources=rules, namespace="team-a"), policy.Binding)


def _model(*, source: str = "s3://models/team-a/m/", signature: str | None = None) -> dict:
    model: dict[str, object] = {"name": "m", "version": "1", "source": {"uri": source}}
    if signature is not None:
        model["signature"] = {"uri": signature}
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team-a", "uid": "u"},
        "spec": {
            "model": model,
            "serving": {"image": "registry.example/s@sha256:" + "0" * 64, "port": 8080},
        },
    }


# --- the policy's fields ------------------------------------------------------------------------


def _spec(*sources: object) -> dict[str, object]:
    return {
        "signers": [{"name": "k", "keyless": {"issuer": "i", "identity": "x"}}],
        "sources": list(sources),
    }


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        pytest.param(
            "s3://models/",
            "spec.sources[0]: 's3://models/' is a plain prefix; a source is now an object",
            id="a-plain-string-is-no-longer-a-source",
        ),
        pytest.param({"uri": "pvc://store/"}, "namespace", id="pvc-without-namespace"),
        pytest.param(
            {"uri": "pvc://store/", "namespace": "a", "anyNamespace": True},
            "exactly one",
            id="pvc-with-both",
        ),
        pytest.param(
            {"uri": "https://h/", "endpoint": "https://x"}, "only for s3", id="endpoint-on-https"
        ),
        pytest.param({"uri": "s3://m/", "namespace": "a"}, "only for pvc", id="namespace-on-s3"),
        pytest.param(
            {"uri": "s3://m/", "endpoint": "https://u:p@minio:9000"},
            "endpoint",
            id="endpoint-with-credentials",
        ),
        pytest.param(
            {"uri": "s3://m/", "endpoint": "https://minio:9000/bucket"},
            "spec.sources[0].endpoint: must be an http(s)://host[:port] URL",
            id="endpoint-with-a-path",
        ),
        pytest.param({"uri": "https://u@h/"}, "user information", id="https-with-userinfo"),
    ],
)
def test_a_source_must_say_what_binds_it(source: object, problem: str) -> None:
    with pytest.raises(api_errors.InvalidObjectError) as raised:
        trustpolicy.parse({"spec": _spec(source)})
    assert problem in str(raised.value)


def test_endpoints_are_normalized_so_that_equal_ones_compare_equal() -> None:
    parsed = trustpolicy.parse(
        {"spec": _spec({"uri": "s3://m/", "endpoint": "https://MinIO.Storage:443/"})}
    )
    assert parsed.spec.sources[0].endpoint == "https://minio.storage"
    settings = credentials.from_secret_data(KEYS | {"AWS_ENDPOINT_URL": b"https://minio.storage"})
    assert settings.s3.endpoint == parsed.spec.sources[0].endpoint


# --- the Secret's endpoint ----------------------------------------------------------------------


def test_a_secret_endpoint_other_than_the_bound_one_is_refused() -> None:
    settings = credentials.from_secret_data(KEYS | {"AWS_ENDPOINT_URL": b"http://127.0.0.1:9"})
    with pytest.raises(errors.EndpointNotAllowed) as raised:
        credentials.bind_endpoint(settings, endpoint=MINIO, bound_by="--source-endpoint")
    assert "key AWS_ENDPOINT_URL" in raised.value.message
    assert "--source-endpoint" in raised.value.message
    with pytest.raises(errors.EndpointNotAllowed):
        credentials.bind_endpoint(settings, endpoint=None, bound_by="--source-endpoint")


def test_the_bound_endpoint_is_used_when_the_secret_names_none() -> None:
    settings = credentials.bind_endpoint(
        credentials.from_secret_data(KEYS), endpoint=MINIO, bound_by="the TrustPolicy"
    )
    assert settings.s3.endpoint == MINIO


# --- addresses ----------------------------------------------------------------------------------


NEVER = "never"  # refused even where a source admits private addresses
PRIVATE = "private"  # refused unless the source admits private addresses

ADDRESSES = {
    "loopback": ("127.0.0.1", NEVER, "loopback"),
    "loopback-range": ("127.8.9.10", NEVER, "loopback"),
    "loopback-v6": ("::1", NEVER, "loopback"),
    "aws-gcp-azure-metadata": ("169.254.169.254", NEVER, "metadata"),
    "aws-metadata-v6": ("fd00:ec2::254", NEVER, "metadata"),
    "eks-pod-identity-agent": ("fd00:ec2::23", NEVER, "metadata"),
    "azure-wireserver": ("168.63.129.16", NEVER, "metadata"),
    "alibaba-metadata": ("100.100.100.200", NEVER, "metadata"),
    "oracle-metadata": ("192.0.0.192", NEVER, "metadata"),
    "link-local": ("169.254.10.1", NEVER, "link-local"),
    "link-local-v6": ("fe80::1", NEVER, "link-local"),
    "unspecified": ("0.0.0.0", NEVER, "unspecified"),  # noqa: S104 - a test value
    "this-network": ("0.0.0.1", NEVER, "unspecified"),
    "unspecified-v6": ("::", NEVER, "unspecified"),
    "v4-mapped-loopback": ("::ffff:127.0.0.1", NEVER, "loopback"),
    "v4-mapped-metadata": ("::ffff:169.254.169.254", NEVER, "metadata"),
    "v4-compatible-loopback": ("::127.0.0.1", NEVER, "loopback"),
    "v4-compatible-metadata": ("::169.254.169.254", NEVER, "metadata"),
    "nat64-metadata": ("64:ff9b::a9fe:a9fe", NEVER, "metadata"),
    "local-nat64": ("64:ff9b:1::a9fe:a9fe", NEVER, "NAT64"),
    "6to4-loopback": ("2002:7f00:1::", NEVER, "loopback"),
    "multicast": ("224.0.0.1", NEVER, "multicast"),
    "broadcast": ("255.255.255.255", NEVER, "broadcast"),
    "cluster-service": ("10.96.0.1", PRIVATE, "private"),
    "node-network": ("192.168.1.5", PRIVATE, "private"),
    "rfc1918-172": ("172.20.0.3", PRIVATE, "private"),
    "shared-cgnat": ("100.64.0.1", PRIVATE, "private"),
    "ula": ("fd12:3456::1", PRIVATE, "private"),
    "site-local": ("fec0::1", PRIVATE, "private"),
    "documentation": ("192.0.2.1", PRIVATE, "private"),
    "v4-mapped-private": ("::ffff:10.0.0.5", PRIVATE, "private"),
    "public": ("52.216.0.1", None, ""),
    "public-v6": ("2600:1f18::1", None, ""),
}


@pytest.mark.parametrize(("address", "refused", "says"), ADDRESSES.values(), ids=ADDRESSES.keys())
def test_addresses_refused_by_default(address: str, refused: str | None, says: str) -> None:
    why = addresses.refusal(ipaddress.ip_address(address))
    assert (why is None) is (refused is None), why
    if why is not None:
        assert says in why


@pytest.mark.parametrize(("address", "refused", "says"), ADDRESSES.values(), ids=ADDRESSES.keys())
def test_admitting_private_addresses_never_admits_loopback_link_local_or_metadata(
    address: str, refused: str | None, says: str
) -> None:
    why = addresses.refusal(ipaddress.ip_address(address), private_addresses=True)
    assert (why is None) is (refused != NEVER), why
    if why is not None:
        assert says in why


def test_a_refused_private_address_names_the_opt_in() -> None:
    why = addresses.refusal(ipaddress.ip_address("10.96.0.1"))
    assert why is not None
    assert "allowPrivateAddresses" in why


def test_a_peer_is_allowed_when_the_url_names_that_address() -> None:
    addresses.check_peer("127.0.0.1", "127.0.0.1")
    addresses.check_peer("[::1]", "::1")
    addresses.check_peer("10.0.0.5", "10.0.0.5")
    addresses.check_peer("minio.example", "10.0.0.5", private_addresses=True)
    with pytest.raises(addresses.RefusedAddress, match="private"):
        addresses.check_peer("minio.example", "10.0.0.5")
    with pytest.raises(addresses.RefusedAddress):
        addresses.check_peer("minio.example", "127.0.0.1", private_addresses=True)
    with pytest.raises(addresses.RefusedAddress):
        addresses.check_peer("127.0.0.2", "169.254.169.254")


class _Answers(aiohttp.abc.AbstractResolver):
    """What a cluster's DNS would answer for a Service name: a fixed address (pure logic)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_a_service_name_on_a_private_address_needs_the_source_s_opt_in() -> None:
    refusing = addresses.GuardedResolver(inner=_Answers("10.96.12.7"))
    with pytest.raises(addresses.RefusedAddress, match="allowPrivateAddresses"):
        await refusing.resolve("minio.storage.svc", 9000)
    admitting = addresses.GuardedResolver(inner=_Answers("10.96.12.7"), private_addresses=True)
    assert (await admitting.resolve("minio.storage.svc", 9000))[0]["host"] == "10.96.12.7"
    node = addresses.GuardedResolver(inner=_Answers("169.254.169.254"), private_addresses=True)
    with pytest.raises(addresses.RefusedAddress, match="metadata"):
        await node.resolve("minio.storage.svc", 9000)


def test_private_addresses_are_a_source_s_explicit_opt_in() -> None:
    parsed = trustpolicy.parse(
        {
            "spec": _spec(
                {"uri": "s3://models/", "endpoint": MINIO, "allowPrivateAddresses": True},
                {"uri": "https://models.example/"},
            )
        }
    )
    rules = policy.source_rules(parsed.spec)
    assert [rule.allow_private_addresses for rule in rules] == [True, False]
    found = policy.bind("s3://models/m/", sources=rules, namespace="team-a")
    assert isinstance(found, policy.Binding)
    assert found.allow_private_addresses
    with pytest.raises(api_errors.InvalidObjectError, match="allowPrivateAddresses"):
        trustpolicy.parse(
            {
                "spec": _spec(
                    {"uri": "pvc://store/", "namespace": "a", "allowPrivateAddresses": True}
                )
            }
        )
    assert credentials.with_private_addresses(
        credentials.from_secret_data(KEYS), allowed=True
    ).transport.private_addresses
    assert not base.Transport().private_addresses


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = addresses.GuardedResolver()
    try:
        with pytest.raises(addresses.RefusedAddress, match="loopback"):
            await resolver.resolve("localhost", 80)
        with pytest.raises(addresses.RefusedAddress, match="metadata"):
            await resolver.resolve("metadata.google.internal.", 80)
    finally:
        await resolver.close()


# --- what a server says -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "said",
    [
        pytest.param("ok\nReady=True\r\n\x1b[31m", id="newlines-and-escapes"),
        pytest.param("x" * 100_000, id="huge"),
        pytest.param("it's", id="a-quote"),
        pytest.param("\u202eevil", id="bidi-override"),
    ],
)
def test_what_a_source_says_is_bounded_escaped_and_quoted(said: str) -> None:
    shown = errors.answered(said)
    assert shown.startswith("the source answered: '")
    assert len(shown) < 22 + 4 * errors.MAX_QUOTED + 8
    assert shown.isprintable()
    assert all(ord(c) < 128 for c in shown)
    body = shown.removeprefix("the source answered: '").removesuffix("...").removesuffix("'")
    assert "'" not in body.replace("\\'", "")


# --- the agent gets the same binding ------------------------------------------------------------


def test_the_agent_reads_from_the_endpoints_the_policy_binds() -> None:
    model = v1alpha1.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "team-a", "uid": "u"},
            "spec": {
                "model": {
                    "name": "m",
                    "version": "1",
                    "source": {"uri": "s3://models/team-a/m/", "credentialsSecret": "creds"},
                    "signature": {"uri": "s3://signatures/m.sig"},
                },
                "serving": {"image": "registry.example/s@sha256:" + "0" * 64, "port": 8080},
            },
        }
    )
    artifact = deployment.VerifiedArtifact(
        root_digest="sha256:" + "ab" * 32,
        signature_digest="sha256:" + "ef" * 32,
        agent_image="registry.example/modelguard@sha256:" + "cd" * 32,
        source_endpoint=MINIO,
        signature_endpoint="https://s3.other.example",
    )
    built = deployment.build(model, artifact=artifact)
    (agent,) = built["spec"]["template"]["spec"]["initContainers"]
    args = agent["args"]
    assert args[args.index("--source-endpoint") + 1] == MINIO
    assert args[args.index("--signature-endpoint") + 1] == "https://s3.other.example"
    assert deployment.artifact_of(built) == artifact


def test_the_agent_admits_private_addresses_only_where_the_policy_does() -> None:
    model = v1alpha1.parse(_model(source="s3://models/team-a/m/", signature="s3://sigs/m.sig"))
    pinned = {
        "root_digest": "sha256:" + "ab" * 32,
        "signature_digest": "sha256:" + "ef" * 32,
        "agent_image": "registry.example/modelguard@sha256:" + "cd" * 32,
    }
    for source, signature in ((True, False), (False, True), (False, False)):
        artifact = deployment.VerifiedArtifact(
            **pinned,
            source_endpoint=MINIO,
            source_private_addresses=source,
            signature_private_addresses=signature,
        )
        built = deployment.build(model, artifact=artifact)
        (agent,) = built["spec"]["template"]["spec"]["initContainers"]
        assert ("--source-private-addresses" in agent["args"]) is source
        assert ("--signature-private-addresses" in agent["args"]) is signature
        assert deployment.artifact_of(built) == artifact
