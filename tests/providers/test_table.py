"""The README's provider table is generated from the registry: rendering is pure, the command
prints or rewrites the marked section, and the committed README matches the code."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from providers import registry
from providers.table import END_MARKER, START_MARKER, current_section, render_table, replace_section

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_matches_the_registry() -> None:
    assert README.exists(), (
        f"{README} does not exist yet: it needs a provider section between {START_MARKER} and {END_MARKER}; "
        "fill it with `python manage.py provider_table --write README.md`"
    )
    text = README.read_text(encoding="utf-8")
    assert START_MARKER in text and END_MARKER in text, (
        f"README.md has no {START_MARKER} ... {END_MARKER} section for the provider table"
    )
    assert current_section(text).strip() == render_table().strip(), (
        "README.md's provider table is out of date: run `python manage.py provider_table --write README.md`"
    )


def test_each_registered_provider_has_one_row_with_its_aliases() -> None:
    table = render_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(registry.PROVIDER_CLASSES)
    assert any(row.startswith("| `databricks` (alias `databricks-model-serving`) |") for row in rows)


@pytest.mark.parametrize(
    ("provider", "cells"),
    [
        ("huggingface-text-generation-inference", ["completions", "completions", "no", "**`hf_server_url`**"]),
        ("ai21labs", ["completions", "—", "no", "**`ai21labs_api_key`** 🔒, `ai21labs_api_base`"]),
        ("groq", ["chat", "chat", "yes", "**`api_key`** 🔒, `api_base`"]),
        ("ollama", ["chat, completions, embeddings", "chat, completions", "yes", "`api_key` 🔒, `api_base`"]),
    ],
)
def test_a_row_shows_types_streaming_tools_and_marked_config_keys(provider: str, cells: list[str]) -> None:
    row = next(line for line in render_table().splitlines() if line.startswith(f"| `{provider}`"))
    assert [cell.strip() for cell in row.strip("|").split(" | ")][1:] == cells


def test_a_retired_provider_row_names_the_replacement() -> None:
    row = next(line for line in render_table().splitlines() if line.startswith("| `palm`"))
    assert "retired" in row and "'gemini'" in row


def test_replace_section_keeps_everything_outside_the_markers() -> None:
    text = f"# Title\n\nintro\n{START_MARKER}\nold table\n{END_MARKER}\n\n## After\n"
    expected = f"# Title\n\nintro\n{START_MARKER}\n| new |\n{END_MARKER}\n\n## After\n"
    assert replace_section(text, "| new |\n") == expected


def test_the_command_prints_the_table() -> None:
    out = StringIO()
    call_command("provider_table", stdout=out)
    assert out.getvalue() == render_table()


def test_the_command_writes_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Gateway\n{START_MARKER}\nstale\n{END_MARKER}\nrest\n", encoding="utf-8")
    out = StringIO()
    call_command("provider_table", write=str(readme), stdout=out)
    text = readme.read_text(encoding="utf-8")
    assert current_section(text).strip() == render_table().strip()
    assert text.startswith(f"# Gateway\n{START_MARKER}\n") and text.endswith(f"{END_MARKER}\nrest\n")
    assert "updated" in out.getvalue()
    call_command("provider_table", write=str(readme), stdout=out)
    assert "already up to date" in out.getvalue()


def test_the_command_refuses_a_file_without_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Gateway\nno markers here\n", encoding="utf-8")
    with pytest.raises(CommandError, match="providers:start"):
        call_command("provider_table", write=str(readme))
    assert readme.read_text(encoding="utf-8") == "# Gateway\nno markers here\n"


def test_the_command_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot be read"):
        call_command("provider_table", write=str(tmp_path / "missing.md"))
