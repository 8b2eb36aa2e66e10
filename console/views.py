"""The console's pages, inside the admin (its login, its look; staff only: console.urls wraps every view
in admin.site.admin_view). Thin: they read their parameters, call console's modules and render."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from console import charts, importing
from console.dashboard import WINDOWS, groups, top, usage_over_time, window_named
from console.figures import format_usd, usage_charts
from console.forms import ApplyForm, DashboardFilters, ImportForm
from consumers.models import Consumer
from endpoints_app.models import Endpoint, TrafficDestination
from endpoints_app.services import ImportReport, export_config
from endpoints_app.validation import ConfigError
from usage.models import UsageRecord

IMPORT_PERMISSIONS = ("endpoints_app.add_endpoint", "endpoints_app.change_endpoint", "endpoints_app.add_trafficroute",
                      "endpoints_app.change_trafficroute", "consumers.add_consumer", "consumers.change_consumer")
PRUNE_PERMISSIONS = ("endpoints_app.delete_endpoint", "endpoints_app.delete_trafficroute", "consumers.delete_consumer")
EXPORT_PERMISSIONS = ("endpoints_app.view_endpoint", "endpoints_app.view_trafficroute", "consumers.view_consumer")
# The ledger is searched this far back for a request id (the playground asks right after its call).
LEDGER_LOOKBACK = timedelta(minutes=15)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _require(request: HttpRequest, permissions: Iterable[str]) -> None:
    if not request.user.has_perms(list(permissions)):
        raise PermissionDenied


def _user_id(request: HttpRequest) -> int:
    return int(request.user.pk or 0)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


# -- the dashboard -----------------------------------------------------------------------------------------
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DashboardFilters(request.GET or None)
    chosen = form.filters()
    window = window_named(chosen["window"])
    usage = usage_over_time(window, consumer=chosen["consumer"], endpoint=chosen["endpoint"])
    tops = {}
    for by in ("consumer", "endpoint"):
        ranked = groups(window, usage.since, usage.until, by=by, consumer=chosen["consumer"],
                        endpoint=chosen["endpoint"])
        tops[f"{by}_by_cost"], tops[f"{by}_by_errors"] = top(ranked, "cost_picousd"), top(ranked, "errors")
    context = _context(
        request, "Usage dashboard", form=form, usage=usage, window=window, windows=WINDOWS,
        charts=[charts.render(chart) for chart in usage_charts(usage)], tops=tops,
        totals={**usage.totals, "cost_usd": format_usd(usage.totals["cost_picousd"]),
                "error_percent": f"{usage.error_rate:.1%}" if usage.error_rate is not None else "",
                "p50": usage.p50, "p95": usage.p95},
        consumer_names=Consumer.objects.values_list("name", flat=True),
        endpoint_names=Endpoint.objects.values_list("name", flat=True),
        filter_query={key: value for key, value in chosen.items() if value},
    )
    return TemplateResponse(request, "console/dashboard.html", context)


# -- the ledger, for the playground ------------------------------------------------------------------------------
@require_GET
def ledger_record(request: HttpRequest, request_id: str) -> JsonResponse:
    """A recent call's record, by the X-Request-Id its answer carried: what it cost and which endpoint served
    it. Reads only what the ledger has written (in batches, every GATEWAY_USAGE_FLUSH_SECONDS): callers poll.
    `?name=` (the endpoint or route called) narrows the search to the records of its endpoints, by the ledger's
    (endpoint, time) index; without it, the last minutes of every record are searched by time."""
    if not _REQUEST_ID.match(request_id):
        raise Http404
    records = UsageRecord.objects.filter(time__gte=timezone.now() - LEDGER_LOOKBACK, request_id=request_id)
    name = request.GET.get("name", "")
    if name:
        served = [name, *TrafficDestination.objects.filter(route__name=name).values_list("endpoint__name", flat=True)]
        records = records.filter(Q(endpoint__in=served) | Q(endpoint="", name=name))
    record = records.order_by("-time").first()
    if record is None:
        return JsonResponse({"found": False, "request_id": request_id}, status=404)
    return JsonResponse({
        "found": True, "request_id": record.request_id, "time": record.time.isoformat(), "name": record.name,
        "route": record.route, "endpoint": record.endpoint, "provider": record.provider, "model": record.model,
        "consumer": record.consumer, "stream": record.stream, "status": record.status,
        "error_code": record.error_code, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens, "total_tokens": record.total_tokens,
        "latency_ms": round(record.latency_ms, 1),
        "ttfb_ms": round(record.ttfb_ms, 1) if record.ttfb_ms is not None else None,
        "cost_usd": format_usd(record.cost_picousd),
    })


# -- YAML ---------------------------------------------------------------------------------------------------------
@require_GET
def export_yaml(request: HttpRequest) -> HttpResponse:
    """export_config()'s document as a file: references as written, literal keys as a placeholder."""
    _require(request, EXPORT_PERMISSIONS)
    response = HttpResponse(export_config(), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="gateway-config-{timezone.now():%Y%m%d-%H%M%S}.yaml"'
    return response


@require_http_methods(["GET", "POST"])
def import_yaml(request: HttpRequest) -> HttpResponse:
    _require(request, IMPORT_PERMISSIONS)
    if request.method == "POST" and "apply" in request.POST:
        return _apply(request)
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        prune = form.cleaned_data["prune"]
        if prune:
            _require(request, PRUNE_PERMISSIONS)
        preview = importing.preview(form.cleaned_data["file"], form.source_path(), prune=prune,
                                    user_id=_user_id(request))
        return _render_preview(request, preview)
    return TemplateResponse(request, "console/import.html", _context(request, "Import YAML", form=form))


def _render_preview(request: HttpRequest, preview: importing.Preview) -> HttpResponse:
    context = _context(request, "Import YAML: preview" if preview.valid else "Import YAML: errors", preview=preview,
                       apply_form=ApplyForm.carrying(preview) if preview.valid else None,
                       form=ImportForm())
    return TemplateResponse(request, "console/import.html", context)


def _apply(request: HttpRequest) -> HttpResponse:
    form = ApplyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The preview could not be read back: upload the file again.")
        return redirect("console:import")
    source, prune = form.cleaned_data["source"], form.cleaned_data["prune"]
    if prune:
        _require(request, PRUNE_PERMISSIONS)
    try:
        text = importing.unseal(form.cleaned_data["text"])
        report = importing.apply(text, source, prune=prune, token=form.cleaned_data["token"], user_id=_user_id(request))
    except importing.BadToken as exc:
        messages.error(request, str(exc))
        return redirect("console:import")
    except importing.StalePreview as exc:
        messages.warning(request, str(exc))
        return _render_preview(request, importing.preview(text, source, prune=prune, user_id=_user_id(request)))
    except ConfigError as exc:
        messages.error(request, "The file is no longer valid against the configuration as it stands; nothing was "
                                "changed.")
        preview = importing.Preview(text, source, prune, issues=importing.place_issues(text, exc))
        return _render_preview(request, preview)
    messages.success(request, _applied(report, source))
    return redirect("console:import")


def _applied(report: ImportReport, source: str) -> str:
    parts = [f"{len(names)} {label}" + (f" ({', '.join(names)})" if names else "")
             for label, names in (("created", report.created), ("updated", report.updated),
                                  ("deleted", report.deleted))]
    return f"Applied {source}: {', '.join(parts)}; {len(report.unchanged)} unchanged."

