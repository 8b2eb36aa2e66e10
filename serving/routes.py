"""The invocation routes, matched by path before Django's URL resolution (serving.app)."""

from __future__ import annotations

import re

from endpoints_app.models import NAME_CHARS

_INVOCATION = re.compile(
    rf"^/(?:(?:endpoints|gateway)/(?P<name>{NAME_CHARS})/invocations|v1/(?P<v1>chat/completions|completions|embeddings))$"
)


def match_invocation(path: str) -> tuple[str | None, str] | None:
    """(endpoint name, "") for an MLflow invocation path, (None, "chat/completions" | "completions" |
    "embeddings") for an OpenAI one, None for any other path."""
    match = _INVOCATION.match(path)
    if match is None:
        return None
    name: str | None = match["name"]
    return name, match["v1"] or ""
