"""The usage ledger: one record per invocation, and rollups per minute and per day for reading at scale.

Records name consumers, endpoints and models as text (no foreign keys): history outlives the rows it
mentions, and a batch insert checks nothing it need not. Cost is an integer number of pico-dollars
(1e-12 USD), so sums are exact on every database: a million tokens of a $0.02 embedding model are
20,000,000,000,000 of them, one token 20,000.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models

PICO = Decimal("0.000000000001")
# Latency histogram bucket upper bounds, in milliseconds (the last bucket is everything slower).
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
# Error kinds, in the order the rollup columns have them.
ERROR_KINDS = ("refused", "limited", "invalid", "upstream", "timeout", "internal")


def usd(picousd: int | None) -> Decimal:
    return (Decimal(picousd or 0) * PICO).normalize()


class UsageRecord(models.Model):
    time = models.DateTimeField(db_index=True)
    request_id = models.CharField(max_length=128)
    family = models.CharField(max_length=16, help_text="endpoints, gateway or v1: the route the client called")
    consumer = models.CharField(max_length=255, blank=True, default="")
    key_prefix = models.CharField(max_length=32, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="", help_text="The endpoint or route called")
    route = models.CharField(max_length=255, blank=True, default="", help_text="The traffic route, if one was called")
    endpoint = models.CharField(max_length=255, blank=True, default="", help_text="The endpoint that served it")
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    error_kind = models.CharField(max_length=16, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField()
    ttfb_ms = models.FloatField(null=True, blank=True)
    cost_picousd = models.BigIntegerField(default=0)
    retries = models.PositiveSmallIntegerField(default=0, help_text="Upstream retries of the destination")
    fallbacks = models.PositiveSmallIntegerField(default=0, help_text="Destinations that failed before this one")

    class Meta:
        indexes = [models.Index(fields=["endpoint", "time"], name="usage_endpoint_time")]

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_picousd)


class Rollup(models.Model):
    """Sums over a bucket of time, per consumer, endpoint and model (additive: batches add to them)."""

    bucket = models.DateTimeField()
    consumer = models.CharField(max_length=255, blank=True, default="")
    endpoint = models.CharField(max_length=255, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_picousd = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    # Errors by kind (ERROR_KINDS) and latencies by bucket (LATENCY_BOUNDS_MS, then the rest).
    err_refused = models.BigIntegerField(default=0)
    err_limited = models.BigIntegerField(default=0)
    err_invalid = models.BigIntegerField(default=0)
    err_upstream = models.BigIntegerField(default=0)
    err_timeout = models.BigIntegerField(default=0)
    err_internal = models.BigIntegerField(default=0)
    lat_0 = models.BigIntegerField(default=0)
    lat_1 = models.BigIntegerField(default=0)
    lat_2 = models.BigIntegerField(default=0)
    lat_3 = models.BigIntegerField(default=0)
    lat_4 = models.BigIntegerField(default=0)
    lat_5 = models.BigIntegerField(default=0)
    lat_6 = models.BigIntegerField(default=0)
    lat_7 = models.BigIntegerField(default=0)
    lat_8 = models.BigIntegerField(default=0)
    lat_9 = models.BigIntegerField(default=0)
    lat_10 = models.BigIntegerField(default=0)
    lat_11 = models.BigIntegerField(default=0)
    lat_12 = models.BigIntegerField(default=0)
    lat_13 = models.BigIntegerField(default=0)

    class Meta:
        abstract = True

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_picousd)


class UsageMinute(Rollup):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "consumer", "endpoint", "model"],
                                               name="usage_minute_key")]


class UsageHour(Rollup):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "consumer", "endpoint", "model"],
                                               name="usage_hour_key")]


class UsageDay(Rollup):
    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "consumer", "endpoint", "model"],
                                               name="usage_day_key")]


class UsageHourTotal(Rollup):
    """An hour's sums over every consumer, endpoint and model (those fields left empty): one row per hour
    whatever the traffic, what the dashboard's charts read when nothing narrows them."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "consumer", "endpoint", "model"],
                                               name="usage_hour_total_key")]


class UsageDayTotal(Rollup):
    """A day's sums over every consumer, endpoint and model, as UsageHourTotal."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "consumer", "endpoint", "model"],
                                               name="usage_day_total_key")]
