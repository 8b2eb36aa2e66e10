"""The README's provider table, rendered from the registry so that it cannot drift from the code.

`render_table` is pure: it reads the provider classes' declarations (names and aliases, endpoint
types, streaming, tools, config fields) and returns Markdown. `replace_section` puts a table between
the README's markers. The `provider_table` management command prints or writes it.
"""
from __future__ import annotations

from collections.abc import Iterable

from providers import registry
from providers.base import BaseProvider
from providers.config import ConfigField
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

START_MARKER = "<!-- providers:start -->"
END_MARKER = "<!-- providers:end -->"

_SHORT = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}
ENDPOINT_ORDER = (CHAT, COMPLETIONS, EMBEDDINGS)
LEGEND = "Config keys: **bold** = required, 🔒 = secret (`$ENV`, a file path, or stored encrypted)."


def registered_providers() -> list[type[BaseProvider]]:
    """Each provider class once, in registry order."""
    classes: list[type[BaseProvider]] = []
    for slug in registry.names():
        cls = registry.get(slug)
        if cls not in classes:
            classes.append(cls)
    return classes


def _types(types: Iterable[str]) -> str:
    chosen = set(types)
    return ", ".join(_SHORT[t] for t in ENDPOINT_ORDER if t in chosen) or "—"


def _config_key(path: str, field: ConfigField) -> str:
    text = f"`{path}`"
    if field.required:
        text = f"**{text}**"
    return f"{text} 🔒" if field.is_secret else text


def _row(cls: type[BaseProvider]) -> str:
    names = f"`{cls.name}`" + "".join(f" (alias `{alias}`)" for alias in cls.aliases)
    config = ", ".join(_config_key(path, f) for path, f in cls.config_class.field_map().items()) or "—"
    if cls.retired:
        cells = [names, f"retired: {cls.retired}", "—", "—", config]
    else:
        cells = [names, _types(cls.endpoint_types), _types(cls.streaming_types),
                 "yes" if cls.supports_tools else "no", config]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_table(classes: Iterable[type[BaseProvider]] | None = None) -> str:
    """The Markdown table (and its one-line legend) for `classes`, by default every registered provider."""
    lines = [
        "| Provider | Endpoint types | Streaming | Tools | Config keys |",
        "|---|---|---|---|---|",
        *(_row(cls) for cls in (registered_providers() if classes is None else classes)),
        "",
        LEGEND,
    ]
    return "\n".join(lines) + "\n"


class MarkersMissing(ValueError):
    pass


def section_bounds(text: str) -> tuple[int, int]:
    """(start, end) offsets of the text between the markers. Raises MarkersMissing."""
    start = text.find(START_MARKER)
    end = text.find(END_MARKER, start + len(START_MARKER)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise MarkersMissing(f"the markers {START_MARKER} and {END_MARKER} (in that order) were not found")
    return start + len(START_MARKER), end


def current_section(text: str) -> str:
    start, end = section_bounds(text)
    return text[start:end]


def replace_section(text: str, table: str) -> str:
    """`text` with everything between the markers replaced by `table`. Raises MarkersMissing."""
    start, end = section_bounds(text)
    return f"{text[:start]}\n{table.strip()}\n{text[end:]}"
