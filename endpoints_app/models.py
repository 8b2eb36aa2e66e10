"""Endpoints and traffic routes: the rows that YAML, the admin and the API all show."""
from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from providers.shapes import ENDPOINT_TYPES

# The one pattern of endpoint, route and consumer names: the URL routes and the validators all use it.
NAME_CHARS = r"[a-zA-Z0-9_.\-]+"
NAME_PATTERN = rf"^{NAME_CHARS}\Z"
name_validator = RegexValidator(
    NAME_PATTERN, "Names may contain only ASCII letters, digits, '_', '-' and '.' (they become part of a URL)."
)
ENDPOINT_TYPE_CHOICES = [(t, t) for t in ENDPOINT_TYPES]
# Column sizes of the strings a config document sets: the models and the validator (endpoints_app.validation)
# both read them, so an overlong value is a validation error on every database, never a DataError.
NAME_MAX_LENGTH = 255  # endpoint, traffic route and consumer names
MODEL_NAME_MAX_LENGTH = 255
LIMIT_KEY_MAX_LENGTH = 255
RENEWAL_PERIOD_MAX_LENGTH = 32
SOURCE_PATH_MAX_LENGTH = 1024


class BudgetPeriod(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class BudgetAction(models.TextChoices):
    REJECT = "reject", "reject calls (429 budget_exceeded)"
    ALERT = "alert", "alert only (log and webhook)"


class Budgeted(models.Model):
    """A `budget: {usd, period, action}`: endpoints and consumers each may have one."""

    budget_usd = models.DecimalField("budget (USD)", max_digits=16, decimal_places=6, null=True, blank=True,
                                     help_text="Spend ceiling per period, in US dollars. Empty: no budget.")
    budget_period = models.CharField(max_length=8, choices=BudgetPeriod.choices, blank=True, default="",
                                     help_text="Renews at UTC boundaries (weeks start on Monday).")
    budget_action = models.CharField(max_length=8, choices=BudgetAction.choices, blank=True, default="")

    class Meta:
        abstract = True

    @property
    def has_budget(self) -> bool:
        return self.budget_usd is not None and bool(self.budget_period)


class Source(models.TextChoices):
    YAML = "yaml", "YAML file"
    ADMIN = "admin", "Admin"


class Endpoint(Budgeted):
    name = models.CharField(max_length=NAME_MAX_LENGTH, unique=True, validators=[name_validator])
    endpoint_type = models.CharField(max_length=32, choices=ENDPOINT_TYPE_CHOICES)
    # Validated against providers.registry (no choices here, so a new provider needs no migration).
    provider = models.CharField(max_length=64)
    model_name = models.CharField("upstream model", max_length=MODEL_NAME_MAX_LENGTH, blank=True, null=True)
    # The provider config in stored form: secrets as {"$env"|"$file"|"$enc": ...}, never in clear.
    config = models.JSONField(default=dict, blank=True)
    limit_calls = models.PositiveIntegerField(null=True, blank=True)
    limit_renewal_period = models.CharField(max_length=RENEWAL_PERIOD_MAX_LENGTH, blank=True, default="")
    limit_key = models.CharField(max_length=LIMIT_KEY_MAX_LENGTH, blank=True, null=True)
    connect_timeout = models.FloatField(null=True, blank=True, help_text="Seconds; empty for the default.")
    read_timeout = models.FloatField(null=True, blank=True, help_text="Seconds (idle time for streams).")
    total_timeout = models.FloatField(null=True, blank=True,
                                      help_text="Seconds for the whole call, retries included (a stream: until its "
                                                "first byte). Empty: the read timeout.")
    max_retries = models.PositiveSmallIntegerField(null=True, blank=True)
    params = models.JSONField(default=dict, blank=True,
                              help_text="{defaults: {...}, max: {...}, deny: [...], on_max: clamp|reject}")
    cost_input_per_million = models.DecimalField("input USD per million tokens", max_digits=16, decimal_places=6,
                                                 null=True, blank=True,
                                                 help_text="Empty: the built-in list price of the model, if known.")
    cost_output_per_million = models.DecimalField("output USD per million tokens", max_digits=16, decimal_places=6,
                                                  null=True, blank=True)
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.ADMIN)
    source_path = models.CharField(max_length=SOURCE_PATH_MAX_LENGTH, blank=True, default="")
    position = models.PositiveIntegerField(default=0, help_text="Order in the exported YAML.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_limit(self) -> bool:
        return self.limit_calls is not None and bool(self.limit_renewal_period)

    @property
    def has_cost(self) -> bool:
        return self.cost_input_per_million is not None and self.cost_output_per_million is not None


class TrafficRoute(models.Model):
    """MLflow 3.x's top-level `routes`: one name, traffic split between endpoints of one type."""

    name = models.CharField(max_length=NAME_MAX_LENGTH, unique=True, validators=[name_validator])
    task_type = models.CharField(max_length=32, choices=ENDPOINT_TYPE_CHOICES)
    routing_strategy = models.CharField(max_length=32, default="TRAFFIC_SPLIT",
                                        choices=[("TRAFFIC_SPLIT", "TRAFFIC_SPLIT: split by percentage"),
                                                 ("FALLBACK", "FALLBACK: in order, on failure")])
    fallback_on = models.JSONField(default=list, blank=True,
                                   help_text="FALLBACK: what moves on to the next destination (connect, timeout, 5xx, "
                                             "429, ...). Empty: connect, timeout, 429 and 5xx.")
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.ADMIN)
    source_path = models.CharField(max_length=SOURCE_PATH_MAX_LENGTH, blank=True, default="")
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class TrafficDestination(models.Model):
    route = models.ForeignKey(TrafficRoute, related_name="destinations", on_delete=models.CASCADE)
    endpoint = models.ForeignKey(Endpoint, related_name="route_destinations", on_delete=models.PROTECT)
    traffic_percentage = models.PositiveSmallIntegerField(null=True, blank=True,
                                                          help_text="TRAFFIC_SPLIT only; FALLBACK goes in order.")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.endpoint.name} ({self.traffic_percentage}%)"


class ConfigState(models.Model):
    """One row: the config version, bumped by every change so that every process reloads."""

    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
