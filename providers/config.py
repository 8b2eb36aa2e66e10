"""Typed provider configuration.

Each provider declares its `model.config` keys as a tuple of `ConfigField`s. Import, the admin and
the API all validate through `ProviderConfig.validate`, which returns the *stored* form: secrets
and URL references become tagged references (see providers.secrets), nothing is resolved yet.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from providers import secrets

FieldKind = Literal["plain", "secret", "url"]


class ConfigValidationError(ValueError):
    """A config value is wrong. `field` is the dotted path under `model.config` (or a top field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ConfigField:
    name: str
    required: bool = False
    default: Any = None
    kind: FieldKind = "plain"
    value_type: type = str
    choices: tuple[str, ...] | None = None
    children: tuple[ConfigField, ...] = ()
    help: str = ""
    # Case-insensitive choices are normalised to lower case (MLflow's openai_api_type).
    lower: bool = False
    minimum: float | None = None

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"


class ProviderConfig:
    """Declares a provider's config keys; subclasses set `fields` and may add `check`."""

    fields: ClassVar[tuple[ConfigField, ...]] = ()
    # Keys accepted but ignored (MLflow ignores unknown keys; we refuse them, except these).
    tolerated: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def secret_paths(cls) -> list[str]:
        return [path for path, f in _walk(cls.fields) if f.kind == "secret"]

    @classmethod
    def field_map(cls) -> dict[str, ConfigField]:
        return {path: f for path, f in _walk(cls.fields)}

    @classmethod
    def validate(cls, raw: Any, *, existing: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check `raw` (the YAML `model.config`) and return its stored form.

        `existing` is the stored config already in the database: a secret given as the export
        placeholder keeps the existing encrypted value. Raises ConfigValidationError.
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigValidationError("config", "must be a mapping of config keys")
        stored = _validate_group(cls.fields, raw, "", existing or {})
        cls.check(stored)
        return stored

    @classmethod
    def check(cls, stored: dict[str, Any]) -> None:
        """Cross-field rules; raise ConfigValidationError. Values are in stored form."""


def _walk(fields: tuple[ConfigField, ...], prefix: str = "") -> list[tuple[str, ConfigField]]:
    out: list[tuple[str, ConfigField]] = []
    for f in fields:
        path = f"{prefix}{f.name}"
        out.append((path, f))
        if f.children:
            out.extend(_walk(f.children, prefix=f"{path}."))
    return out


def _validate_group(fields: tuple[ConfigField, ...], raw: Mapping[str, Any], prefix: str,
                    existing: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields}
    unknown = sorted(str(k)[:80] for k in raw if k not in known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigValidationError(
            f"{prefix}{unknown[0]}", f"unknown config key {secrets.shown(unknown[0])}; allowed keys: {allowed}"
        )
    stored: dict[str, Any] = {}
    for f in fields:
        path = f"{prefix}{f.name}"
        value = raw.get(f.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if f.required:
                raise ConfigValidationError(path, f"{path!r} is required")
            continue
        stored[f.name] = _validate_value(f, value, path, existing.get(f.name))
    return stored


def _validate_value(f: ConfigField, value: Any, path: str, existing: Any) -> Any:
    if f.children:
        if not isinstance(value, Mapping):
            raise ConfigValidationError(path, f"{path!r} must be a mapping")
        return _validate_group(f.children, value, f"{path}.", existing if isinstance(existing, Mapping) else {})
    if f.kind == "secret":
        try:
            return secrets.store_secret(value, path, existing)
        except secrets.SecretError as exc:
            raise ConfigValidationError(path, exc.message) from None
    if f.kind == "url":
        if not isinstance(value, str):
            raise ConfigValidationError(path, f"{path!r} must be a string URL or a $ENV reference")
        try:
            return secrets.store_reference_or_plain(value, path)
        except secrets.SecretError as exc:
            raise ConfigValidationError(path, exc.message) from None
    return _coerce(f, value, path)


def _coerce(f: ConfigField, value: Any, path: str) -> Any:
    converters: dict[type, Callable[[Any], Any]] = {str: _as_str, int: _as_int, float: _as_float, bool: _as_bool}
    try:
        out = converters[f.value_type](value)
    except (TypeError, ValueError):
        raise ConfigValidationError(
            path, f"{path!r} must be {_TYPE_WORDS[f.value_type]}, got {secrets.shown(value)}") from None
    if f.lower and isinstance(out, str):
        out = out.lower()
    if f.choices is not None and out not in f.choices:
        raise ConfigValidationError(path, f"{path!r} must be one of {', '.join(f.choices)}; got {secrets.shown(value)}")
    if f.minimum is not None and out < f.minimum:
        raise ConfigValidationError(path, f"{path!r} must be at least {f.minimum:g}, got {secrets.shown(value)}")
    return out


_TYPE_WORDS: dict[type, str] = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


def _as_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError
    return str(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    out = float(value)
    if not math.isfinite(out):  # nan and inf pass every comparison check below them
        raise ValueError
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise TypeError


def resolve(config_fields: tuple[ConfigField, ...], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored config with every reference resolved and defaults filled (call time)."""
    out: dict[str, Any] = {}
    for f in config_fields:
        value = stored.get(f.name)
        if f.children:
            out[f.name] = resolve(f.children, value or {}) if value is not None or f.required else None
            continue
        if value is None:
            out[f.name] = f.default
        elif f.kind in ("secret", "url"):
            out[f.name] = secrets.resolve(value, f.name)
            if f.kind == "url" and isinstance(value, Mapping) and isinstance(out[f.name], str):
                secrets.check_url_host(out[f.name], f.name)  # a URL from the environment, checked as written ones
        else:
            out[f.name] = value
    return out


def has_references(config_fields: tuple[ConfigField, ...], stored: Mapping[str, Any], kinds: tuple[str, ...]) -> bool:
    """Whether a secret or URL field of the stored config is a reference of one of `kinds` ("$env", "$file")."""
    for f in config_fields:
        value = stored.get(f.name)
        if f.children:
            if isinstance(value, Mapping) and has_references(f.children, value, kinds):
                return True
        elif isinstance(value, Mapping) and any(kind in value for kind in kinds):
            return True
    return False


def export(config_fields: tuple[ConfigField, ...], stored: Mapping[str, Any], *, reveal: bool) -> dict[str, Any]:
    """The stored config as YAML should show it: references as written, literal keys hidden."""
    out: dict[str, Any] = {}
    for f in config_fields:
        if f.name not in stored:
            continue
        value = stored[f.name]
        if f.children:
            out[f.name] = export(f.children, value, reveal=reveal)
        elif f.kind in ("secret", "url"):
            out[f.name] = secrets.export(value, reveal=reveal)
        else:
            out[f.name] = value
    return out


def describe(config_fields: tuple[ConfigField, ...], stored: Mapping[str, Any]) -> dict[str, Any]:
    """A display form safe for the admin: secrets shown as set/unset and how, never their value."""
    out: dict[str, Any] = {}
    for f in config_fields:
        if f.name not in stored:
            continue
        value = stored[f.name]
        if f.children:
            out[f.name] = describe(f.children, value)
        elif f.kind == "secret":
            out[f.name] = secrets.describe(value)
        elif f.kind == "url":
            out[f.name] = secrets.export(value, reveal=False)
        else:
            out[f.name] = value
    return out
