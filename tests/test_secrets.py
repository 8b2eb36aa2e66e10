"""API keys (MLflow §1.6): `$ENV` references and key files are stored as references and read when a
request is made; literal keys are encrypted at rest; nothing shows a key back except
`export_config --reveal-secrets`."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from pytest_httpserver import HTTPServer

from endpoints_app.models import Endpoint
from providers import secrets
from providers.secrets import PLACEHOLDER, SecretError
from providers.shapes import CHAT, EMBEDDINGS
from tests.conftest import MakeEndpoint, post_json
from tests.fixtures import payload


@pytest.fixture(autouse=True)
def secrets_dir(settings: Any, tmp_path: Path) -> Path:
    """Key files are allowed only under GATEWAY_SECRETS_DIR (or a loaded config file's directory): these
    tests keep theirs in tmp_path."""
    settings.GATEWAY_SECRETS_DIR = str(tmp_path)
    return tmp_path

ROOT = Path(__file__).resolve().parent.parent
LITERAL_KEY = "sk-literal-do-not-leak-7f3a9c"
EMBED_REQUEST = {"input": ["hello"]}


# -- storing ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("written", "stored"), [
    ("$OPENAI_API_KEY", {"$env": "OPENAI_API_KEY"}),
    ("${OPENAI_API_KEY}", {"$env": "OPENAI_API_KEY"}),
    ("  $OPENAI_API_KEY  ", {"$env": "OPENAI_API_KEY"}),
    ({"$env": "OPENAI_API_KEY"}, {"$env": "OPENAI_API_KEY"}),
])
def test_an_env_reference_is_stored_as_a_reference(written: Any, stored: dict[str, str]) -> None:
    assert secrets.store_secret(written, "openai_api_key") == stored


def test_an_existing_file_path_is_stored_as_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key.txt").write_text("sk-file\n")
    monkeypatch.chdir(tmp_path)
    assert secrets.store_secret("key.txt", "openai_api_key") == {"$file": str(tmp_path / "key.txt")}


def test_a_literal_key_is_stored_encrypted() -> None:
    stored = secrets.store_secret(LITERAL_KEY, "openai_api_key")
    assert list(stored) == ["$enc"]
    assert LITERAL_KEY not in stored["$enc"]
    assert secrets.resolve(stored, "openai_api_key") == LITERAL_KEY


def test_the_same_literal_key_encrypts_differently_each_time() -> None:
    assert secrets.store_secret(LITERAL_KEY, "k") != secrets.store_secret(LITERAL_KEY, "k")


@pytest.mark.parametrize(("written", "message"), [
    (123, "'k': the api key provided is not a string. Please provide either an environment variable key ($NAME), a "
          "path to a file containing the api key, or the api key itself"),
    ("$", "'k': '$' is not a valid environment variable reference"),
    ("$NOT-A-NAME", "'k': '$NOT-A-NAME' is not a valid environment variable reference"),
    ("  ", "'k' is empty: write the key, a $ENV reference or a key file path"),
    (PLACEHOLDER, "'k' holds the export placeholder, not a key: write the key or a $ENV reference"),
    ({"$env": "bad name"}, "'k': 'bad name' is not a valid environment variable name"),
    ({"$file": ""}, "'k': the $file reference must be a non-empty string"),
    ({"$enc": "forged"}, "The stored key for k cannot be decrypted: was SECRET_KEY or GATEWAY_ENCRYPTION_KEY changed?"),
])
def test_it_refuses_what_cannot_be_a_key(written: Any, message: str) -> None:
    with pytest.raises(SecretError) as caught:
        secrets.store_secret(written, "k")
    assert caught.value.message == message


def test_the_export_placeholder_keeps_the_stored_encrypted_key() -> None:
    stored = secrets.store_secret(LITERAL_KEY, "k")
    assert secrets.store_secret(PLACEHOLDER, "k", existing=stored) == stored


# -- resolving (at call time) ---------------------------------------------------------------------------------
def test_an_env_reference_is_read_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = secrets.store_secret("$TEST_PROVIDER_KEY", "k")
    monkeypatch.setenv("TEST_PROVIDER_KEY", "first")
    assert secrets.resolve(stored, "k") == "first"
    monkeypatch.setenv("TEST_PROVIDER_KEY", "second")
    assert secrets.resolve(stored, "k") == "second"


def test_an_unset_env_variable_is_named_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_PROVIDER_KEY", raising=False)
    with pytest.raises(SecretError) as caught:
        secrets.resolve({"$env": "TEST_PROVIDER_KEY"}, "openai_api_key")
    assert caught.value.message == "Environment variable 'TEST_PROVIDER_KEY' is not set (needed by openai_api_key)"


@pytest.mark.parametrize(("content", "key"), [("sk-file\n", "sk-file"), ("sk-file\r\n", "sk-file"),
                                              ("sk-file", "sk-file"), ("sk-file\n\n", "sk-file")])
def test_a_key_file_is_read_with_its_trailing_newline_stripped(tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "key.txt"
    path.write_text(content, newline="")
    assert secrets.resolve(secrets.store_secret(str(path), "k"), "k") == key


def test_a_key_file_removed_after_loading_is_named_when_resolved(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    path.write_text("sk-file")
    stored = secrets.store_secret(str(path), "openai_api_key")
    assert secrets.resolve(stored, "openai_api_key") == "sk-file"
    path.unlink()
    secrets.KEY_FILES.refresh()
    with pytest.raises(SecretError) as caught:
        secrets.resolve(stored, "openai_api_key")
    assert caught.value.message == "The key file for openai_api_key cannot be read: No such file or directory"


def test_a_key_file_is_read_once_then_served_from_memory_until_it_changes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "key.txt"
    path.write_text("sk-one\n")
    stored = secrets.store_secret(str(path), "k")
    assert secrets.resolve(stored, "k") == "sk-one"
    opened: list[str] = []
    real_open = os.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("os.open", counting_open)
    for _ in range(3):
        assert secrets.resolve(stored, "k") == "sk-one"
    secrets.KEY_FILES.refresh()  # unchanged: not read again
    assert opened == []
    path.write_text("sk-two-rotated\n")
    assert secrets.resolve(stored, "k") == "sk-one"  # until the next refresh (the poller, every 0.5 s)
    secrets.KEY_FILES.refresh()
    assert secrets.resolve(stored, "k") == "sk-two-rotated"
    assert opened == [str(path)]


@pytest.mark.parametrize(("stored", "exported", "described"), [
    ({"$env": "OPENAI_API_KEY"}, "$OPENAI_API_KEY", "from environment variable $OPENAI_API_KEY"),
    ({"$file": "/run/secrets/openai"}, "/run/secrets/openai", "from file /run/secrets/openai"),
])
def test_references_are_exported_and_described_as_written(stored: dict[str, str], exported: str,
                                                          described: str) -> None:
    assert secrets.export(stored, reveal=False) == exported
    assert secrets.describe(stored) == described


def test_a_literal_key_is_exported_as_the_placeholder_and_described_as_set() -> None:
    stored = secrets.store_secret(LITERAL_KEY, "k")
    assert secrets.export(stored, reveal=False) == PLACEHOLDER
    assert secrets.export(stored, reveal=True) == LITERAL_KEY
    assert secrets.describe(stored) == "set (encrypted)"


# -- through the real request path ---------------------------------------------------------------------------------
@pytest.fixture
def upstream(httpserver: HTTPServer) -> HTTPServer:
    return httpserver


def expect_key(upstream: HTTPServer, key: str) -> None:
    upstream.expect_oneshot_request("/v1/embeddings", method="POST", headers={"Authorization": f"Bearer {key}"}) \
        .respond_with_json(payload("openai", "embeddings_response.json"))


def openai_embeddings(make_endpoint: MakeEndpoint, upstream: HTTPServer, key: str) -> Endpoint:
    return make_endpoint("embed", EMBEDDINGS, "openai", "text-embedding-3-small",
                         config={"openai_api_key": key, "openai_api_base": upstream.url_for("/v1")})


@pytest.mark.django_db
def test_an_env_key_is_read_at_each_request_without_a_restart(make_endpoint: MakeEndpoint, upstream: HTTPServer,
                                                              client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-env-one")
    endpoint = openai_embeddings(make_endpoint, upstream, "$TEST_OPENAI_KEY")
    assert endpoint.config["openai_api_key"] == {"$env": "TEST_OPENAI_KEY"}
    expect_key(upstream, "sk-env-one")
    assert post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST).status_code == 200
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-env-two")
    expect_key(upstream, "sk-env-two")
    assert post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST).status_code == 200
    upstream.check_assertions()


@pytest.mark.django_db
def test_an_unset_env_key_fails_the_request_by_name_and_calls_no_upstream(
        make_endpoint: MakeEndpoint, upstream: HTTPServer, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    openai_embeddings(make_endpoint, upstream, "$TEST_OPENAI_KEY")
    response = post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST)
    assert response.status_code == 500
    assert "Environment variable 'TEST_OPENAI_KEY' is not set" in response.content.decode()
    assert upstream.log == []


@pytest.mark.django_db
def test_a_rotated_key_file_is_used_after_the_next_refresh(make_endpoint: MakeEndpoint, upstream: HTTPServer,
                                                           client: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-file-one\n")
    endpoint = openai_embeddings(make_endpoint, upstream, str(key_file))
    assert endpoint.config["openai_api_key"] == {"$file": str(key_file)}
    expect_key(upstream, "sk-file-one")
    assert post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST).status_code == 200
    key_file.write_text("sk-file-two\n")
    secrets.KEY_FILES.refresh()  # what each process's config poller does every GATEWAY_CONFIG_POLL_SECONDS
    expect_key(upstream, "sk-file-two")
    assert post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST).status_code == 200
    upstream.check_assertions()


@pytest.mark.django_db
def test_a_literal_key_is_decrypted_for_the_upstream_and_stored_encrypted(
        make_endpoint: MakeEndpoint, upstream: HTTPServer, client: Any) -> None:
    openai_embeddings(make_endpoint, upstream, LITERAL_KEY)
    expect_key(upstream, LITERAL_KEY)
    assert post_json(client, "/endpoints/embed/invocations", EMBED_REQUEST).status_code == 200
    upstream.check_assertions()
    with connection.cursor() as cursor:
        cursor.execute("SELECT config FROM endpoints_app_endpoint")
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert LITERAL_KEY not in rows[0][0]
    assert '"$enc"' in rows[0][0]


@pytest.mark.django_db
def test_no_api_response_shows_a_key(make_endpoint: MakeEndpoint, client: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "file.key"
    key_file.write_text("sk-from-a-file-1234\n")
    make_endpoint("literal", CHAT, "openai", "gpt-4o", config={"openai_api_key": LITERAL_KEY})
    make_endpoint("from-file", CHAT, "openai", "gpt-4o", config={"openai_api_key": str(key_file)})
    make_endpoint("from-env", CHAT, "openai", "gpt-4o", config={"openai_api_key": "$TEST_OPENAI_KEY"})
    pages = ["/api/2.0/endpoints/", "/api/2.0/endpoints/literal", "/api/2.0/endpoints/from-file",
             "/api/2.0/endpoints/from-env", "/api/2.0/gateway/routes/", "/api/2.0/gateway/routes/literal",
             "/api/3.0/gateway/endpoint/literal", "/v1/models"]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        for secret in (LITERAL_KEY, "sk-from-a-file-1234", str(key_file), "TEST_OPENAI_KEY", "$enc"):
            assert secret not in body, (page, secret)
    assert client.get("/api/2.0/endpoints/literal").json() == {
        "name": "literal", "endpoint_type": CHAT, "model": {"name": "gpt-4o", "provider": "openai"},
        "endpoint_url": "/endpoints/literal/invocations", "limit": None,
    }


# -- at rest, in a real database file -------------------------------------------------------------------------------
def manage(database: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run manage.py against a SQLite file of our own (never the developer's or CI's database)."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": f"sqlite:///{database}",
                   **(env or {})}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120, check=True)


def test_a_literal_key_never_reaches_the_database_file_in_clear(tmp_path: Path) -> None:
    database = tmp_path / "gateway.sqlite3"
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(f"""\
        endpoints:
          - name: gpt
            endpoint_type: llm/v1/chat
            model:
              provider: openai
              name: gpt-4o
              config:
                openai_api_key: {LITERAL_KEY}
    """))
    manage(database, "migrate", "--verbosity", "0")
    manage(database, "load_config", str(config))

    assert LITERAL_KEY.encode() not in database.read_bytes()
    for leftover in tmp_path.glob("gateway.sqlite3-*"):  # a journal or WAL file, if any was left
        assert LITERAL_KEY.encode() not in leftover.read_bytes()
    with sqlite3.connect(database) as raw:
        rows = raw.execute("SELECT name, config FROM endpoints_app_endpoint").fetchall()
    assert [name for name, _ in rows] == ["gpt"]
    assert LITERAL_KEY not in rows[0][1]
    assert '"$enc"' in rows[0][1]
    # ... and the key is really there, encrypted: the explicit reveal gets it back.
    assert f"openai_api_key: {LITERAL_KEY}" in manage(database, "export_config", "--reveal-secrets").stdout
    assert LITERAL_KEY not in manage(database, "export_config").stdout
