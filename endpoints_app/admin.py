"""The Django admin: operators list, search, filter, create, edit, enable/disable and delete."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from endpoints_app.forms import DestinationFormSet, EndpointForm, TrafficRouteForm
from endpoints_app.models import Endpoint, Source, TrafficDestination, TrafficRoute
from providers import config as provider_config
from providers import registry


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("name", "endpoint_type", "provider", "model_name", "enabled", "limit_display", "source",
                    "updated_at")
    list_filter = ("endpoint_type", "provider", "enabled", "source")
    search_fields = ("name", "model_name", "provider")
    list_editable = ("enabled",)
    readonly_fields = ("secrets_status", "source", "source_path", "created_at", "updated_at")
    actions = ("enable", "disable")
    fieldsets = (
        (None, {"fields": ("name", "endpoint_type", "enabled")}),
        ("Model", {"fields": ("provider", "model_name", "config_text", "secrets_status")}),
        ("Rate limit", {"fields": ("limit_calls", "limit_renewal_period", "limit_key"),
                        "description": "Calls per period, e.g. 100 per 'minute' or '5 minutes'. Empty: no limit."}),
        ("Cost and budget", {"fields": ("cost_input_per_million", "cost_output_per_million", "budget_usd",
                                        "budget_period", "budget_action"),
                             "description": "Prices in USD per million tokens (empty: the built-in list price of the "
                                            "model, if known). A budget caps the spend per UTC day, week or month."}),
        ("Upstream", {"fields": ("connect_timeout", "read_timeout", "total_timeout", "max_retries")}),
        ("Requests", {"fields": ("params_text",)}),
        ("Origin", {"fields": ("source", "source_path", "created_at", "updated_at")}),
    )

    @admin.display(description="limit")
    def limit_display(self, obj: Endpoint) -> str:
        return f"{obj.limit_calls} / {obj.limit_renewal_period}" if obj.has_limit else "—"

    @admin.display(description="Secrets")
    def secrets_status(self, obj: Endpoint) -> str:
        try:
            cls = registry.get(obj.provider)
        except registry.UnknownProvider:
            return "—"
        described = provider_config.describe(cls.config_class.fields, obj.config or {})
        rows = []
        for path in cls.config_class.secret_paths():
            value: Any = described
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            rows.append((path, value or "not set"))
        if not rows:
            return "This provider takes no secrets."
        return format_html_join("", "<div><code>{}</code>: {}</div>", rows)

    def save_model(self, request: HttpRequest, obj: Endpoint, form: Any, change: bool) -> None:
        if not change:
            obj.source = Source.ADMIN
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected endpoints")
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected endpoints")
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Endpoint], enabled: bool) -> None:
        count = 0
        for endpoint in queryset:  # save() per row so the change signals fire
            if endpoint.enabled != enabled:
                endpoint.enabled = enabled
                endpoint.save(update_fields=["enabled", "updated_at"])
                count += 1
        self.message_user(request, f"{count} endpoint(s) {'enabled' if enabled else 'disabled'}.", messages.SUCCESS)


class DestinationInline(admin.TabularInline):
    model = TrafficDestination
    formset = DestinationFormSet
    extra = 1
    fields = ("endpoint", "traffic_percentage", "position")


@admin.register(TrafficRoute)
class TrafficRouteAdmin(admin.ModelAdmin):
    form = TrafficRouteForm
    inlines = (DestinationInline,)
    list_display = ("name", "task_type", "routing_strategy", "enabled", "source", "updated_at")
    list_filter = ("task_type", "routing_strategy", "enabled", "source")
    search_fields = ("name",)
    readonly_fields = ("source", "source_path", "created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: TrafficRoute, form: Any, change: bool) -> None:
        if not change:
            obj.source = Source.ADMIN
        super().save_model(request, obj, form, change)
