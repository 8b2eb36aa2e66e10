"""Issue 15, item 2: a secret reference may name only a provider's variable or a key file under the
secrets directory, never the gateway's own settings (`$SECRET_KEY`) or any file (`/proc/self/environ`),
from YAML, the admin, the console import and the API alike; a URL may not point at a metadata service."""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management.base import CommandError
from django.test import Client
from pytest_httpserver import HTTPServer

from endpoints_app.models import Endpoint, Source
from providers import secrets
from providers.secrets import SecretError
from providers.shapes import CHAT
from tests.admin.test_admin import ENDPOINTS, change_form_data, endpoint_form, form_errors
from tests.conftest import MakeEndpoint, post_json
from tests.console.test_import_export import upload
from tests.hardening.config_helpers import chat_entry, load_config, operator_api, send

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "gateway_project" / "settings.py"
CHAT_REQUEST = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def no_secrets_dir(settings: Any) -> None:
    """Each test starts without GATEWAY_SECRETS_DIR (the default), whatever the environment says."""
    settings.GATEWAY_SECRETS_DIR = ""
    settings.GATEWAY_SECRET_ENV_PATTERN = ""
    settings.GATEWAY_ALLOW_LINK_LOCAL_API_BASE = False


# -- environment variables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GATEWAY_KEY_PEPPER",
                                  "GATEWAY_ENCRYPTION_KEY", "GATEWAY_ANYTHING_NEW", "DJANGO_SETTINGS_MODULE",
                                  "ALLOWED_HOSTS", "LOG_LEVEL", "CACHE_KEY_PREFIX", "SECURE_COOKIES"])
def test_a_reference_to_one_of_the_gateways_own_settings_is_refused(name: str) -> None:
    for raw in (f"${name}", f"${{{name}}}", {"$env": name}):
        with pytest.raises(SecretError) as caught:
            secrets.store_secret(raw, "openai_api_key")
        assert caught.value.message == (f"'openai_api_key': ${name} is one of the gateway's own settings; a reference "
                                         "may name only a variable set for a provider")


def test_a_providers_variable_is_still_a_reference() -> None:
    assert secrets.store_secret("$OPENAI_API_KEY", "k") == {"$env": "OPENAI_API_KEY"}
    assert secrets.store_secret({"$env": "AWS_SECRET_ACCESS_KEY"}, "k") == {"$env": "AWS_SECRET_ACCESS_KEY"}


def _names_settings_reads() -> set[str]:
    """Every string literal given to an env_* helper or os.environ in gateway_project/settings.py."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS_FILE.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = ast.unparse(node.func)
            if func.startswith("env_") or func in ("os.environ.get", "os.getenv"):
                names.add(node.args[0].value)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.slice, ast.Constant):
            names.add(str(node.slice.value))
    return names


def test_the_reserved_names_are_every_variable_the_settings_read() -> None:
    read = _names_settings_reads()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS", "GATEWAY_AUTH"} <= read
    assert read <= django_settings.GATEWAY_SETTINGS_ENV  # a variable read in another way would be missed


def test_the_allow_list_pattern_must_match_the_whole_name(settings: Any) -> None:
    settings.GATEWAY_SECRET_ENV_PATTERN = r"[A-Z0-9_]+_API_KEY|AWS_[A-Z_]+"
    assert secrets.store_secret("$OPENAI_API_KEY", "k") == {"$env": "OPENAI_API_KEY"}
    assert secrets.store_secret("$AWS_SESSION_TOKEN", "k") == {"$env": "AWS_SESSION_TOKEN"}
    for name in ("HOME", "OPENAI_API_KEY_OLD", "XAWS_KEY"):
        with pytest.raises(SecretError, match="does not match GATEWAY_SECRET_ENV_PATTERN"):
            secrets.store_secret(f"${name}", "k")


@pytest.mark.django_db
def test_load_config_refuses_SECRET_KEY_naming_the_endpoint_and_field_without_its_value(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("fine") + chat_entry("leaky", "openai_api_key: $SECRET_KEY"))
    with pytest.raises(CommandError) as caught:
        load_config(config)
    message = str(caught.value)
    assert ("endpoints[1] 'leaky' field 'model.config.openai_api_key': 'openai_api_key': $SECRET_KEY is one of the "
            "gateway's own settings") in message
    assert django_settings.SECRET_KEY not in message
    assert not Endpoint.objects.exists()  # all or nothing


@pytest.mark.django_db
def test_the_api_refuses_a_settings_reference_with_400() -> None:
    api = operator_api()
    definition: dict[str, Any] = {
        "name": "gpt", "endpoint_type": CHAT,
        "model": {"provider": "openai", "name": "gpt-4o", "config": {"openai_api_key": "$DATABASE_URL"}}}
    response = send(api, "post", "/api/manage/endpoints/", definition)
    assert response.status_code == 400
    assert "$DATABASE_URL is one of the gateway's own settings" in response.json()["model.config.openai_api_key"][0]
    stored_form = {**definition, "model": {**definition["model"], "config": {"openai_api_key": {"$env": "SECRET_KEY"}}}}
    assert send(api, "post", "/api/manage/endpoints/", stored_form).status_code == 400
    assert django_settings.DATABASE_URL not in response.content.decode()
    assert not Endpoint.objects.exists()


def test_the_admin_form_refuses_a_settings_reference(admin_client: Client) -> None:
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(provider="openai",
                                                                    config_text="openai_api_key: $REDIS_URL"))
    assert form_errors(response) == {"config_text": [
        "model.config.openai_api_key: 'openai_api_key': $REDIS_URL is one of the gateway's own settings; a reference "
        "may name only a variable set for a provider"]}
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_a_row_stored_before_the_rule_sends_nothing_upstream(httpserver: HTTPServer, client: Client) -> None:
    """The hostile reference is refused again when resolved: no request leaves with SECRET_KEY in it."""
    Endpoint.objects.create(name="old", endpoint_type=CHAT, provider="openai", model_name="gpt-4o",
                            source=Source.ADMIN, config={"openai_api_key": {"$env": "SECRET_KEY"},
                                                         "openai_api_base": httpserver.url_for("/v1")})
    response = post_json(client, "/endpoints/old/invocations", CHAT_REQUEST)
    assert response.status_code >= 500
    assert "$SECRET_KEY is one of the gateway's own settings" in response.content.decode()
    assert django_settings.SECRET_KEY not in response.content.decode()
    assert httpserver.log == []


# -- key files --------------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_proc_self_environ_is_refused_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("leaky", "openai_api_key: /proc/self/environ"))
    with pytest.raises(CommandError) as caught:
        load_config(config)
    assert ("field 'model.config.openai_api_key': 'openai_api_key': the key file '/proc/self/environ' is not under the "
            "config file's directory (GATEWAY_SECRETS_DIR is unset)") in str(caught.value)
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_without_a_secrets_dir_a_config_file_may_name_key_files_beside_it(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "openai.key").write_text("sk-from-file\n")
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("chat", f"openai_api_key: {tmp_path / 'keys' / 'openai.key'}"))
    load_config(config)
    assert Endpoint.objects.get().config["openai_api_key"] == {"$file": str(tmp_path / "keys" / "openai.key")}


@pytest.mark.django_db
def test_symlinks_and_dotdot_cannot_leave_the_allowed_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside.key"
    outside.write_text("sk-outside\n")
    home = tmp_path / "config"
    home.mkdir()
    (home / "link.key").symlink_to(outside)
    for reference in (str(home / "link.key"), f"{home}/../outside.key"):
        config = home / "gateway.yaml"
        config.write_text("endpoints:\n" + chat_entry("chat", f"openai_api_key: {reference}"))
        with pytest.raises(CommandError, match="is not under the config file's directory"):
            load_config(config)
    assert not Endpoint.objects.exists()


def test_the_admin_and_the_api_may_name_no_key_file_without_a_secrets_dir(admin_client: Client, tmp_path: Path) -> None:
    key = tmp_path / "openai.key"
    key.write_text("sk-file\n")
    response = admin_client.post(f"{ENDPOINTS}add/", endpoint_form(provider="openai",
                                                                    config_text=f"openai_api_key: {key}"))
    assert form_errors(response) == {"config_text": [
        f"model.config.openai_api_key: 'openai_api_key': key files are refused unless GATEWAY_SECRETS_DIR names the "
        f"directory they are in ({secrets.shown(str(key))} was given)"]}  # a long path is cut at 80 characters
    definition = {"name": "gpt", "endpoint_type": CHAT,
                  "model": {"provider": "openai", "name": "gpt-4o", "config": {"openai_api_key": {"$file": str(key)}}}}
    assert send(operator_api(), "post", "/api/manage/endpoints/", definition).status_code == 400
    assert not Endpoint.objects.exists()


def test_the_console_import_refuses_proc_self_environ(admin_client: Client) -> None:
    preview = upload(admin_client, "endpoints:\n" + chat_entry("leaky", "openai_api_key: /proc/self/environ")) \
        .context["preview"]
    assert not preview.valid
    [group] = preview.issues
    assert group.location == "endpoints[0] 'leaky'"
    assert "key files are refused unless GATEWAY_SECRETS_DIR" in group.issues[0].message
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_with_a_secrets_dir_only_its_regular_small_files_are_keys(settings: Any, tmp_path: Path,
                                                                 make_endpoint: MakeEndpoint) -> None:
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    settings.GATEWAY_SECRETS_DIR = str(secrets_dir)
    (secrets_dir / "openai").write_text("sk-mounted\n")
    endpoint = make_endpoint("chat", CHAT, "openai", "gpt-4o", config={"openai_api_key": str(secrets_dir / "openai")})
    assert secrets.resolve(endpoint.config["openai_api_key"], "openai_api_key") == "sk-mounted"
    os.mkfifo(secrets_dir / "fifo")
    (secrets_dir / "big").write_bytes(b"x" * (secrets.SECRET_FILE_MAX_BYTES + 1))
    beside = tmp_path / "beside.key"
    beside.write_text("sk-beside\n")
    refused = {str(secrets_dir / "fifo"): "is refused: not a regular file",
               str(secrets_dir / "big"): f"is refused: larger than {secrets.SECRET_FILE_MAX_BYTES} bytes",
               str(beside): "is not under GATEWAY_SECRETS_DIR",
               "/proc/self/environ": "is not under GATEWAY_SECRETS_DIR"}
    for path, reason in refused.items():
        with pytest.raises(SecretError) as caught:
            secrets.store_secret({"$file": path}, "openai_api_key")
        assert reason in caught.value.message


def test_a_key_file_swapped_for_a_fifo_after_loading_fails_the_call_without_blocking(settings: Any,
                                                                                      tmp_path: Path) -> None:
    settings.GATEWAY_SECRETS_DIR = str(tmp_path)
    key = tmp_path / "openai.key"
    key.write_text("sk-one\n")
    stored = secrets.store_secret(str(key), "k")
    key.unlink()
    os.mkfifo(key)  # a read would block forever: the file is opened without blocking and refused
    secrets.KEY_FILES.forget()
    with pytest.raises(SecretError, match="cannot be read: not a regular file"):
        secrets.resolve(stored, "k")


# -- URLs --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://169.254.170.2/v1",
                                 "http://[fd00:ec2::254]/", "http://[fe80::1]:8080/", "http://2852039166/",
                                 "http://0xa9.0xfe.0xa9.0xfe/", "http://[::ffff:169.254.169.254]/",
                                 "http://metadata.google.internal/computeMetadata/v1/"])
def test_a_link_local_or_metadata_api_base_is_refused_unless_allowed(url: str, settings: Any) -> None:
    config = {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": url}
    with pytest.raises(Exception) as caught:
        _validate_openai(config)
    assert "link-local or metadata-service address" in str(caught.value)
    settings.GATEWAY_ALLOW_LINK_LOCAL_API_BASE = True
    assert _validate_openai(config)["openai_api_base"] == url


def test_an_ordinary_api_base_is_accepted() -> None:
    for url in ("https://api.openai.com/v1", "http://127.0.0.1:8080/v1", "http://10.0.0.5/v1", "http://[::1]:9/"):
        assert _validate_openai({"openai_api_key": "k", "openai_api_base": url})["openai_api_base"] == url


@pytest.mark.django_db
def test_an_api_base_from_the_environment_is_checked_when_resolved(monkeypatch: pytest.MonkeyPatch,
                                                                   make_endpoint: MakeEndpoint, client: Client) -> None:
    monkeypatch.setenv("OPENAI_BASE", "http://169.254.169.254/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    make_endpoint("chat", CHAT, "openai", "gpt-4o",
                  config={"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "$OPENAI_BASE"})
    response = post_json(client, "/endpoints/chat/invocations", CHAT_REQUEST)
    assert response.status_code >= 500
    assert "link-local or metadata-service address" in response.content.decode()


def _validate_openai(config: dict[str, Any]) -> dict[str, Any]:
    from providers import registry

    return registry.get("openai").config_class.validate(config)


@pytest.mark.django_db
def test_an_endpoint_loaded_with_a_key_file_stays_editable_in_the_admin(tmp_path: Path, admin_client: Client) -> None:
    """The admin may name no new key file, but saving an endpoint keeps the one its config file named."""
    (tmp_path / "openai.key").write_text("sk-from-file\n")
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n" + chat_entry("chat", f"openai_api_key: {tmp_path / 'openai.key'}"))
    load_config(config)
    endpoint = Endpoint.objects.get()
    response = admin_client.post(f"{ENDPOINTS}{endpoint.pk}/change/",
                                 change_form_data(admin_client, endpoint, model_name="gpt-4.1"))
    assert response.status_code == 302, form_errors(response)
    endpoint.refresh_from_db()
    assert endpoint.model_name == "gpt-4.1"
    assert endpoint.config["openai_api_key"] == {"$file": str(tmp_path / "openai.key")}


@pytest.mark.django_db
def test_a_proc_file_stored_before_the_rules_is_not_read(httpserver: HTTPServer, client: Client) -> None:
    Endpoint.objects.create(name="old", endpoint_type=CHAT, provider="openai", model_name="gpt-4o",
                            source=Source.ADMIN, config={"openai_api_key": {"$file": "/proc/self/environ"},
                                                         "openai_api_base": httpserver.url_for("/v1")})
    secrets.KEY_FILES.forget()
    response = post_json(client, "/endpoints/old/invocations", CHAT_REQUEST)
    assert response.status_code >= 500
    assert "it is a file of the system, not a key file" in response.content.decode()
    assert httpserver.log == []
