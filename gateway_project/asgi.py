"""The ASGI application: what start_server's workers, `manage.py runserver` and the tests all run.

Invocations and /health are served by serving.app; the collected static files (the admin's, Swagger
UI's and ReDoc's assets) by ServeStatic from STATIC_ROOT, which start_server fills (under runserver
with DEBUG and nothing collected, by Django's static-files finders); everything else is Django's ASGI
handler.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from servestatic import ServeStaticASGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

django_application = get_asgi_application()

from serving.app import GatewayApplication  # noqa: E402  (needs Django set up first)

application: Any = GatewayApplication(django_application)
if os.path.isdir(settings.STATIC_ROOT):
    application = ServeStaticASGI(application, root=settings.STATIC_ROOT, prefix=settings.STATIC_URL)
elif settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    application = ASGIStaticFilesHandler(application)
