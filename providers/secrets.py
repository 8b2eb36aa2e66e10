"""Secrets: stored as references or encrypted, resolved only when a request is made.

A secret value from YAML or the admin is one of (MLflow §1.6):
- `$NAME`: an environment variable, stored as {"$env": "NAME"};
- a path to an existing file: stored as {"$file": "/abs/path"}; the file is read once, kept in
  memory and read again when it changes (KeyFiles), with its trailing newline stripped (MLflow keeps
  it, which breaks headers);
- anything else: a literal key, stored Fernet-encrypted as {"$enc": "<token>"}.
URL fields take `$NAME` references too (MLflow resolves none of them).
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# What export_config writes in place of a literal key. Loading it back keeps the stored key.
PLACEHOLDER = "<literal key stored encrypted; not exported>"


class SecretError(ValueError):
    """A secret cannot be stored or resolved. `field` names the config key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    from django.conf import settings

    keys = list(getattr(settings, "GATEWAY_ENCRYPTION_KEYS", []) or [])
    if not keys:
        digest = hashlib.sha256(("gateway-secrets:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
    except ValueError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"GATEWAY_ENCRYPTION_KEY is not a valid Fernet key: {exc}") from exc


def is_reference(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in {"$env", "$file", "$enc"}


def store_secret(value: Any, field: str, existing: Any = None) -> dict[str, str]:
    if is_reference(value):
        return _checked_reference(value, field)  # already in stored form (code, or a config moved as is)
    if not isinstance(value, str):
        raise SecretError(
            field,
            f"{field!r}: the api key provided is not a string. Please provide either an environment "
            "variable key ($NAME), a path to a file containing the api key, or the api key itself",
        )
    value = value.strip()
    if not value:
        raise SecretError(field, f"{field!r} is empty: write the key, a $ENV reference or a key file path")
    if value == PLACEHOLDER:
        if is_reference(existing) and "$enc" in existing:
            return dict(existing)
        raise SecretError(field,
                          f"{field!r} holds the export placeholder, not a key: write the key or a $ENV reference")
    if value.startswith("$"):
        name = value[1:].strip("{}")
        if not _is_env_name(name):
            raise SecretError(field, f"{field!r}: {value!r} is not a valid environment variable reference")
        return {"$env": name}
    if _is_existing_file(value):
        return {"$file": os.path.abspath(value)}
    return {"$enc": _fernet().encrypt(value.encode()).decode()}


def _is_env_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and name.replace("_", "a").isalnum()


def _checked_reference(value: Mapping[str, Any], field: str) -> dict[str, str]:
    """A secret given in stored form must be usable: a valid variable name, a path, a token we can read."""
    kind, target = next(iter(value.items()))
    if kind == "$env" and not _is_env_name(target):
        raise SecretError(field, f"{field!r}: {target!r} is not a valid environment variable name")
    if not isinstance(target, str) or not target:
        raise SecretError(field, f"{field!r}: the {kind} reference must be a non-empty string")
    if kind == "$enc":
        decrypt(target, field)  # raises SecretError when this gateway's keys cannot read it
    return {kind: target}


def store_reference_or_plain(value: str) -> Any:
    value = value.strip()
    if value.startswith("$") and len(value) > 1:
        return {"$env": value[1:].strip("{}")}
    return value


def _is_existing_file(value: str) -> bool:
    try:
        return os.path.isfile(value)
    except (OSError, ValueError):
        return False


def resolve(stored: Any, field: str) -> Any:
    """The clear value of a stored secret or URL field, read now. Raises SecretError."""
    if not isinstance(stored, Mapping):
        return stored
    if "$env" in stored:
        name = stored["$env"]
        value = os.environ.get(name)
        if not value:
            raise SecretError(field, f"Environment variable '{name}' is not set (needed by {field})")
        return value
    if "$file" in stored:
        return KEY_FILES.read(stored["$file"], field)
    if "$enc" in stored:
        return decrypt(stored["$enc"], field)
    return stored


class KeyFiles:
    """`$file` secrets, read once and then served from memory: a request never touches the file system
    (under the ASGI server it runs on the worker's event loop, where a blocking read would stall every
    other request). `refresh()` reads again the files whose size or modification time changed; each
    process calls it from its config poller (every GATEWAY_CONFIG_POLL_SECONDS) and before every
    rebuild of its endpoint table, which also reads each endpoint's files first (off the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # path -> (its (mtime_ns, size) when read, or None; the key, or the OSError's reason)
        self._entries: dict[str, tuple[tuple[int, int] | None, str, bool]] = {}

    def read(self, path: str, field: str) -> str:
        entry = self._entries.get(path)
        if entry is None:
            entry = self._load(path)
        _, value, ok = entry
        if not ok:
            raise SecretError(field, f"The key file for {field} cannot be read: {value}")
        return value

    def refresh(self) -> None:
        for path, (stamp, _, _) in list(self._entries.items()):
            if _stamp(path) != stamp:
                self._load(path)

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()

    def _load(self, path: str) -> tuple[tuple[int, int] | None, str, bool]:
        stamp = _stamp(path)
        try:
            with open(path, encoding="utf-8") as fh:
                entry = (stamp, fh.read().rstrip("\r\n"), True)
        except OSError as exc:
            entry = (stamp, str(exc.strerror or exc), False)
        with self._lock:
            self._entries[path] = entry
        return entry


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


KEY_FILES = KeyFiles()


@lru_cache(maxsize=1024)
def decrypt(token: str, field: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError(
            field, f"The stored key for {field} cannot be decrypted: was SECRET_KEY or GATEWAY_ENCRYPTION_KEY changed?"
        ) from None


def export(stored: Any, *, reveal: bool) -> Any:
    if not isinstance(stored, Mapping):
        return stored
    if "$env" in stored:
        return "$" + stored["$env"]
    if "$file" in stored:
        return stored["$file"]
    if "$enc" in stored:
        return decrypt(stored["$enc"], "secret") if reveal else PLACEHOLDER
    return stored


def describe(stored: Any) -> str:
    if not isinstance(stored, Mapping):
        return "set"
    if "$env" in stored:
        return f"from environment variable ${stored['$env']}"
    if "$file" in stored:
        return f"from file {stored['$file']}"
    return "set (encrypted)"
