"""Django's routes: the MLflow and OpenAI listings, the docs and the admin.

The invocation routes and /health are matched before Django sees a request (serving.app, with the
pattern of serving.routes); they are not here, so there is one router for them.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from consumers.api import ConsumerViewSet, KeyViewSet
from endpoints_app import views
from endpoints_app.api import EndpointViewSet, RouteViewSet
from endpoints_app.errors import get_only
from endpoints_app.models import NAME_CHARS
from usage.api import UsageReportView

NAME = rf"(?P<name>{NAME_CHARS})"

# The management API (operators: a staff session or an operator token).
manage = DefaultRouter(trailing_slash=True)
manage.include_root_view = False
manage.register("consumers", ConsumerViewSet, basename="manage-consumer")
manage.register("keys", KeyViewSet, basename="manage-key")
manage.register("endpoints", EndpointViewSet, basename="manage-endpoint")
manage.register("routes", RouteViewSet, basename="manage-route")

handler400 = "endpoints_app.errors.handler400"
handler403 = "endpoints_app.errors.handler403"
handler404 = "endpoints_app.errors.handler404"
handler500 = "endpoints_app.errors.handler500"

urlpatterns = [
    path("", views.root_redirect),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", get_only(SpectacularSwaggerView.as_view(url_name="openapi")), name="docs"),
    path("redoc", get_only(SpectacularRedocView.as_view(url_name="openapi")), name="redoc"),
    # MLflow deployments API
    path("api/2.0/endpoints", views.endpoint_list_redirect),
    path("api/2.0/endpoints/", views.EndpointListView.as_view(), name="endpoint-list"),
    re_path(r"^api/2\.0/endpoints/limits/?$", views.LimitsView.as_view()),
    re_path(rf"^api/2\.0/endpoints/limits/{NAME}$", views.LimitsView.as_view()),
    re_path(rf"^api/2\.0/endpoints/{NAME}$", views.EndpointDetailView.as_view(), name="endpoint-detail"),
    re_path(rf"^api/3\.0/gateway/endpoint/{NAME}$", views.EndpointDetailAliasView.as_view()),
    re_path(rf"^api/3\.0/gateway/route/{NAME}$", views.TrafficRouteDetailView.as_view()),
    path("api/2.0/gateway/routes/", views.LegacyRouteListView.as_view()),
    re_path(r"^api/2\.0/gateway/limits/?$", views.LimitsView.as_view()),
    re_path(rf"^api/2\.0/gateway/limits/{NAME}$", views.LimitsView.as_view()),
    re_path(rf"^api/2\.0/gateway/routes/{NAME}$", views.LegacyRouteDetailView.as_view()),
    path("v1/models", views.ModelListView.as_view()),
    path("api/manage/usage/", UsageReportView.as_view(), name="manage-usage"),
    path("api/manage/", include(manage.urls)),
    path("admin/console/", include("console.urls")),  # the operators' console, behind the admin's login
    path("admin/", admin.site.urls),
]
