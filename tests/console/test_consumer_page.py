"""A consumer's admin page: its keys with a revoke button each, a button to the key-creation flow that
shows a key once, and its spend this period against its budget."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from consumers.models import Consumer, GatewayKey
from consumers.services import create_key
from serving import budgets, counters
from serving.budgets import Budget
from tests.console.conftest import MakeStaff, entry, seed
from tests.consumers.conftest import MakeConsumer

pytestmark = pytest.mark.django_db


def page(client: Client, consumer: Consumer) -> Any:
    response = client.get(f"/admin/consumers/consumer/{consumer.pk}/change/")
    assert response.status_code == 200
    return response


def test_the_page_lists_the_keys_and_leads_to_the_key_creation_flow(staff_client: Client,
                                                                   make_consumer: MakeConsumer) -> None:
    team = make_consumer("search-team")
    active = create_key(team, name="prod").record
    revoked = create_key(team, name="old").record
    revoked.revoked_at = revoked.created_at
    revoked.save()
    html = page(staff_client, team).content.decode()
    assert f'href="/admin/consumers/gatewaykey/add/?consumer={team.pk}"' in html
    assert f'href="/admin/consumers/gatewaykey/{active.pk}/revoke/"' in html
    assert f'/admin/consumers/gatewaykey/{revoked.pk}/revoke/' not in html  # nothing left to revoke
    assert active.prefix in html and revoked.prefix in html

    form = staff_client.get(f"/admin/consumers/gatewaykey/add/?consumer={team.pk}")
    assert form.context["adminform"].form.initial["consumer"] == str(team.pk)
    created = staff_client.post("/admin/consumers/gatewaykey/add/", {"consumer": team.pk, "name": "playground",
                                                                     "expires_in": "1h"})
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    key = created.context["key"]
    assert key.startswith("gwk_") and key in created.content.decode()
    assert f'href="/admin/consumers/consumer/{team.pk}/change/"' in created.content.decode()  # "Done": back
    assert key not in page(staff_client, team).content.decode()  # shown once


def test_a_key_is_revoked_after_a_confirmation(staff_client: Client, make_consumer: MakeConsumer) -> None:
    team = make_consumer("search-team")
    record = create_key(team).record
    confirm = staff_client.get(f"/admin/consumers/gatewaykey/{record.pk}/revoke/")
    assert confirm.status_code == 200 and "Yes, revoke it" in confirm.content.decode()
    GatewayKey.objects.get(pk=record.pk).revoked_at is None  # noqa: B015  (a GET changes nothing)
    done = staff_client.post(f"/admin/consumers/gatewaykey/{record.pk}/revoke/")
    assert done.status_code == 302 and done["Location"] == f"/admin/consumers/consumer/{team.pk}/change/"
    assert GatewayKey.objects.get(pk=record.pk).state == "revoked"
    assert f"Key {record.prefix} revoked" in page(staff_client, team).content.decode()
    key_page = staff_client.get(f"/admin/consumers/gatewaykey/{record.pk}/change/").content.decode()
    assert 'id="revoke-key"' not in key_page


def test_revoking_needs_the_permission_to_change_keys(make_staff: MakeStaff, make_consumer: MakeConsumer) -> None:
    record = create_key(make_consumer("team")).record
    viewer = make_staff("consumers.view_gatewaykey", "consumers.view_consumer")
    assert viewer.post(f"/admin/consumers/gatewaykey/{record.pk}/revoke/").status_code == 403
    assert GatewayKey.objects.get(pk=record.pk).revoked_at is None


def test_the_key_page_has_a_revoke_button(staff_client: Client, make_consumer: MakeConsumer) -> None:
    record = create_key(make_consumer("team")).record
    html = staff_client.get(f"/admin/consumers/gatewaykey/{record.pk}/change/").content.decode()
    assert f'href="/admin/consumers/gatewaykey/{record.pk}/revoke/"' in html


def test_the_spend_this_period_and_the_budget(staff_client: Client, make_consumer: MakeConsumer) -> None:
    team = make_consumer("team", budget={"usd": 10, "period": "month", "action": "reject"},
                         limit={"calls": 100, "renewal_period": "hour"})
    seed([entry(1, consumer="team", cost=2_000_000_000_000), entry(2, consumer="other", cost=9_000_000_000_000)])
    win = budgets.window("c:team", Budget.of(Decimal("10"), "month", "reject"), time.time())
    counters.execute_blocking([("SET", win.key, 2_500_000_000_000)])
    response = page(staff_client, team)
    assert response.context["spend"] == {"day": Decimal(2), "week": Decimal(2), "month": Decimal(2)}
    state = response.context["budget"]
    assert (state.spent, state.ledger, state.percent) == (2_500_000_000_000, 2_000_000_000_000, 25.0)
    html = response.content.decode()
    assert '<dd data-spend="month">2</dd>' in html
    assert "$2.5 of $10</strong> this month (25.0 %)" in html
    assert response.context["limit"].description == "100 per 1 hour"


def test_a_consumer_without_a_budget_shows_its_spend_only(staff_client: Client, make_consumer: MakeConsumer) -> None:
    team = make_consumer("team")
    seed([entry(1, consumer="team", cost=1_000)])
    html = page(staff_client, team).content.decode()
    assert '<dd data-spend="day">0.000000001</dd>' in html and 'data-budget="none"' in html
