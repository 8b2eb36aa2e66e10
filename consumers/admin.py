"""Consumers and their keys in the admin: a key is made from its consumer and shown once, on the page
that answers the form (never stored in clear, not even in a session message); revoking is an action."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from consumers.forms import ConsumerForm, NewKeyForm
from consumers.models import Consumer, GatewayKey
from consumers.services import create_key, revoke_key
from endpoints_app.models import Source


class KeyInline(admin.TabularInline):
    model = GatewayKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "state", "created_at", "expires_at", "revoked_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="state")
    def state(self, obj: GatewayKey) -> str:
        return obj.state


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):
    form = ConsumerForm
    inlines = (KeyInline,)
    list_display = ("name", "enabled", "allowed", "limit_display", "token_limit_display", "source", "updated_at")
    list_filter = ("enabled", "source")
    search_fields = ("name", "description")
    list_editable = ("enabled",)
    readonly_fields = ("source", "source_path", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "allow_text")}),
        ("Limits", {"fields": ("limit_calls", "limit_renewal_period", "token_limit_tokens",
                               "token_limit_renewal_period"),
                    "description": "Calls and tokens per period (e.g. 'minute', '5 minutes', 'day'), on top of the "
                                   "endpoints' own limits. Empty: no limit."}),
        ("Budget", {"fields": ("budget_usd", "budget_period", "budget_action"),
                    "description": "A ceiling on what this consumer spends per UTC day, week or month, on every "
                                   "endpoint it calls. Empty: none."}),
        ("Origin", {"fields": ("source", "source_path", "created_at", "updated_at")}),
    )

    @admin.display(description="may call")
    def allowed(self, obj: Consumer) -> str:
        return ", ".join(obj.allow) or "nothing"

    @admin.display(description="limit")
    def limit_display(self, obj: Consumer) -> str:
        return f"{obj.limit_calls} / {obj.limit_renewal_period}" if obj.has_limit else "—"

    @admin.display(description="token limit")
    def token_limit_display(self, obj: Consumer) -> str:
        return f"{obj.token_limit_tokens} / {obj.token_limit_renewal_period}" if obj.has_token_limit else "—"

    def save_model(self, request: HttpRequest, obj: Consumer, form: Any, change: bool) -> None:
        if not change:
            obj.source = Source.ADMIN
        super().save_model(request, obj, form, change)


@admin.register(GatewayKey)
class GatewayKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "consumer", "name", "state", "created_at", "expires_at", "revoked_at", "created_by")
    list_filter = ("consumer", "revoked_at")
    search_fields = ("prefix", "name", "consumer__name")
    actions = ("revoke",)
    readonly_fields = ("prefix", "consumer", "name", "state", "created_at", "expires_at", "revoked_at", "created_by")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = NewKeyForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ("consumer", "name", "expires_in")

    @admin.display(description="state")
    def state(self, obj: GatewayKey) -> str:
        return obj.state

    def save_model(self, request: HttpRequest, obj: GatewayKey, form: Any, change: bool) -> None:
        if change:
            return  # a key's stored fields never change; revoke it instead
        user = getattr(request, "user", None)
        issued = create_key(form.cleaned_data["consumer"], name=form.cleaned_data.get("name") or "",
                            expires_in=form.cleaned_data.get("expires_in"),
                            created_by=f"admin:{getattr(user, 'username', '')}")
        obj.pk = issued.record.pk
        obj.prefix = issued.record.prefix
        request._issued_key = issued  # type: ignore[attr-defined]  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: GatewayKey, post_url_continue: str | None = None
                     ) -> HttpResponse:
        """Show the new key once, on this answer; it is not stored anywhere in clear."""
        issued = request._issued_key  # type: ignore[attr-defined]
        context = {**self.admin_site.each_context(request), "title": "Gateway key created", "key": issued.key,
                   "record": issued.record, "opts": self.model._meta}
        response = TemplateResponse(request, "admin/consumers/key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[GatewayKey]) -> None:
        count = 0
        for record in queryset.filter(revoked_at__isnull=True):
            revoke_key(record.prefix)
            count += 1
        self.message_user(request, f"{count} key(s) revoked at {timezone.now():%H:%M:%S} UTC; every worker refuses "
                          "them within a second.", messages.SUCCESS)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the prefix stays in the records
