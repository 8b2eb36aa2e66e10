"""The numbers as the console shows them, and the charts of a window of usage."""

from __future__ import annotations

from console import charts
from console.dashboard import Usage
from usage.models import ERROR_KINDS, usd


def format_usd(picousd: float) -> str:
    """Exact dollars from pico-dollars, in positional notation: 20000 → "0.00000002"."""
    return f"{usd(int(picousd)):f}"


def usd_tick(picousd: float) -> str:
    dollars = picousd / 1e12
    if dollars == 0:
        return "$0"
    return f"${dollars:.6f}".rstrip("0").rstrip(".") if dollars < 1 else f"${dollars:,.2f}"


def ms(value: float) -> str:
    return f"{value:,.1f} ms"


def _labels(usage: Usage) -> list[str]:
    pattern = {"1h": "%H:%M", "24h": "%H:00", "7d": "%m-%d %H:00", "30d": "%Y-%m-%d"}[usage.window.key]
    return [bucket.start.strftime(pattern) for bucket in usage.buckets]


def usage_charts(usage: Usage, *, prefix: str = "chart") -> list[charts.Chart]:
    labels = _labels(usage)
    step = {60: "minute", 3600: "hour", 86400: "day"}[usage.window.step]

    def column(name: str) -> list[float | int | None]:
        return [bucket.sums[name] for bucket in usage.buckets]

    latency = {"p50": [b.p50 for b in usage.buckets], "p95": [b.p95 for b in usage.buckets]}
    return [
        charts.Chart(f"{prefix}-requests", f"Requests per {step}", labels,
                     [charts.Series("Requests", column("requests"), "requests")], unit="requests"),
        charts.Chart(f"{prefix}-errors", f"Errors per {step}, by kind", labels,
                     [charts.Series(kind, column(f"err_{kind}"), kind) for kind in ERROR_KINDS], unit="errors"),
        charts.Chart(f"{prefix}-tokens", f"Tokens per {step}", labels,
                     [charts.Series("Tokens in", column("prompt_tokens"), "tokens-in"),
                      charts.Series("Tokens out", column("completion_tokens"), "tokens-out")],
                     kind="lines", unit="tokens"),
        charts.Chart(f"{prefix}-cost", f"Cost per {step} (USD)", labels,
                     [charts.Series("Cost", column("cost_picousd"), "cost")], integer=False,
                     value_format=format_usd, tick_format=usd_tick, unit="USD"),
        charts.Chart(f"{prefix}-latency", f"Latency per {step}: p50 and p95 (ms)", labels,
                     [charts.Series("p50", latency["p50"], "p50"), charts.Series("p95", latency["p95"], "p95")],
                     kind="lines", integer=False, additive=False, unit="ms", value_format=ms,
                     empty_text="No requests in this window"),
    ]
