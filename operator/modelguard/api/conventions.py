"""Conventions every ModelGuard kind shares: the API group, name and CIDR field types, and the
base models that map Kubernetes' camelCase wire names to Python names.

Apart from v1alpha1 (the ModelDeployment API) so that a kind, or a command, that needs only these
does not build ModelDeployment's models: `modelguard verify` reads a TrustPolicy and nothing else.
"""

import ipaddress
import typing

import pydantic
from pydantic import alias_generators

from modelguard.api import errors

GROUP: typing.Final = "modelguard.dev"
VERSION: typing.Final = "v1alpha1"
API_VERSION: typing.Final = f"{GROUP}/{VERSION}"
DEFAULT_TRUST_POLICY: typing.Final = "default"
"""The TrustPolicy a ModelDeployment answers to when it names none."""

DNS_LABEL_PATTERN: typing.Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# OMS: the root digest is always SHA-256 over the resources' digests, whatever their hash type.
ROOT_DIGEST_PATTERN: typing.Final = r"^sha256:[a-f0-9]{64}$"

RootDigest = typing.Annotated[
    str,
    pydantic.Field(pattern=ROOT_DIGEST_PATTERN),
    errors.Hint("must be sha256:<64 lowercase hex digits>, the model's signed root digest"),
]

DNSLabel = typing.Annotated[
    str,
    pydantic.Field(pattern=DNS_LABEL_PATTERN, max_length=63),
    errors.Hint("must be a DNS-1123 label: at most 63 lowercase letters, digits and '-'"),
]


def _is_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32") from None
    return value


CIDR = typing.Annotated[
    str,
    pydantic.AfterValidator(_is_cidr),
    pydantic.Field(json_schema_extra={"format": "cidr"}),
]


class Wire(pydantic.BaseModel):
    """Kubernetes field names (camelCase) on the wire, Python names in code, docstrings explain."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        defer_build=True,
    )


class Spec(Wire):
    """What users write: an unknown field is a mistake to report, not something to ignore."""

    model_config = pydantic.ConfigDict(extra="forbid")


class Status(Wire):
    """What the operator writes: read leniently, so an older operator can read a newer status.

    A status quotes outside text (a signature's key hint, an S3 error, an agent's message); a lone
    surrogate in it, which UTF-8 cannot carry and pydantic refuses, becomes the text of its escape
    rather than failing the whole status.
    """

    model_config = pydantic.ConfigDict(extra="ignore")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: typing.Any) -> typing.Any:
        return encodable(data)


def encodable(value: typing.Any) -> typing.Any:
    """`value` with every string valid UTF-8: a lone surrogate becomes the text of its escape
    (`\\udc80`); dicts and lists are walked, anything else is returned as it is."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(item) for item in value]
    return value
