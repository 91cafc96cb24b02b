"""Kubernetes resource quantities ("500m", "1Gi", "2e3") as numbers.

Exists because the VineWorkflow spec mixes units: worker sizes are plain MiB (TaskVine's
units), while sizes that Kubernetes enforces (PVCs, the node cache limit, manager
resources) are quantities. The operator validates quantities with the same grammar as
the API server and converts the few it must pass to the engine (the node cache limit)
into MiB. Pure: no I/O.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: The API server's quantity grammar (also the CRD's `pattern` for int-or-string maps).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: A non-negative storage size without exponent or milli suffix ("50Gi", "1.5G", "1024").
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SIZE_RE = re.compile(SIZE_PATTERN)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_NUMBER_SUFFIX = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")


def is_quantity(value: str | int) -> bool:
    """True when `value` is a quantity the API server accepts."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return bool(_QUANTITY_RE.match(value))


def is_size(value: str) -> bool:
    """True when `value` is a non-negative size such as "50Gi"."""
    return bool(_SIZE_RE.match(value))


def parse_quantity(value: str | int) -> Decimal:
    """The quantity's value in base units (bytes, cores): "1Ki" → 1024, "500m" → 0.5."""
    if isinstance(value, bool) or not is_quantity(value):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    match = _NUMBER_SUFFIX.match(value)
    if match is None:  # pragma: no cover - excluded by the pattern above
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - excluded by the pattern above
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from e
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    return amount * Decimal(10) ** int(suffix[1:])  # e/E exponent


def to_mib(value: str | int) -> int:
    """A byte quantity in whole MiB, rounded down ("50Gi" → 51200)."""
    return int(parse_quantity(value) // 2**20)
