"""Which network addresses a source may be read from: never the node itself, link-local or cloud
metadata services, unless the source names that very address.

A host name is resolved by `GuardedResolver`, which aiohttp's connector connects through: the
addresses checked are the ones connected to, so a name that resolves elsewhere the second time
(DNS rebinding) gains nothing. A source whose host is an IP address literal names it explicitly
(the TrustPolicy wrote it): it is connected to as written. `transport` checks the peer of a
response once more while its connection is held (a small body may have released it already).
"""

from __future__ import annotations

import ipaddress
import socket
import typing

import aiohttp
from aiohttp import abc

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA: typing.Final = (
    # AWS IMDS over IPv6, Alibaba Cloud, Oracle Cloud's second address.
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),
    ipaddress.ip_network("192.0.0.192/32"),
)
_METADATA_IP: typing.Final = ipaddress.ip_address("169.254.169.254")
# Names of metadata services: refused by name too, whatever they resolve to here.
METADATA_NAMES: typing.Final = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"}
)
# IPv6 forms that carry an IPv4 address (NAT64, 6to4 would be routed, the rest are legacy).
_NAT64: typing.Final = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddress(OSError):
    """A host resolved to an address sources may not use; aiohttp passes it on as the cause of
    its DNS error, transport turns it into errors.AddressRefused."""


def literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal names (brackets and zone allowed)."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not be connected to unless a source names it, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    if address == _METADATA_IP or any(address in network for network in _METADATA):
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a multicast or broadcast address"
    return None


def check_peer(host: str, peer: str) -> None:
    """RefusedAddress unless the connected `peer` may serve a source whose URL names `host`."""
    address = literal(peer)
    if address is None:
        return
    named = literal(host)
    if named is not None and _same(named, address):
        return
    why = refusal(address)
    if why is not None:
        raise RefusedAddress(f"{host} connected to {address}, {why}")


def check_name(host: str) -> None:
    """RefusedAddress for a host name of a cloud metadata service."""
    if host.rstrip(".").lower() in METADATA_NAMES:
        raise RefusedAddress(f"{host} is the name of a cloud metadata service")


def _same(a: IPAddress, b: IPAddress) -> bool:
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if isinstance(b, ipaddress.IPv6Address) and b.ipv4_mapped is not None:
        b = b.ipv4_mapped
    return a == b


class GuardedResolver(abc.AbstractResolver):
    """aiohttp's resolver, refusing a name any of whose addresses `refusal` refuses.

    All or nothing rather than filtering: a name that mixes a public address with the metadata
    service's is not one to trust with either."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[abc.ResolveResult]:
        check_name(host)
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            address = literal(entry["host"])
            why = refusal(address) if address is not None else "not an IP address"
            if why is not None:
                raise RefusedAddress(
                    f"{host} resolves to {entry['host']}, {why}; a source reaches it only when "
                    "the TrustPolicy names that address itself"
                )
        return found

    async def close(self) -> None:
        await self._inner.close()
