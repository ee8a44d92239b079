"""Kubernetes resource quantities: parsing "500m" or "1Gi" into numbers the API can compare."""

import decimal
import re

# Kubernetes' own grammar for a non-negative quantity (resource.Quantity, sign removed because
# requests and limits cannot be negative). Shared with the CRD schema so both refuse the same text.
PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_NUMBER = re.compile(r"^(?P<number>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(?P<suffix>.*)$")

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse(quantity: str) -> decimal.Decimal:
    """The value of a quantity in base units (cores, bytes); ValueError if it is not one."""
    match = _NUMBER.match(quantity) if re.match(PATTERN, quantity) else None
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number = decimal.Decimal(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY:
        return number * (decimal.Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))
