"""Recorded vendor payloads from fixtures/providers/<provider>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def payload(provider: str, name: str) -> Any:
    """A recorded JSON payload."""
    return json.loads((FIXTURES / "providers" / provider / name).read_text())


def raw(provider: str, name: str) -> str:
    """A recorded raw body (an SSE or NDJSON stream)."""
    return (FIXTURES / "providers" / provider / name).read_text()
