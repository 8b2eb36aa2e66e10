"""Secrets out of upstream-derived errors, before a client or a log sees them.

An upstream may quote what we sent it: OpenAI's 401 says "Incorrect API key provided: sk-abc1****xyz9",
a misbehaving proxy echoes our request headers in its error body. Every error a provider call raises
passes through `scrub_error` (serving.invoke, the one place where a provider's errors leave it, for
answers and streams alike) with the secrets that call resolved (`BaseProvider.call_secrets`): the
error's detail and message come out with these, any piece of 12 characters or more of them (8 for
secrets shorter than 16), and the masked forms vendors print (a visible prefix or suffix around a run
of `*`) replaced by `[redacted]`. Shorter pieces are left: they would redact ordinary words that a
key shares (a test key `mistral-test-key` and the model name `mistral-nope`).
It runs only on the error path: the success path pays nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from providers.errors import GatewayError

REDACTED = "[redacted]"
_PIECE = 12  # a secret's pieces this long are redacted wherever they appear (shorter for short secrets)
_SHORTEST_PIECE = 8
_SHORTEST = 4  # shorter "secrets" (a placeholder) would redact ordinary words: left alone
_MASKED = re.compile(r"[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*")


def scrub_text(text: str, secrets: Sequence[str]) -> str:
    """`text` without any of `secrets`, their long pieces, or their masked forms."""
    secrets = [s for s in secrets if len(s) >= _SHORTEST]
    if not secrets or not text:
        return text
    if "*" in text:
        text = _MASKED.sub(lambda match: REDACTED if _masks(match.group(), secrets) else match.group(), text)
    for secret in secrets:
        length = max(_SHORTEST_PIECE, min(_PIECE, len(secret) - 4))
        if len(secret) <= length:
            text = text.replace(secret, REDACTED)
            continue
        spans: list[tuple[int, int]] = []
        for index in range(len(secret) - length + 1):
            piece = secret[index:index + length]
            found = text.find(piece)
            while found >= 0:
                spans.append((found, found + length))
                found = text.find(piece, found + 1)
        if spans:
            text = _replace_spans(text, spans)
    return text


def _masks(token: str, secrets: Sequence[str]) -> bool:
    """Whether `token` (`sk-abc1****xyz9`) shows a prefix or a suffix, 3 characters or more, of a secret."""
    parts = token.split("*")
    prefix, suffix = parts[0], parts[-1]
    for secret in secrets:
        if (len(prefix) >= 3 and secret.startswith(prefix)) or (len(suffix) >= 3 and secret.endswith(suffix)):
            return True
    return False


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    spans.sort()
    out: list[str] = []
    position = 0
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start <= end:
            end = max(end, next_end)
            continue
        out += (text[position:start], REDACTED)
        position = end
        start, end = next_start, next_end
    out += (text[position:start], REDACTED, text[end:])
    return "".join(out)


def scrub_detail(detail: Any, secrets: Sequence[str]) -> Any:
    """A detail (a string, or the JSON an upstream sent) with every string in it scrubbed; a JSON detail
    is scrubbed as text, whatever its depth."""
    if isinstance(detail, str):
        return scrub_text(detail, secrets)
    text = orjson.dumps(detail, default=str).decode()
    scrubbed = scrub_text(text, secrets)
    if scrubbed == text:
        return detail
    try:
        return orjson.loads(scrubbed)
    except orjson.JSONDecodeError:  # a secret's piece across the JSON's punctuation: keep the text
        return scrubbed


def scrub_error(error: GatewayError, secrets: Sequence[str]) -> GatewayError:
    """The same error, its detail and message scrubbed of `secrets` (in place)."""
    if not secrets:
        return error
    detail = scrub_detail(error.detail, secrets)
    if detail is not error.detail:
        error.detail = detail
        error.args = (detail if isinstance(detail, str) else repr(detail),)
    return error
