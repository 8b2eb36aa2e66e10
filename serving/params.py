"""An endpoint's `params:`: request fields it fills in, caps and refuses, before the provider sees them."""

from __future__ import annotations

from typing import Any

from providers.errors import InvalidParameter


def apply(payload: dict[str, Any], params: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """The payload with the endpoint's defaults filled in and its maxima applied (clamped, or refused with a
    400 naming the field when `on_max: reject`); a denied field present is refused with a 400 naming it."""
    for name in params.get("deny", ()):
        if payload.get(name) is not None:
            raise InvalidParameter(f"The field '{name}' is not allowed on endpoint '{endpoint}'.", status=400,
                                   param=name)
    out = dict(payload)
    for name, value in params.get("defaults", {}).items():
        if out.get(name) is None:
            out[name] = value
    reject = params.get("on_max") == "reject"
    for name, limit in params.get("max", {}).items():
        value = out.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            if reject:
                raise InvalidParameter(f"'{name}' is {value}, more than {limit}, the most endpoint '{endpoint}' "
                                       "allows.", status=400, param=name)
            out[name] = limit
    return out
