"""Consumers and their keys in the admin: a key is made from its consumer and shown once, on the page
that answers the form (never stored in clear, not even in a session message); revoking is an action on
the list of keys, or a button on a key's row of its consumer's page (a confirmation page, then a POST)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from consumers.forms import ConsumerForm, NewKeyForm
from consumers.models import Consumer, GatewayKey
from consumers.services import create_key, revoke_key
from endpoints_app.models import Source


class KeyInline(admin.TabularInline):
    model = GatewayKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "state", "created_at", "expires_at", "revoked_at", "revoke")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="state")
    def state(self, obj: GatewayKey) -> str:
        return obj.state

    @admin.display(description="")
    def revoke(self, obj: GatewayKey) -> str:
        if obj.pk is None or obj.revoked_at is not None:
            return ""
        return format_html('<a href="{}" class="deletelink">Revoke</a>',
                           reverse("admin:consumers_gatewaykey_revoke", args=[obj.pk]))


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

    def get_urls(self) -> list[URLPattern]:
        return [path("<int:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view),
                     name="consumers_gatewaykey_revoke"), *super().get_urls()]

    def revoke_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """One key: a confirmation page, then (POST) revoked; back to its consumer's page."""
        record = get_object_or_404(GatewayKey.objects.select_related("consumer"), pk=object_id)
        if not self.has_change_permission(request, record):
            raise PermissionDenied
        back = reverse("admin:consumers_consumer_change", args=[record.consumer_id])
        if request.method == "POST":
            if record.revoked_at is None:
                revoke_key(record.prefix)
                self.message_user(request, f"Key {record.prefix} revoked at {timezone.now():%H:%M:%S} UTC; every "
                                  "worker refuses it within a second.", messages.SUCCESS)
            return HttpResponseRedirect(back)
        context = {**self.admin_site.each_context(request), "title": f"Revoke the key {record.prefix}?",
                   "record": record, "opts": self.model._meta, "back": back}
        return TemplateResponse(request, "admin/consumers/key_revoke.html", context)

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> HttpResponse:
        if obj is not None and obj.revoked_at is None and self.has_change_permission(request, obj):
            context["revoke_url"] = reverse("admin:consumers_gatewaykey_revoke", args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)

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
