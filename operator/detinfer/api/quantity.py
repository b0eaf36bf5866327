"""Kubernetes resource quantities ("64Gi", "500m", "1e9"): the CRD's pattern and the models' check.

The grammar is resource.Quantity's (k8s.io/apimachinery/pkg/api/resource/quantity.go): a sign,
digits with an optional fraction, and one suffix: binary SI (Ki Mi Gi Ti Pi Ei), decimal SI
(n u m "" k M G T P E) or a decimal exponent (e or E and a signed integer, as the parser reads it).
The fields that hold quantities become a pod's cpu and memory and an emptyDir's sizeLimit, and
the API server refuses those when negative (pkg/apis/core/validation), so the CRD's pattern has
no minus sign. Kubernetes parses a quantity of any size but counts pod resources in int64 (cpu in
millicores, memory in bytes), so larger values are refused here; the API server's pattern cannot
measure them.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_SUFFIX = r"([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
# Non-negative quantities: what the CRD lets through.
QUANTITY_PATTERN = rf"^\+?{_NUMBER}{_SUFFIX}$"
_SIGNED = re.compile(rf"([+-]?){_NUMBER}{_SUFFIX}")

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
INT64_MAX = 2**63 - 1
# The digits of a quantity of at most 32 characters lie between 1e-31 and 1e32, so past these
# exponents it is certainly out of int64's range, or below a nano (which Kubernetes rounds up to
# 1n): no need to build a number of a billion digits for "1e999999999".
_EXPONENT_TOO_LARGE = 400
_EXPONENT_NEGLIGIBLE = -400

GRAMMAR = (
    "digits with an optional fraction and one optional suffix: Ki Mi Gi Ti Pi Ei, "
    "n u m k M G T P E, or e<integer>; e.g. 500m, 8, 64Gi, 1e9"
)


def parse(text: str) -> Fraction | None:
    """The value of a quantity, or None when `text` does not follow the grammar."""
    match = _SIGNED.fullmatch(text)
    if match is None:
        return None
    sign, number, _, suffix = match.groups()
    suffix = suffix or ""
    whole, _, fraction = number.partition(".")
    mantissa = Fraction(int(whole or "0") * 10 ** len(fraction) + int(fraction or "0"))
    mantissa /= 10 ** len(fraction)
    if suffix in _BINARY:
        value = mantissa * 1024 ** _BINARY[suffix]
    else:
        exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
        if mantissa and exponent > _EXPONENT_TOO_LARGE:
            value = Fraction(10) ** _EXPONENT_TOO_LARGE
        elif exponent < _EXPONENT_NEGLIGIBLE:
            value = Fraction(0) if not mantissa else Fraction(1, 10**-_EXPONENT_NEGLIGIBLE)
        else:
            value = mantissa * Fraction(10) ** exponent
    return -value if sign == "-" else value


def _checker(limit: Fraction, largest: str, counted: str):
    def check(text: str) -> str:
        value = parse(text)
        if value is None:
            raise PydanticCustomError(
                "quantity", f"Input should be a Kubernetes quantity ({GRAMMAR})"
            )
        if text.startswith("-"):  # "-0" too: the CRD's pattern has no minus sign
            raise PydanticCustomError(
                "quantity_negative",
                "Input should not be negative: Kubernetes refuses negative pod resources",
            )
        if value > limit:
            raise PydanticCustomError(
                "quantity_too_large",
                f"Input should be at most {largest}: Kubernetes counts {counted} in 64 bits",
            )
        return text

    return check


def _quantity(limit: Fraction, largest: str, counted: str) -> Any:
    return Annotated[
        str,
        Field(max_length=32, json_schema_extra={"pattern": QUANTITY_PATTERN}),
        AfterValidator(_checker(limit, largest, counted)),
    ]


# The CRD matches these with QUANTITY_PATTERN; the models check the grammar, the sign and the range.
CpuQuantity = _quantity(Fraction(INT64_MAX, 1000), f"{INT64_MAX}m", "cpu in millicores")
ByteQuantity = _quantity(Fraction(INT64_MAX), str(INT64_MAX), "bytes")
