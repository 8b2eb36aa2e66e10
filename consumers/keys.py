"""Gateway keys and operator tokens: their form, their keyed hash, and the check of a presented one.

A key reads `gwk_1a2b3c4d_<40 random characters>`: its first 13 characters (`gwk_1a2b3c4d`) are the
prefix, which identifies it in lists and logs; the whole key is shown once, when it is made, and
stored only as HMAC-SHA256(pepper, key). The pepper is GATEWAY_KEY_PEPPER (or derived from
SECRET_KEY): a stolen database alone cannot be used to check guesses. Operator tokens are the same
with `gwo_`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta
from functools import lru_cache

from django.conf import settings

CONSUMER_KEY = "gwk"
OPERATOR_TOKEN = "gwo"
PREFIX_LENGTH = 12  # "gwk_" and 8 hex digits
_SHAPE = re.compile(r"^(gw[ko]_[0-9a-f]{8})_[A-Za-z0-9_\-]{40}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def new_key(kind: str = CONSUMER_KEY) -> tuple[str, str]:
    """(the key, its prefix)."""
    prefix = f"{kind}_{secrets.token_hex(4)}"
    return f"{prefix}_{secrets.token_urlsafe(30)}", prefix


@lru_cache(maxsize=4)
def _pepper(configured: str, secret_key: str) -> bytes:
    if configured:
        return configured.encode()
    return hmac.new(secret_key.encode(), b"gateway-key-pepper", hashlib.sha256).digest()


def digest(key: str) -> str:
    """The stored form of a key: its HMAC-SHA256 with the server's pepper, in hex."""
    pepper = _pepper(settings.GATEWAY_KEY_PEPPER, settings.SECRET_KEY)
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def prefix_of(presented: str) -> str | None:
    """The prefix of something shaped like a key or token, else None (no hash is computed for it)."""
    match = _SHAPE.match(presented)
    return match.group(1) if match else None


def matches(presented: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(presented), stored_digest)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s` → a timedelta (ValueError otherwise)."""
    match = _DURATION.match(text or "")
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, e.g. 30d, 12h, 90m, 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
