"""Helpers of the config hardening tests (plain functions, not fixtures: tests/hardening/ is shared with other
work, and a conftest.py here would be a merge conflict). The tests that use them need the database."""
from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client


def chat_entry(name: str = "chat", config: str = "openai_api_key: sk-literal-0001") -> str:
    """One `endpoints[]` entry on the OpenAI provider, as YAML; `config` is its model.config body, one line."""
    return (f"  - name: {name}\n    endpoint_type: llm/v1/chat\n    model:\n      provider: openai\n"
            f"      name: gpt-4o\n      config:\n        {config}\n")


def load_config(path: Path | str, *options: str) -> str:
    """Run `manage.py load_config PATH [options]` in process; returns its output, raises CommandError."""
    out = StringIO()
    call_command("load_config", str(path), *options, stdout=out, stderr=StringIO())
    return out.getvalue()


def operator_api() -> Client:
    """The management API as an operator with a token."""
    get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
    out = StringIO()
    call_command("create_operator_token", "ops", stdout=out)
    return Client(HTTP_AUTHORIZATION=f"Bearer {out.getvalue().strip().splitlines()[-1]}")


def send(api: Client, method: str, path: str, body: Any) -> Any:
    return getattr(api, method)(path, data=body, content_type="application/json")
