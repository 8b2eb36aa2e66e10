"""The usage report through the management API: GET /api/manage/usage/ (operators only)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consumers.authentication import ManagementAPIMixin
from usage.reports import GROUPS, ReportError, parse_time, report

REPORT_ROW = inline_serializer("UsageReportRow", {
    "consumer": serializers.CharField(required=False, help_text="The group's key: consumer, endpoint, model or day"),
    "requests": serializers.IntegerField(), "errors": serializers.IntegerField(),
    "prompt_tokens": serializers.IntegerField(), "completion_tokens": serializers.IntegerField(),
    "total_tokens": serializers.IntegerField(), "cost_usd": serializers.FloatField(),
}, many=True)


class UsageReportView(ManagementAPIMixin, APIView):  # type: ignore[misc]
    @extend_schema(
        operation_id="usage_report", summary="Usage report: requests, errors, tokens and cost per group",
        parameters=[
            OpenApiParameter("since", str, description="24h, 7d, 2w, 90m, a date or an ISO time (default 24h)"),
            OpenApiParameter("until", str, description="The same forms (default: now)"),
            OpenApiParameter("by", str, enum=list(GROUPS), description="consumer (default), endpoint, model or day"),
            OpenApiParameter("consumer", str, description="Only this consumer"),
            OpenApiParameter("endpoint", str, description="Only this endpoint"),
        ],
        responses=REPORT_ROW,
    )
    def get(self, request: Request) -> Response:
        params: Any = request.query_params
        now = timezone.now()
        try:
            since = parse_time(params.get("since") or "24h", now)
            until = parse_time(params["until"], now) if params.get("until") else now
            rows = report(since, until, params.get("by") or "consumer", consumer=params.get("consumer") or None,
                          endpoint=params.get("endpoint") or None)
        except ReportError as exc:
            raise serializers.ValidationError({"detail": str(exc)}) from None
        return Response(rows)
