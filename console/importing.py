"""YAML import in the admin: a dry run that shows what would change, then the same document applied.

The preview validates the upload with the one validator (endpoints_app.services.validate_text) and runs
`apply_document(dry_run=True)`, which does the whole import and rolls it back. What an updated entry
changes is shown field by field, from the config file's own form of the stored row and of the new
definition (secrets as references or a placeholder, never in clear; a literal key that changes is said to
change, nothing more). The text travels to the apply step in the page, encrypted (it may hold literal keys,
which the page must not show), with a signed digest of it, the options and the config version it was
previewed against (django.core.signing): the apply step checks the signature, validates the text again
and applies it in one transaction, or previews it again if the config moved meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography.fernet import Fernet, InvalidToken
from django.core import signing
from django.utils.crypto import salted_hmac

from consumers.models import Consumer
from consumers.services import consumer_to_yaml, consumer_values
from endpoints_app.configfile import compose_yaml
from endpoints_app.models import Endpoint, Source, TrafficRoute
from endpoints_app.services import (
    ImportReport,
    apply_document,
    config_version,
    endpoint_columns,
    endpoint_to_yaml,
    route_to_yaml,
    validate_text,
)
from endpoints_app.validation import ConfigDocument, ConfigError, RouteSpec
from providers import config as provider_config
from providers import registry
from providers.secrets import PLACEHOLDER, SecretError

UPLOADS = "/admin-upload"  # the source path of rows an upload creates: /admin-upload/<file name>
MAX_BYTES = 1024 * 1024
SALT = "console.import-yaml"
MAX_AGE_SECONDS = 3600
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_ENTRY = re.compile(r"^(endpoints|routes|consumers)\[(\d+)\]")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def upload_source(filename: str) -> str:
    """Where an uploaded file's rows say they come from: an upload of the same name replaces them (--prune)."""
    name = _SAFE_NAME.sub("_", posixpath.basename(filename.replace("\\", "/"))).strip("._") or "config.yaml"
    return f"{UPLOADS}/{name}"


def known_sources() -> list[str]:
    """The files the rows in the database were loaded from (a server's --config-path, earlier uploads)."""
    paths: set[str] = set()
    for model in (Endpoint, TrafficRoute, Consumer):
        paths.update(model.objects.filter(source=Source.YAML).exclude(source_path="")
                     .values_list("source_path", flat=True).distinct())
    return sorted(paths)


# -- where an issue is in the text ------------------------------------------------------------------------
@dataclass(frozen=True)
class PlacedIssue:
    field: str
    message: str
    line: int | None


@dataclass(frozen=True)
class IssueGroup:
    location: str  # "endpoints[1] 'chat'", or "" for the document itself
    line: int | None
    issues: tuple[PlacedIssue, ...]


def place_issues(text: str, error: ConfigError) -> list[IssueGroup]:
    """The validator's issues grouped by entry, in order, each with the line of its entry and field."""
    try:
        root = compose_yaml(text)
    except yaml.YAMLError:
        root = None
    groups: dict[str, list[PlacedIssue]] = {}
    for issue in error.issues:
        groups.setdefault(issue.location, []).append(
            PlacedIssue(issue.field, issue.message, _line(root, issue.location, issue.field)))
    return [IssueGroup(location, _line(root, location, ""), tuple(issues)) for location, issues in groups.items()]


def _line(root: yaml.Node | None, location: str, field_path: str) -> int | None:
    if root is None:
        return None
    node: yaml.Node | None = root
    match = _ENTRY.match(location)
    if match:
        kind, index = match.group(1), int(match.group(2))
        entries = _child(root, kind) or (_child(root, "routes") if kind == "endpoints" else None)
        node = _child(entries, index)
    elif location:
        return None
    if node is None:
        return None
    line = int(node.start_mark.line)
    for name, index_text in _PART.findall(field_path):
        key = int(index_text) if index_text else name
        child = _child(node, key)
        if child is None:
            break
        # A mapping's field is on its key's line (a list or a mapping under it starts on the next one).
        line = _key_line(node, key) if isinstance(key, str) else int(child.start_mark.line)
        node = child
    return line + 1


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]
    return None


def _key_line(node: yaml.Node, key: str) -> int:
    return next(int(k.start_mark.line) for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == key)


# -- what changes ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldChange:
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class EntryChange:
    kind: str  # endpoint, route or consumer
    name: str
    changes: tuple[FieldChange, ...] = ()


@dataclass
class Preview:
    text: str
    source: str
    prune: bool
    token: str = ""  # signs the text's digest and the options
    sealed: str = ""  # the text, encrypted, for the page to carry to the apply step
    issues: list[IssueGroup] = field(default_factory=list)
    report: ImportReport | None = None
    created: list[EntryChange] = field(default_factory=list)
    updated: list[EntryChange] = field(default_factory=list)
    deleted: list[EntryChange] = field(default_factory=list)
    unchanged: list[EntryChange] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.report is not None

    @property
    def changed(self) -> bool:
        return self.report is not None and self.report.changed


def preview(text: str, source: str, *, prune: bool, user_id: int) -> Preview:
    """Validate and dry-run `text` as if loaded from `source`; nothing is changed."""
    result = Preview(text, source, prune)
    try:
        document = _validated(text, source, prune)
    except ConfigError as exc:
        result.issues = place_issues(text, exc)
        return result
    updated = _changes(document, source)
    report = apply_document(document, source_path=source, dry_run=True, prune=prune)
    result.report = report
    result.created = [EntryChange(*_kind(document, label)) for label in report.created]
    result.unchanged = [EntryChange(*_kind(document, label)) for label in report.unchanged]
    result.updated = [updated.get(label) or EntryChange(*_kind(document, label)) for label in report.updated]
    result.deleted = [EntryChange(*_deleted_kind(label)) for label in report.deleted]
    result.token = signing.dumps({"sha256": _digest(text), "source": source, "prune": prune,
                                  "version": config_version(), "user": user_id}, salt=SALT)
    result.sealed = seal(text)
    return result


def _box() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(salted_hmac(SALT, "carried text", algorithm="sha256").digest()))


def seal(text: str) -> str:
    """The text, encrypted and authenticated with a key derived from SECRET_KEY."""
    return _box().encrypt(text.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _box().decrypt(sealed.encode(), ttl=MAX_AGE_SECONDS).decode()
    except (InvalidToken, UnicodeDecodeError):
        raise BadToken("The preview has expired or was altered: upload the file again.") from None


class StalePreview(Exception):
    """The configuration changed after the preview: it must be looked at again."""


class BadToken(Exception):
    """The apply request does not carry a valid, unexpired signature of this text and these options."""


def apply(text: str, source: str, *, prune: bool, token: str, user_id: int) -> ImportReport:
    """Apply what `preview` showed: the signature must match the text and options, the text is validated
    again, and it is applied in one transaction. Raises BadToken, StalePreview or ConfigError."""
    try:
        signed = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise BadToken("This preview is more than an hour old: upload the file again.") from None
    except signing.BadSignature:
        raise BadToken("The preview's signature does not match: upload the file again.") from None
    if signed != {"sha256": _digest(text), "source": source, "prune": prune, "version": signed.get("version"),
                  "user": user_id}:
        raise BadToken("The text or the options differ from those previewed: upload the file again.")
    if signed["version"] != config_version():
        raise StalePreview("The configuration changed since this preview; here is what the file changes now.")
    document = _validated(text, source, prune)
    return apply_document(document, source_path=source, prune=prune)


def _validated(text: str, source: str, prune: bool) -> ConfigDocument:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecation notes come back in the report
        return validate_text(text, source, prune=prune)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _kind(document: ConfigDocument, label: str) -> tuple[str, str]:
    if label.startswith("consumer "):
        return "consumer", label[len("consumer "):]
    return ("route" if any(r.name == label for r in document.routes) else "endpoint"), label


def _deleted_kind(label: str) -> tuple[str, str]:
    if label.startswith("consumer "):
        return "consumer", label[len("consumer "):]
    return ("endpoint" if Endpoint.objects.filter(name=label).exists() else "route"), label


def _changes(document: ConfigDocument, source: str) -> dict[str, EntryChange]:
    """For every entry of the document already in the database: what would change, field by field."""
    out: dict[str, EntryChange] = {}
    rows = {e.name: e for e in Endpoint.objects.filter(name__in=[s.name for s in document.endpoints])}
    for position, spec in enumerate(document.endpoints):
        row = rows.get(spec.name)
        if row is None:
            continue
        new = Endpoint(name=spec.name, **endpoint_columns(spec))
        changes = _diff(endpoint_to_yaml(row), endpoint_to_yaml(new)) + _secret_changes(row, new)
        changes += _origin(row, position, source)
        out[spec.name] = EntryChange("endpoint", spec.name, tuple(changes))
    routes = {r.name: r for r in TrafficRoute.objects.filter(name__in=[s.name for s in document.routes])
              .prefetch_related("destinations__endpoint")}
    for position, route_spec in enumerate(document.routes):
        route = routes.get(route_spec.name)
        if route is not None:
            changes = _diff(route_to_yaml(route), _route_yaml(route_spec)) + _origin(route, position, source)
            out[route_spec.name] = EntryChange("route", route_spec.name, tuple(changes))
    consumers = {c.name: c for c in Consumer.objects.filter(name__in=[s.name for s in document.consumers])}
    for position, consumer_spec in enumerate(document.consumers):
        consumer = consumers.get(consumer_spec.name)
        if consumer is not None:
            new_consumer = Consumer(name=consumer_spec.name, **consumer_values(consumer_spec))
            changes = _diff(consumer_to_yaml(consumer), consumer_to_yaml(new_consumer))
            changes += _origin(consumer, position, source)
            out[f"consumer {consumer_spec.name}"] = EntryChange("consumer", consumer_spec.name, tuple(changes))
    return out


def _route_yaml(spec: RouteSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "task_type": spec.task_type,
                             "destinations": [{"name": d.name, "traffic_percentage": d.traffic_percentage}
                                              for d in spec.destinations],
                             "routing_strategy": spec.routing_strategy}
    if not spec.enabled:
        entry["enabled"] = False
    return entry


def _origin(row: Endpoint | TrafficRoute | Consumer, position: int, source: str) -> list[FieldChange]:
    changes = []
    old_source = row.source_path if row.source == Source.YAML else "the admin"
    if old_source != source:
        changes.append(FieldChange("(loaded from)", old_source or "—", source))
    if row.position != position:
        changes.append(FieldChange("(position in the file)", str(row.position), str(position)))
    return changes


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"config": {"a": 1}}} → {"model.config.a": 1}; lists of mappings by index."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    before, after = flatten(old), flatten(new)
    if "enabled" not in before:
        before["enabled"] = True
    if "enabled" not in after:
        after["enabled"] = True
    return [FieldChange(path, _shown(before.get(path)), _shown(after.get(path)))
            for path in dict.fromkeys([*before, *after]) if before.get(path) != after.get(path)]


def _secret_changes(row: Endpoint, new: Endpoint) -> list[FieldChange]:
    """A literal key shows as the same placeholder before and after: compare the stored values (in memory,
    never shown) and say only that it changes."""
    if row.provider != new.provider:
        return []
    try:
        config_class = registry.get(new.provider).config_class
    except registry.UnknownProvider:
        return []
    fields = config_class.fields
    shown_old = flatten(provider_config.export(fields, row.config or {}, reveal=False))
    shown_new = flatten(provider_config.export(fields, new.config or {}, reveal=False))
    try:
        clear_old = flatten(provider_config.export(fields, row.config or {}, reveal=True))
        clear_new = flatten(provider_config.export(fields, new.config or {}, reveal=True))
    except SecretError:  # a stored key that no longer decrypts (rotated encryption keys): it changes
        return [FieldChange(f"model.config.{path}", "(a stored secret)", "(a new secret, not shown)")
                for path in config_class.secret_paths() if shown_old.get(path) == shown_new.get(path) == PLACEHOLDER
                and path in shown_new]
    return [FieldChange(f"model.config.{path}", "(a stored secret)", "(a new secret, not shown)")
            for path in config_class.secret_paths()
            if shown_old.get(path) == shown_new.get(path) and clear_old.get(path) != clear_new.get(path)]
