"""ASGI entry point (what `manage.py start_server` runs under uvicorn).

Invocation POSTs and /health take the async fast path (serving.app); the collected static
files (the admin's, Swagger UI's and ReDoc's assets) are served by ServeStatic from STATIC_ROOT,
which start_server fills; everything else is Django's ASGI handler.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application
from servestatic import ServeStaticASGI

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

django_application = get_asgi_application()

from serving.app import AsyncInvocationFastPath  # noqa: E402  (needs Django set up first)

application: Any = AsyncInvocationFastPath(django_application)
if os.path.isdir(settings.STATIC_ROOT):
    application = ServeStaticASGI(application, root=settings.STATIC_ROOT, prefix=settings.STATIC_URL)
