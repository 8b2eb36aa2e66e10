"""The management routes: health, docs, listings, legacy and traffic-route reads, JSON errors."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from drf_spectacular.validation import validate_schema

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_endpoints(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m-chat", limit={"calls": 10, "renewal_period": "minute"})
    make_endpoint("completions", COMPLETIONS, "mock", "m-comp")
    make_endpoint("embeddings", EMBEDDINGS, "mock", "m-emb")


def test_health_reports_ok_and_the_config_version(client: Any, three_endpoints: None) -> None:
    body = client.get("/health").json()
    assert body["status"] == "OK"
    assert isinstance(body["config_version"], int) and body["config_version"] > 0
    assert isinstance(body["pid"], int)


def test_root_redirects_to_the_docs_with_307(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 307
    assert response["Location"] == "/docs"


def test_docs_and_redoc_are_self_hosted(client: Any) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200
        html = response.content.decode()
        assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
        assert "/static/drf_spectacular_sidecar/" in html


def test_openapi_document_validates_and_documents_every_route(client: Any, three_endpoints: None) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)
    paths = schema["paths"]
    for expected in (
        "/health",
        "/api/2.0/endpoints/",
        "/api/2.0/endpoints/{name}",
        "/endpoints/{name}/invocations",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/endpoints/chat/invocations",
        "/endpoints/embeddings/invocations",
    ):
        assert expected in paths, expected
    chat_request = paths["/endpoints/chat/invocations"]["post"]["requestBody"]["content"]["application/json"]
    assert chat_request["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    components = schema["components"]["schemas"]
    assert components["ChatRequest"]["properties"]["temperature"]["anyOf"][0] == {
        "type": "number",
        "maximum": 2.0,
        "minimum": 0.0,
    }
    assert "messages" in components["ChatRequest"]["required"]
    assert "text/event-stream" in paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]


def test_listing_has_exactly_the_keys_the_mlflow_client_needs(client: Any, three_endpoints: None) -> None:
    body = client.get("/api/2.0/endpoints/").json()
    assert body["next_page_token"] is None
    assert body["endpoints"][0] == {
        "name": "chat",
        "endpoint_type": CHAT,
        "model": {"name": "m-chat", "provider": "mock"},
        "endpoint_url": "/endpoints/chat/invocations",
        "limit": {"calls": 10, "key": None, "renewal_period": "minute"},
    }
    assert body["endpoints"][1]["limit"] is None
    assert [e["name"] for e in body["endpoints"]] == ["chat", "completions", "embeddings"]


def test_listing_without_slash_redirects_with_307(client: Any) -> None:
    response = client.get("/api/2.0/endpoints?page_token=abc")
    assert response.status_code == 307
    assert response["Location"] == "/api/2.0/endpoints/?page_token=abc"


def test_listing_paginates_with_opaque_tokens(client: Any, three_endpoints: None, settings: Any) -> None:
    settings.GATEWAY_LIST_PAGE_SIZE = 2
    first = client.get("/api/2.0/endpoints/").json()
    assert [e["name"] for e in first["endpoints"]] == ["chat", "completions"]
    assert base64.b64decode(first["next_page_token"]) == b'{"index":2}'
    second = client.get("/api/2.0/endpoints/", {"page_token": first["next_page_token"]}).json()
    assert [e["name"] for e in second["endpoints"]] == ["embeddings"]
    assert second["next_page_token"] is None


@pytest.mark.parametrize(
    "token",
    [
        "not-base64!",
        base64.b64encode(b'{"index": -1}').decode(),
        base64.b64encode(b'{"index": "x"}').decode(),
        base64.b64encode(b"[1]").decode(),
        base64.b64encode(b"null").decode(),
    ],
)
def test_a_malformed_page_token_is_a_400_not_a_500(client: Any, token: str) -> None:
    response = client.get("/api/2.0/endpoints/", {"page_token": token})
    assert response.status_code == 400
    assert "page_token" in response.json()["detail"]


def test_get_endpoint_and_its_404(client: Any, three_endpoints: None) -> None:
    assert client.get("/api/2.0/endpoints/embeddings").json()["endpoint_type"] == EMBEDDINGS
    assert client.get("/api/3.0/gateway/endpoint/embeddings").json()["name"] == "embeddings"
    response = client.get("/api/2.0/endpoints/nope")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "The endpoint 'nope' is not present or active on the server. Please verify the endpoint name."
    }


def test_legacy_routes_listing_and_detail(client: Any, three_endpoints: None) -> None:
    body = client.get("/api/2.0/gateway/routes/").json()
    assert body["routes"][0] == {
        "name": "chat",
        "route_type": CHAT,
        "model": {"name": "m-chat", "provider": "mock"},
        "route_url": "/gateway/chat/invocations",
        "limit": {"calls": 10, "key": None, "renewal_period": "minute"},
    }
    assert client.get("/api/2.0/gateway/routes/chat").json()["route_type"] == CHAT
    missing = client.get("/api/2.0/gateway/routes/invalid")
    assert missing.status_code == 404
    assert "The route 'invalid' is not present" in missing.json()["detail"]


def test_disabled_endpoints_behave_as_absent(client: Any, make_endpoint: Any) -> None:
    make_endpoint("off", CHAT, "mock", "m", enabled=False)
    assert client.get("/api/2.0/endpoints/").json()["endpoints"] == []
    assert client.get("/api/2.0/endpoints/off").status_code == 404
    response = client.post(
        "/endpoints/off/invocations",
        data={"messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_limits_api_answers_501_like_mlflow(client: Any) -> None:
    assert client.get("/api/2.0/endpoints/limits/chat").json() == {"detail": "The get_limits API is not available yet."}
    response = client.post("/api/2.0/gateway/limits/", data={}, content_type="application/json")
    assert response.status_code == 501
    assert response.json() == {"detail": "The set_limits API is not available yet."}


def test_wrong_methods_and_unknown_urls_answer_json(client: Any, three_endpoints: None) -> None:
    response = client.get("/endpoints/chat/invocations")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    response = client.post("/api/2.0/endpoints/", data={}, content_type="application/json")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_v1_models_lists_endpoints_and_routes(client: Any, three_endpoints: None, tmp_path: Any) -> None:
    from endpoints_app.services import import_config

    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "endpoints": [
                    {"name": "a", "endpoint_type": CHAT, "model": {"provider": "mock", "name": "x", "config": {}}}
                ],
                "routes": [
                    {
                        "name": "split",
                        "task_type": CHAT,
                        "destinations": [
                            {"name": "a", "traffic_percentage": 50},
                            {"name": "chat", "traffic_percentage": 50},
                        ],
                    }
                ],
            }
        )
    )
    import_config(str(path))
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} == {"a", "chat", "completions", "embeddings", "split"}
    route = client.get("/api/3.0/gateway/route/split").json()
    assert route == {
        "name": "split",
        "task_type": CHAT,
        "routing_strategy": "TRAFFIC_SPLIT",
        "destinations": [{"name": "a", "traffic_percentage": 50}, {"name": "chat", "traffic_percentage": 50}],
    }
