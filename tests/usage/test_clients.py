"""The real clients through a live server: N calls (chat, stream, embeddings, refused) are exactly N usage
records with the right tokens and cost, and the report's totals are theirs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import openai
import pytest
from mlflow.deployments import get_deploy_client

from providers.shapes import CHAT, EMBEDDINGS
from tests.conftest import MakeConsumer
from tests.consumers.conftest import new_key
from usage import ledger
from usage.models import UsageRecord
from usage.reports import report

pytestmark = [pytest.mark.django_db(transaction=True)]

HI = [{"role": "user", "content": "Hi there"}]
COST = {"input_per_million_tokens": 3, "output_per_million_tokens": 15}


def test_n_calls_of_the_real_clients_are_n_records_and_the_report_adds_them_up(
        live_server: Any, make_endpoint: Any, make_consumer: MakeConsumer, settings: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GATEWAY_AUTH = "keys"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    make_endpoint("chat", CHAT, "mock", "mock-chat", cost=COST)
    make_endpoint("embed", EMBEDDINGS, "mock", "mock-embed", {"dimensions": 4},
                  cost={"input_per_million_tokens": "0.02", "output_per_million_tokens": 0})
    key = new_key(make_consumer("app", ["chat", "embed"], limit={"calls": 6, "renewal_period": "hour"}))
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(model="chat", messages=cast(Any, HI))
    list(sdk.chat.completions.create(model="chat", messages=cast(Any, HI), stream=True))
    sdk.embeddings.create(model="embed", input=["one two three"])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="nope", max_retries=0).chat.completions.create(
            model="chat", messages=cast(Any, HI))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    mlflow = get_deploy_client(live_server.url)
    mlflow.predict(endpoint="chat", inputs={"messages": HI})
    mlflow.predict(endpoint="embed", inputs={"input": "four five"})
    with pytest.raises(Exception, match="403"):
        mlflow.predict(endpoint="other", inputs={"messages": HI})
    mlflow.predict(endpoint="chat", inputs={"messages": HI})  # the 6th call of 6
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="chat", messages=cast(Any, HI))

    ledger.get().flush()
    records = list(UsageRecord.objects.order_by("id"))
    assert [(r.family, r.name, r.status, r.stream) for r in records] == [
        ("v1", "chat", 200, False), ("v1", "chat", 200, True), ("v1", "embed", 200, False), ("v1", "", 401, False),
        ("endpoints", "chat", 200, False), ("endpoints", "embed", 200, False), ("endpoints", "other", 403, False),
        ("endpoints", "chat", 200, False), ("v1", "chat", 429, False)]
    chats = [r for r in records if r.name == "chat" and r.status == 200]
    assert all((r.prompt_tokens, r.completion_tokens, r.total_tokens) == (2, 3, 5) for r in chats)
    assert all(r.cost_picousd == 2 * 3_000_000 + 3 * 15_000_000 for r in chats)
    embeds = [r for r in records if r.name == "embed"]
    assert [(r.prompt_tokens, r.cost_picousd) for r in embeds] == [(3, 3 * 20_000), (2, 2 * 20_000)]
    assert {r.consumer for r in records if r.status != 401} == {"app"}
    rows = report(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1), "consumer")
    totals = {row["consumer"]: row for row in rows}
    assert totals["app"]["requests"] == 8 and totals[""]["requests"] == 1
    assert sum(row["requests"] for row in rows) == len(records)
    assert sum(row["errors"] for row in rows) == 3
    assert sum(row["total_tokens"] for row in rows) == sum(r.total_tokens or 0 for r in records)
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(float(sum(r.cost_usd for r in records)), abs=1e-12)
