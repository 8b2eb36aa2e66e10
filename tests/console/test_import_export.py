"""YAML in the admin: an upload is validated and dry-run (errors at their entry, field and line; the
changes, with secrets hidden), then applied in one transaction from what the preview carried; and the
export downloads as a file."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from console import importing
from consumers.models import Consumer
from endpoints_app.models import Endpoint, Source, TrafficRoute
from endpoints_app.services import import_config
from providers.secrets import PLACEHOLDER
from providers.shapes import CHAT
from tests.conftest import MakeEndpoint
from tests.console.conftest import MakeStaff

pytestmark = pytest.mark.django_db
IMPORT = "/admin/console/import/"
OLD_KEY = "sk-old-literal-never-shown-1a2b"
NEW_KEY = "sk-new-literal-never-shown-3c4d"

VALID = f"""\
endpoints:
  - name: chat
    endpoint_type: llm/v1/chat
    model:
      provider: openai
      name: gpt-4o
      config:
        openai_api_key: {NEW_KEY}
    limit: {{calls: 10, renewal_period: minute}}
  - name: fresh
    endpoint_type: llm/v1/chat
    model: {{provider: mock, name: mock-chat, config: {{}}}}
routes:
  - name: split
    task_type: llm/v1/chat
    destinations:
      - {{name: chat, traffic_percentage: 50}}
      - {{name: fresh, traffic_percentage: 50}}
consumers:
  - name: search-team
    allow: [split]
"""

INVALID = """\
endpoints:
  - name: fine
    endpoint_type: llm/v1/chat
    model: {provider: mock, config: {}}
  - name: broken
    endpoint_type: llm/v1/chat
    model:
      provider: mock
      config:
        latency_ms: fast
routes:
  - name: split
    task_type: llm/v1/chat
    destinations:
      - name: fine
        traffic_percentage: 150
consumers:
  - name: team
    alow: [fine]
"""


def upload(client: Client, text: str, name: str = "gateway.yaml", **fields: Any) -> Any:
    return client.post(IMPORT, {"file": SimpleUploadedFile(name, text.encode()), **fields})


def hidden(response: Any) -> dict[str, str]:
    html = response.content.decode()
    form = html[html.index('id="console-apply-form"'):]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))


@pytest.fixture
def chat(make_endpoint: MakeEndpoint) -> Endpoint:
    return make_endpoint("chat", CHAT, "openai", "gpt-4o-mini", config={"openai_api_key": OLD_KEY})


def snapshot() -> list[Any]:
    return [list(Endpoint.objects.values()), list(TrafficRoute.objects.values()), list(Consumer.objects.values())]


def test_importing_needs_the_permissions_to_change_the_config(make_staff: MakeStaff) -> None:
    assert make_staff("endpoints_app.view_endpoint").get(IMPORT).status_code == 403
    editor = make_staff(*(f"{app}.{action}_{model}" for app, model in (
        ("endpoints_app", "endpoint"), ("endpoints_app", "trafficroute"), ("consumers", "consumer"))
        for action in ("add", "change")))
    assert editor.get(IMPORT).status_code == 200
    assert upload(editor, VALID, prune="on").status_code == 403  # prune deletes: it needs the delete permissions


def test_every_error_is_shown_at_its_entry_field_and_line_and_nothing_changes(staff_client: Client,
                                                                             chat: Endpoint) -> None:
    before = snapshot()
    response = upload(staff_client, INVALID)
    assert response.status_code == 200
    preview = response.context["preview"]
    assert not preview.valid and preview.token == "" and response.context["apply_form"] is None
    placed = [(group.location, group.line, [(i.field, i.line) for i in group.issues]) for group in preview.issues]
    assert placed == [
        ("endpoints[1] 'broken'", 5, [("model.config.latency_ms", 10)]),
        ("routes[0] 'split'", 12, [("destinations[0].traffic_percentage", 16)]),
        ("consumers[0] 'team'", 18, [("alow", 19)]),
    ]
    html = response.content.decode()
    assert 'data-location="endpoints[1] &#x27;broken&#x27;" data-field="model.config.latency_ms"' in html
    assert "must be a number" in html and 'id="console-apply-form"' not in html
    assert snapshot() == before


def test_a_file_that_is_not_yaml_is_one_issue_at_its_line(staff_client: Client) -> None:
    preview = upload(staff_client, "endpoints:\n  - name: [unclosed\n").context["preview"]
    assert len(preview.issues) == 1 and preview.issues[0].location == ""
    assert "not a valid YAML file (line 3" in preview.issues[0].issues[0].message


def test_a_valid_file_is_previewed_then_applied(staff_client: Client, chat: Endpoint) -> None:
    before = snapshot()
    response = upload(staff_client, VALID)
    preview = response.context["preview"]
    assert preview.valid and snapshot() == before  # a dry run
    assert [(e.kind, e.name) for e in preview.created] == [
        ("endpoint", "fresh"), ("route", "split"), ("consumer", "search-team")]
    [updated] = preview.updated
    assert (updated.kind, updated.name) == ("endpoint", "chat")
    assert [(c.path, c.old, c.new) for c in updated.changes] == [
        ("model.name", "gpt-4o-mini", "gpt-4o"),
        ("limit.calls", "—", "10"),
        ("limit.renewal_period", "—", "minute"),
        ("model.config.openai_api_key", "(a stored secret)", "(a new secret, not shown)"),
        ("(loaded from)", "the admin", "/admin-upload/gateway.yaml"),
    ]
    html = response.content.decode()
    assert OLD_KEY not in html and NEW_KEY not in html  # not in the diff, nor in what the page carries
    assert 'id="console-apply-form"' in html

    applied = staff_client.post(IMPORT, {**hidden(response), "apply": "Apply"}, follow=True)
    assert applied.redirect_chain == [(IMPORT, 302)]
    message = [str(m) for m in applied.context["messages"]]
    assert message == ["Applied /admin-upload/gateway.yaml: 3 created (fresh, split, consumer search-team), "
                       "1 updated (chat), 0 deleted; 0 unchanged."]
    chat.refresh_from_db()
    assert (chat.model_name, chat.limit_calls, chat.source, chat.source_path) == (
        "gpt-4o", 10, Source.YAML, "/admin-upload/gateway.yaml")
    assert set(Endpoint.objects.values_list("name", flat=True)) == {"chat", "fresh"}
    assert [d.endpoint.name for d in TrafficRoute.objects.get(name="split").destinations.all()] == ["chat", "fresh"]
    assert Consumer.objects.get(name="search-team").allow == ["split"]

    again = upload(staff_client, VALID).context["preview"]
    assert not again.changed and [e.name for e in again.unchanged] == ["chat", "fresh", "split", "search-team"]


def test_the_carried_text_cannot_be_changed_on_the_way(staff_client: Client, chat: Endpoint) -> None:
    fields = hidden(upload(staff_client, VALID))
    before = snapshot()
    tampered = VALID.replace("calls: 10", "calls: 99999")
    for forged in ({"text": importing.seal(tampered)}, {"prune": "True"}, {"source": "/etc/gateway.yaml"},
                   {"text": "not a sealed text"}, {"token": fields["token"] + "x"}):
        response = staff_client.post(IMPORT, {**fields, **forged, "apply": "Apply"}, follow=True)
        assert [m.level_tag for m in response.context["messages"]] == ["error"]
    assert snapshot() == before


def test_someone_else_cannot_apply_my_preview(staff_client: Client, chat: Endpoint, django_user_model: Any) -> None:
    fields = hidden(upload(staff_client, VALID))
    other = Client()
    other.force_login(django_user_model.objects.create_superuser("other", password="x"))
    response = other.post(IMPORT, {**fields, "apply": "Apply"}, follow=True)
    assert "differ from those previewed" in str(next(iter(response.context["messages"])))
    assert not Endpoint.objects.filter(name="fresh").exists()


def test_a_config_that_changed_since_the_preview_is_previewed_again(staff_client: Client, chat: Endpoint,
                                                                   make_endpoint: MakeEndpoint) -> None:
    fields = hidden(upload(staff_client, VALID))
    make_endpoint("meanwhile", CHAT, "mock", "m")
    response = staff_client.post(IMPORT, {**fields, "apply": "Apply"})
    assert response.status_code == 200 and response.context["preview"].valid
    assert "changed since this preview" in str(next(iter(response.context["messages"])))
    assert not Endpoint.objects.filter(name="fresh").exists()
    staff_client.post(IMPORT, {**hidden(response), "apply": "Apply"})
    assert Endpoint.objects.filter(name="fresh").exists()


def test_a_file_no_longer_valid_at_apply_time_changes_nothing(staff_client: Client, chat: Endpoint,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fields = hidden(upload(staff_client, VALID))
    from endpoints_app.validation import ConfigError, Issue

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError([Issue("endpoints[1] 'fresh'", "name", "taken meanwhile")])

    monkeypatch.setattr(importing, "validate_text", refuse)
    response = staff_client.post(IMPORT, {**fields, "apply": "Apply"})
    assert [g.location for g in response.context["preview"].issues] == ["endpoints[1] 'fresh'"]
    assert not Endpoint.objects.filter(name="fresh").exists()


def test_prune_deletes_what_the_same_file_made_before(staff_client: Client, make_endpoint: MakeEndpoint,
                                                      tmp_path: Any) -> None:
    make_endpoint("handmade", CHAT, "mock", "m")
    path = tmp_path / "server.yaml"
    path.write_text("endpoints:\n  - {name: a, endpoint_type: llm/v1/chat, model: {provider: mock, config: {}}}\n"
                    "  - {name: b, endpoint_type: llm/v1/chat, model: {provider: mock, config: {}}}\n")
    import_config(str(path))
    form = staff_client.get(IMPORT).context["form"]
    assert (str(path), str(path)) in form.fields["source"].choices  # a file the server loaded
    response = upload(staff_client, "endpoints:\n  - {name: a, endpoint_type: llm/v1/chat, model: {provider: mock, "
                                    "config: {}}}\n", source=str(path), prune="on")
    preview = response.context["preview"]
    assert [(e.kind, e.name) for e in preview.deleted] == [("endpoint", "b")]
    assert [e.name for e in preview.unchanged] == ["a"]
    staff_client.post(IMPORT, {**hidden(response), "apply": "Apply"})
    assert set(Endpoint.objects.values_list("name", flat=True)) == {"a", "handmade"}


def test_an_upload_is_named_after_its_file() -> None:
    assert importing.upload_source("C:\\Users\\me\\prod config.yaml") == "/admin-upload/prod_config.yaml"
    assert importing.upload_source("../../etc/passwd") == "/admin-upload/passwd"
    assert importing.upload_source("") == "/admin-upload/config.yaml"


def test_a_large_or_binary_file_is_refused(staff_client: Client) -> None:
    assert "larger than" in upload(staff_client, "#" * (importing.MAX_BYTES + 1)).content.decode()
    response = staff_client.post(IMPORT, {"file": SimpleUploadedFile("x.yaml", b"\xff\xfe\x00")})
    assert "not UTF-8" in response.content.decode()


def test_download_is_the_export_as_a_file(staff_client: Client, chat: Endpoint) -> None:
    response = staff_client.get("/admin/console/export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="gateway-config-\d{8}-\d{6}\.yaml"', response["Content-Disposition"])
    body = response.content.decode()
    assert OLD_KEY not in body
    document = yaml.safe_load(body)
    assert document["endpoints"][0]["model"]["config"] == {"openai_api_key": PLACEHOLDER}


def test_download_needs_the_permission_to_view_the_config(make_staff: MakeStaff) -> None:
    assert make_staff("endpoints_app.view_endpoint").get("/admin/console/export/").status_code == 403
    viewer = make_staff("endpoints_app.view_endpoint", "endpoints_app.view_trafficroute", "consumers.view_consumer")
    assert viewer.get("/admin/console/export/").status_code == 200
