"""The console's pages under /admin/console/, each behind the admin's login (staff only)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from console import views

app_name = "console"

urlpatterns = [
    path("", admin.site.admin_view(views.dashboard), name="dashboard"),
    path("import/", admin.site.admin_view(views.import_yaml), name="import"),
    path("export/", admin.site.admin_view(views.export_yaml), name="export"),
    path("ledger/<str:request_id>/", admin.site.admin_view(views.ledger_record), name="ledger-record"),
]
