"""Admin forms for consumers and keys: the same validator as YAML and the API."""

from __future__ import annotations

from typing import Any

from django import forms

from consumers import keys
from consumers.models import Consumer, GatewayKey
from consumers.services import callable_names, consumer_values
from endpoints_app.validation import ConsumerSpec, EntryError, validate_consumer

_FIELD_FOR = (("allow", "allow_text"), ("limit.calls", "limit_calls"), ("limit.renewal_period", "limit_renewal_period"),
              ("limit", "limit_calls"), ("token_limit.tokens", "token_limit_tokens"),
              ("token_limit.renewal_period", "token_limit_renewal_period"), ("token_limit", "token_limit_tokens"),
              ("name", "name"), ("description", "description"), ("budget.usd", "budget_usd"),
              ("budget.period", "budget_period"), ("budget.action", "budget_action"), ("budget", "budget_usd"))


def _form_field(path: str) -> str | None:
    for prefix, field in _FIELD_FOR:
        if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
            return field
    return None


class ConsumerForm(forms.ModelForm):
    allow_text = forms.CharField(
        label="May call", required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Endpoint and traffic route names, one per line or separated by commas; * for all of them.")

    class Meta:
        model = Consumer
        fields = ["name", "description", "enabled", "allow_text", "limit_calls", "limit_renewal_period",
                  "token_limit_tokens", "token_limit_renewal_period", "budget_usd", "budget_period", "budget_action"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["allow_text"] = "\n".join(self.instance.allow)
        self.spec: ConsumerSpec | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        allow = [item.strip() for line in (data.get("allow_text") or "").splitlines() for item in line.split(",")
                 if item.strip()]
        raw: dict[str, Any] = {"name": data.get("name"), "description": data.get("description") or "",
                               "enabled": bool(data.get("enabled")), "allow": allow}
        if data.get("limit_calls") is not None or data.get("limit_renewal_period"):
            raw["limit"] = {"calls": data.get("limit_calls"), "renewal_period": data.get("limit_renewal_period")}
        if data.get("token_limit_tokens") is not None or data.get("token_limit_renewal_period"):
            raw["token_limit"] = {"tokens": data.get("token_limit_tokens"),
                                  "renewal_period": data.get("token_limit_renewal_period")}
        if data.get("budget_usd") is not None or data.get("budget_period") or data.get("budget_action"):
            raw["budget"] = {"usd": data.get("budget_usd"), "period": data.get("budget_period") or "month",
                             "action": data.get("budget_action") or "reject"}
        try:
            self.spec = validate_consumer(raw, callable_names())
        except EntryError as exc:
            field = _form_field(exc.field)
            self.add_error(field, exc.message if field else f"{exc.field}: {exc.message}")
        return data

    def save(self, commit: bool = True) -> Consumer:
        consumer = super().save(commit=False)
        assert self.spec is not None
        for key, value in consumer_values(self.spec).items():
            setattr(consumer, key, value)
        if commit:
            consumer.save()
        return consumer


class NewKeyForm(forms.ModelForm):
    expires_in = forms.CharField(required=False, help_text="Lifetime from now: 30d, 12h, 90m, 2w. Empty: no expiry.")

    class Meta:
        model = GatewayKey
        fields = ["consumer", "name", "expires_in"]

    def clean_expires_in(self) -> Any:
        value = self.cleaned_data.get("expires_in")
        if not value:
            return None
        try:
            return keys.parse_duration(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
