"""Admin forms. They build the same definition a YAML entry is and run the same validator."""
from __future__ import annotations

from typing import Any

import yaml
from django import forms
from django.core.exceptions import ValidationError

from endpoints_app.configfile import load_yaml
from endpoints_app.models import Endpoint, TrafficRoute
from endpoints_app.services import endpoint_columns, endpoint_conflicts
from endpoints_app.validation import (
    EndpointSpec,
    EntryError,
    validate_endpoint,
    validate_fallback_on,
    validate_route,
)
from providers import config as provider_config
from providers import registry

CONFIG_HELP = (
    "The provider's <code>model.config</code> as YAML, exactly as in a config file. Write API keys as "
    "<code>$ENV_VAR</code> references, key-file paths, or literal keys (stored encrypted). A stored literal "
    "key is shown as a placeholder: leave the placeholder to keep it."
)

# Which form field shows an error about which part of the definition.
_FIELD_FOR_PREFIX = (
    ("model.config", "config_text"), ("model.provider", "provider"), ("model.name", "model_name"),
    ("model", "config_text"), ("limit.calls", "limit_calls"), ("limit.renewal_period", "limit_renewal_period"),
    ("limit", "limit_calls"), ("timeouts.connect", "connect_timeout"), ("timeouts.read", "read_timeout"),
    ("timeouts.total", "total_timeout"), ("timeouts.retries", "max_retries"), ("endpoint_type", "endpoint_type"),
    ("name", "name"), ("cost.input_per_million_tokens", "cost_input_per_million"),
    ("cost.output_per_million_tokens", "cost_output_per_million"), ("cost", "cost_input_per_million"),
    ("budget.usd", "budget_usd"), ("budget.period", "budget_period"), ("budget.action", "budget_action"),
    ("budget", "budget_usd"), ("params", "params_text"),
)
PARAMS_HELP = ("What this endpoint does to requests before the provider sees them, as YAML: "
               "<code>defaults: {temperature: 0.2}</code>, <code>max: {max_tokens: 1024}</code>, "
               "<code>deny: [logit_bias]</code>, <code>on_max: clamp</code> (or <code>reject</code>: a 400).")


def _form_field(path: str) -> str | None:
    for prefix, form_field in _FIELD_FOR_PREFIX:
        if path == prefix or path.startswith(prefix + "."):
            return form_field
    return None


class EndpointForm(forms.ModelForm):
    provider = forms.ChoiceField(choices=registry.choices)
    config_text = forms.CharField(label="Provider config", required=False, help_text=CONFIG_HELP,
                                  widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "class": "vLargeTextField"}))
    params_text = forms.CharField(label="Params", required=False, help_text=PARAMS_HELP,
                                  widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "class": "vLargeTextField"}))

    class Meta:
        model = Endpoint
        fields = ["name", "endpoint_type", "provider", "model_name", "config_text", "limit_calls",
                  "limit_renewal_period", "limit_key", "connect_timeout", "read_timeout", "total_timeout",
                  "max_retries", "cost_input_per_million", "cost_output_per_million", "budget_usd", "budget_period",
                  "budget_action", "params_text", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.pk and not self.is_bound:
            try:
                fields = registry.get(instance.provider).config_class.fields
                shown = provider_config.export(fields, instance.config, reveal=False)
            except registry.UnknownProvider:
                shown = {}
            self.initial["config_text"] = yaml.safe_dump(shown, sort_keys=False).strip() if shown else ""
            if instance.params:
                self.initial["params_text"] = yaml.safe_dump(instance.params, sort_keys=False).strip()
        self.spec: EndpointSpec | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        config = _yaml_field(self, "config_text")
        params = _yaml_field(self, "params_text")
        if config is _INVALID or params is _INVALID:
            return data
        config = config or {}
        raw: dict[str, Any] = {
            "name": data.get("name"),
            "endpoint_type": data.get("endpoint_type"),
            "model": {"provider": data.get("provider"), "name": data.get("model_name") or None, "config": config},
            "enabled": bool(data.get("enabled")),
        }
        if data.get("limit_calls") is not None or data.get("limit_renewal_period"):
            raw["limit"] = {"calls": data.get("limit_calls"), "renewal_period": data.get("limit_renewal_period"),
                            "key": data.get("limit_key") or None}
        timeouts = {k: data.get(f) for k, f in (("connect", "connect_timeout"), ("read", "read_timeout"),
                                               ("total", "total_timeout"), ("retries", "max_retries"))
                    if data.get(f) is not None}
        if timeouts:
            raw["timeouts"] = timeouts
        if data.get("cost_input_per_million") is not None or data.get("cost_output_per_million") is not None:
            raw["cost"] = {"input_per_million_tokens": data.get("cost_input_per_million"),
                           "output_per_million_tokens": data.get("cost_output_per_million")}
        if data.get("budget_usd") is not None or data.get("budget_period") or data.get("budget_action"):
            raw["budget"] = {"usd": data.get("budget_usd"), "period": data.get("budget_period") or "month",
                             "action": data.get("budget_action") or "reject"}
        if params:
            raw["params"] = params
        try:
            spec, _ = validate_endpoint(raw, existing_config=self.instance.config if self.instance.pk else None)
        except EntryError as exc:
            field = _form_field(exc.field)
            message = f"{exc.field}: {exc.message}" if field in (None, "config_text") and exc.field else exc.message
            self.add_error(field, message)
            return data
        for field, message in endpoint_conflicts(spec, self.instance if self.instance.pk else None):
            if field != "name" or "traffic route" in message:  # the name's own uniqueness is the model form's
                self.add_error(field, message)
        self.spec = spec
        return data

    def save(self, commit: bool = True) -> Endpoint:
        endpoint = super().save(commit=False)
        spec = self.spec
        assert spec is not None
        # What the validator accepted, in the form YAML import stores (e.g. the period trimmed).
        for key, value in endpoint_columns(spec).items():
            setattr(endpoint, key, value)
        if commit:
            endpoint.save()
        return endpoint


_INVALID = object()


def _yaml_field(form: forms.ModelForm, name: str) -> Any:
    """A YAML text field's value (None when empty), or _INVALID after adding the error to the form."""
    try:
        return load_yaml(form.cleaned_data.get(name) or "") or None
    except yaml.YAMLError as exc:
        # Not str(exc): it quotes the offending line, which may hold a key.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        form.add_error(name, f"Not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}")
        return _INVALID


class TrafficRouteForm(forms.ModelForm):
    fallback_on_text = forms.CharField(
        label="Fall back on", required=False,
        help_text="FALLBACK routes: what moves on to the next destination, separated by commas: connect, timeout, "
                  "5xx and statuses such as 429 or 401. Empty: connect, timeout, 429, 5xx.")

    class Meta:
        model = TrafficRoute
        fields = ["name", "task_type", "routing_strategy", "fallback_on_text", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound and self.instance.fallback_on:
            self.initial["fallback_on_text"] = ", ".join(self.instance.fallback_on)

    def clean_fallback_on_text(self) -> str:
        text = self.cleaned_data.get("fallback_on_text") or ""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items:
            try:
                self.instance.fallback_on = list(validate_fallback_on(items))
            except EntryError as exc:
                raise ValidationError(exc.message) from None
        else:
            self.instance.fallback_on = []
        return text

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Endpoint.objects.filter(name=name).exists():
            raise ValidationError(f"An endpoint is already named {name!r}: names must be unique across endpoints "
                                  "and routes.")
        return name


class DestinationFormSet(forms.BaseInlineFormSet):
    """Checks the destinations with the YAML validator's route rules."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        route_form_data = getattr(self.instance, "name", None)
        destinations = []
        for form in self.forms:
            if not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            endpoint = form.cleaned_data.get("endpoint")
            destinations.append({"name": endpoint.name if endpoint else None,
                                 "traffic_percentage": form.cleaned_data.get("traffic_percentage")})
        types = dict(Endpoint.objects.values_list("name", "endpoint_type"))
        raw: dict[str, Any] = {"name": route_form_data or "route", "task_type": self.instance.task_type,
                               "destinations": destinations, "routing_strategy": self.instance.routing_strategy}
        if self.instance.routing_strategy == "FALLBACK":
            for destination in destinations:
                destination.pop("traffic_percentage", None)  # the order is what counts
        try:
            validate_route(raw, types)
        except EntryError as exc:
            raise ValidationError(exc.message) from None
