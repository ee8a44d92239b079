"""Which network addresses a source may be read from: public (global) ones only, unless the
TrustPolicy's source names that very address or admits private ones.

Refused always, whatever a source admits: loopback, link-local, unspecified ("this network"),
multicast and broadcast addresses, cloud metadata services (by address and by name) and local-use
NAT64, including IPv4 addresses carried in IPv6 (mapped, compatible, NAT64, 6to4). Refused unless
the source says `allowPrivateAddresses: true`: every other address that is not global (RFC 1918,
shared 100.64/10, IPv6 unique-local and site-local, documentation and reserved ranges), which is
where the node, the cluster's Services and the kube-apiserver live.

A host name is resolved by `GuardedResolver`, which aiohttp's connector connects through: the
addresses checked are the ones connected to, so a name that resolves elsewhere the second time
(DNS rebinding) gains nothing. A source whose host is an IP address literal names it explicitly
(the TrustPolicy wrote it): it is connected to as written, loopback included. `transport` checks
the peer of a response once more while its connection is held (a small body may have released it
already).
"""

from __future__ import annotations

import ipaddress
import socket
import typing

import aiohttp
from aiohttp import abc

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA: typing.Final = (
    # AWS, GCP and Azure IMDS; AWS IMDS over IPv6 and the EKS Pod Identity agent; Azure
    # WireServer (public-looking, answers only from inside Azure); Alibaba Cloud; Oracle Cloud's
    # second address.
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("fd00:ec2::23/128"),
    ipaddress.ip_network("168.63.129.16/32"),
    ipaddress.ip_network("100.100.100.200/32"),
    ipaddress.ip_network("192.0.0.192/32"),
)
# Names of metadata services: refused by name too, whatever they resolve to here.
METADATA_NAMES: typing.Final = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"}
)
# IPv6 forms that carry an IPv4 address: the well-known NAT64 prefix embeds it in the last 32
# bits; the local-use one (RFC 8215) may translate to any IPv4 address by local rules, so it is
# refused outright.
_NAT64: typing.Final = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64: typing.Final = ipaddress.ip_network("64:ff9b:1::/48")
# IPv4-compatible addresses (::a.b.c.d, deprecated): some stacks still route them as IPv4.
_COMPATIBLE: typing.Final = ipaddress.ip_network("::/96")
# "This network": Linux connects 0.0.0.0 to the node itself.
_THIS_NETWORK: typing.Final = ipaddress.ip_network("0.0.0.0/8")
OPT_IN: typing.Final = "allowPrivateAddresses: true on the TrustPolicy source"


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


def refusal(address: IPAddress, *, private_addresses: bool = False) -> str | None:
    """Why `address` may not be connected to unless a source names it, or None.

    `private_addresses`: the source admits non-global addresses other than those always
    refused (loopback, link-local, metadata and the like)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return refusal(embedded, private_addresses=private_addresses)
    if address in _LOCAL_NAT64:
        return "a local-use NAT64 address (it may translate to any IPv4 address)"
    if any(address in network for network in _METADATA):
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "the unspecified address or 'this network' (0.0.0.0/8)"
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a multicast or broadcast address"
    # Site-local (fec0::/10) is deprecated, so Python calls it global; it is anything but.
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if (site_local or not address.is_global) and not private_addresses:
        return (
            "a private or otherwise non-global address (the node's, a cluster Service's, a "
            f"private network's); a source reaches such names only with {OPT_IN}"
        )
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), or None."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_peer(host: str, peer: str, *, private_addresses: bool = False) -> None:
    """RefusedAddress unless the connected `peer` may serve a source whose URL names `host`."""
    address = literal(peer)
    if address is None:
        return
    named = literal(host)
    if named is not None and _same(named, address):
        return
    why = refusal(address, private_addresses=private_addresses)
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
    service's is not one to trust with either. `inner` answers the lookups (the system's
    resolver by default)."""

    def __init__(
        self, *, private_addresses: bool = False, inner: abc.AbstractResolver | None = None
    ) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()
        self._private_addresses = private_addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[abc.ResolveResult]:
        check_name(host)
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            address = literal(entry["host"])
            why = (
                refusal(address, private_addresses=self._private_addresses)
                if address is not None
                else "not an IP address"
            )
            if why is not None:
                raise RefusedAddress(
                    f"{host} resolves to {entry['host']}, {why}; a source reaches it only when "
                    "the TrustPolicy names that address itself"
                )
        return found

    async def close(self) -> None:
        await self._inner.close()
