"""Consumers (who may call what) and their gateway keys, and the operators' API tokens.

Keys are stored only as a keyed hash (consumers.keys); the prefix, a random identifier that is part
of the key, names a key in lists and logs.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from endpoints_app.models import (
    NAME_MAX_LENGTH,
    RENEWAL_PERIOD_MAX_LENGTH,
    SOURCE_PATH_MAX_LENGTH,
    Budgeted,
    Source,
    name_validator,
)


class Consumer(Budgeted):
    """A team, an application or a person that calls the gateway with its keys."""

    name = models.CharField(max_length=NAME_MAX_LENGTH, unique=True, validators=[name_validator])
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True, help_text="A disabled consumer's keys are refused (403).")
    allow = models.JSONField(default=list, blank=True,
                             help_text='The endpoints and traffic routes it may call, or ["*"] for all of them.')
    limit_calls = models.PositiveIntegerField(null=True, blank=True)
    limit_renewal_period = models.CharField(max_length=RENEWAL_PERIOD_MAX_LENGTH, blank=True, default="")
    token_limit_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    token_limit_renewal_period = models.CharField(max_length=RENEWAL_PERIOD_MAX_LENGTH, blank=True, default="")
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
    def has_token_limit(self) -> bool:
        return self.token_limit_tokens is not None and bool(self.token_limit_renewal_period)


class GatewayKey(models.Model):
    """A consumer's key: `Authorization: Bearer <key>` on every invocation and listing route."""

    consumer = models.ForeignKey(Consumer, related_name="keys", on_delete=models.CASCADE)
    name = models.CharField("label", max_length=255, blank=True, default="")
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)  # HMAC-SHA256 of the key with the server's pepper
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.CharField(max_length=255, blank=True, default="", editable=False)


    class Meta:
        ordering = ["consumer__name", "-created_at"]
        verbose_name = "gateway key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.consumer.name}{', ' + self.name if self.name else ''})"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class OperatorToken(models.Model):
    """A staff user's token for the management API (`Authorization: Bearer <token>`), hashed like keys."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="operator_tokens", on_delete=models.CASCADE)
    name = models.CharField("label", max_length=255, blank=True, default="")
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
