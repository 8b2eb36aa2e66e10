"""Secrets: stored as references or encrypted, resolved only when a request is made.

A secret value from YAML or the admin is one of (MLflow §1.6):
- `$NAME`: an environment variable, stored as {"$env": "NAME"};
- a path to an existing file: stored as {"$file": "/abs/path"}; the file is read once, kept in
  memory and read again when it changes (KeyFiles), with its trailing newline stripped (MLflow keeps
  it, which breaks headers);
- anything else: a literal key, stored Fernet-encrypted as {"$enc": "<token>"}.
URL fields take `$NAME` references too (MLflow resolves none of them).

What a reference may name is restricted (README "Secret references"), when it is stored and again when
it is resolved: never one of the gateway's own settings (SECRET_KEY, DATABASE_URL, GATEWAY_*, ...), only
names matching GATEWAY_SECRET_ENV_PATTERN when it is set, and only regular files of at most 64 KiB under
GATEWAY_SECRETS_DIR (unset: under the directory of the config file being loaded; none from the admin or
the API). A URL may not point at a link-local address (cloud metadata services) unless
GATEWAY_ALLOW_LINK_LOCAL_API_BASE is set. Messages name the field and the reference, never a value.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import reprlib
import socket
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# What export_config writes in place of a literal key. Loading it back keeps the stored key.
PLACEHOLDER = "<literal key stored encrypted; not exported>"
# The largest key file read: a key is a line, a service-account JSON a few kilobytes.
SECRET_FILE_MAX_BYTES = 64 * 1024
# Besides every variable gateway_project/settings.py reads (settings.GATEWAY_SETTINGS_ENV): the gateway's own,
# OpenTelemetry's (OTEL_EXPORTER_OTLP_HEADERS carries the collector's credentials), Prometheus' and the
# proxies' (a proxy URL may carry a password).
RESERVED_ENV_PREFIXES = ("GATEWAY_", "DJANGO_", "OTEL_", "PROMETHEUS_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                         "http_proxy", "https_proxy", "all_proxy")
_SHOWN_CHARS = 80
_SYSTEM_DIRS = ("/proc/", "/sys/", "/dev/")


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
            raise SecretError(field, f"{field!r}: {shown(value)} is not a valid environment variable reference")
        check_env_reference(name, field)
        return {"$env": name}
    if _is_existing_file(value):
        if is_reference(existing) and existing.get("$file") == os.path.abspath(value):
            return dict(existing)  # kept as stored (an admin edit of an endpoint a config file loaded)
        return {"$file": check_file_reference(value, field)}
    return {"$enc": _fernet().encrypt(value.encode()).decode()}


def _is_env_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and name.replace("_", "a").isalnum()


def _checked_reference(value: Mapping[str, Any], field: str) -> dict[str, str]:
    """A secret given in stored form must be usable: a valid variable name, a path, a token we can read."""
    kind, target = next(iter(value.items()))
    if kind == "$env" and not _is_env_name(target):
        raise SecretError(field, f"{field!r}: {shown(target)} is not a valid environment variable name")
    if not isinstance(target, str) or not target:
        raise SecretError(field, f"{field!r}: the {kind} reference must be a non-empty string")
    if kind == "$env":
        check_env_reference(target, field)
    if kind == "$file":
        target = check_file_reference(target, field)
    if kind == "$enc":
        decrypt(target, field)  # raises SecretError when this gateway's keys cannot read it
    return {kind: target}


def store_reference_or_plain(value: str, field: str = "url") -> Any:
    """A URL field: a `$NAME` reference (checked like a secret's), or a URL whose host is not link-local."""
    value = value.strip()
    if value.startswith("$") and len(value) > 1:
        name = value[1:].strip("{}")
        check_env_reference(name, field)
        return {"$env": name}
    check_url_host(value, field)
    return value


# -- what a reference may name ---------------------------------------------------------------------------
def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


_short = reprlib.Repr()
_short.maxstring = _short.maxother = _SHOWN_CHARS
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


def shown(value: Any) -> str:
    """repr() of a value for a message, at most about 80 characters however large the value: reprlib stops
    early, so a huge list or string is never rendered in full and then cut."""
    text = _short.repr(value)
    return text if len(text) <= _SHOWN_CHARS + 3 else text[:_SHOWN_CHARS] + "..."



def check_env_reference(name: str, field: str) -> None:
    """Refuse a `$NAME` that names one of the gateway's own settings, or that the allow-list pattern
    (GATEWAY_SECRET_ENV_PATTERN) does not match. It also runs on every resolution, so a verdict is kept
    per name (one dict lookup), until a setting changes (tests)."""
    problem = _env_verdicts.get(name)
    if problem is None:
        problem = _env_problem(name)
        if len(_env_verdicts) < 4096:
            _env_verdicts[name] = problem
    if problem:
        raise SecretError(field, f"{field!r}: ${_clip(name)} {problem}")


_env_verdicts: dict[str, str] = {}  # name -> "" when allowed, else why not


def _env_problem(name: str) -> str:
    from django.conf import settings
    from django.core.signals import setting_changed

    setting_changed.connect(_forget_env_verdicts, dispatch_uid="providers.secrets.env_verdicts")
    if name in getattr(settings, "GATEWAY_SETTINGS_ENV", ()) or name.startswith(RESERVED_ENV_PREFIXES):
        return "is one of the gateway's own settings; a reference may name only a variable set for a provider"
    pattern = getattr(settings, "GATEWAY_SECRET_ENV_PATTERN", "")
    if pattern and not re.fullmatch(pattern, name):
        return "does not match GATEWAY_SECRET_ENV_PATTERN, the names secret references may use"
    return ""


def _forget_env_verdicts(**kwargs: Any) -> None:
    _env_verdicts.clear()


_file_roots: ContextVar[tuple[str, ...]] = ContextVar("secret_file_roots", default=())


@contextmanager
def file_references_under(directory: str) -> Iterator[None]:
    """While a config file is validated: without GATEWAY_SECRETS_DIR, key files may be under its directory."""
    token = _file_roots.set((directory,))
    try:
        yield
    finally:
        _file_roots.reset(token)


def _secrets_dir() -> str:
    from django.conf import settings

    return str(getattr(settings, "GATEWAY_SECRETS_DIR", "") or "")


def check_file_reference(path: str, field: str) -> str:
    """The absolute path of an allowed key file; raises SecretError. Allowed: under GATEWAY_SECRETS_DIR
    (else the config file's directory) once symlinks and `..` are resolved, and, if it exists already,
    a regular file of at most SECRET_FILE_MAX_BYTES."""
    configured = _secrets_dir()
    roots = (configured,) if configured else _file_roots.get()
    if not roots:
        raise SecretError(field, f"{field!r}: key files are refused unless GATEWAY_SECRETS_DIR names the "
                                 f"directory they are in ({shown(path)} was given)")
    real = os.path.realpath(path)
    if not any(_is_within(real, os.path.realpath(root)) for root in roots):
        where = "GATEWAY_SECRETS_DIR" if configured else "the config file's directory (GATEWAY_SECRETS_DIR is unset)"
        raise SecretError(field, f"{field!r}: the key file {shown(path)} is not under {where}")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return os.path.abspath(path)  # a key file to come: reported when a call needs it
    except OSError as exc:
        raise SecretError(field, f"{field!r}: the key file {shown(path)} cannot be read: {exc.strerror}") from None
    problem = _file_problem(info)
    if problem:
        raise SecretError(field, f"{field!r}: the key file {shown(path)} is refused: {problem}")
    return os.path.abspath(path)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _file_problem(info: os.stat_result) -> str:
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size > SECRET_FILE_MAX_BYTES:
        return f"larger than {SECRET_FILE_MAX_BYTES} bytes"
    return ""


_LINK_LOCAL_NETWORKS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                        ipaddress.ip_network("fd00:ec2::254/128"))
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})


def check_url_host(url: str, field: str) -> None:
    """Refuse a URL whose host is a link-local address (the clouds' metadata services live there) unless
    GATEWAY_ALLOW_LINK_LOCAL_API_BASE is set. Only the written host is checked, not what a name resolves to."""
    from django.conf import settings

    if getattr(settings, "GATEWAY_ALLOW_LINK_LOCAL_API_BASE", False) or not _is_link_local_url(url):
        return
    raise SecretError(field, f"{field!r}: the URL's host is a link-local or metadata-service address; set "
                             "GATEWAY_ALLOW_LINK_LOCAL_API_BASE=true to allow it")


@lru_cache(maxsize=256)
def _is_link_local_url(url: str) -> bool:
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if host in _METADATA_HOSTS:
        return True
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:  # the forms getaddrinfo also takes: 2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.43518
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LINK_LOCAL_NETWORKS)


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
        check_env_reference(name, field)  # a row stored before the rule, or a setting changed since
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
            entry = (stamp, _read_key_file(path).rstrip("\r\n"), True)
        except (OSError, ValueError) as exc:
            entry = (stamp, str(getattr(exc, "strerror", None) or exc), False)
        with self._lock:
            self._entries[path] = entry
        return entry


def _read_key_file(path: str) -> str:
    """A key file's text: a regular file under GATEWAY_SECRETS_DIR when it is set, opened without blocking,
    at most SECRET_FILE_MAX_BYTES read. Raises OSError or ValueError (with the reason, never the content)."""
    configured = _secrets_dir()
    real = os.path.realpath(path)
    if configured and not _is_within(real, os.path.realpath(configured)):
        raise ValueError("it is not under GATEWAY_SECRETS_DIR")
    if real.startswith(_SYSTEM_DIRS):  # e.g. /proc/self/environ in a row stored before these rules
        raise ValueError("it is a file of the system, not a key file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        problem = _file_problem(os.fstat(fd))
        if problem:
            raise ValueError(problem)
        data = os.read(fd, SECRET_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise ValueError(f"larger than {SECRET_FILE_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


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
